#!/usr/bin/env bash
# Builds and tests the whole workspace with `--features cuda` on a machine that has neither a GPU
# nor a CUDA installation: nvcc, the CUDA headers and the runtime libraries come from PyPI wheels
# (see scripts/cuda-env.sh), the NVIDIA driver library is replaced by a no-device link stub, and
# the device tests skip themselves with a printed message. See docs/GPU.md.
#
# Usage: scripts/check-cuda-build.sh            (from anywhere; about 1.2 GB download once)
# Settings (environment):
#   FAB_CUDA_CAPS        compute capabilities, space separated (default "80 90"). The first one
#                        is used for the full build and test; each further one rebuilds candle's
#                        kernels and fab-core for that capability (one capability per build:
#                        candle-kernels reads a single CUDA_COMPUTE_CAP).
#   FAB_CUDA_TARGET_DIR  cargo target directory for the CUDA builds
#                        (default: ${CARGO_TARGET_DIR:-target}/cuda, apart from the CPU build)
#   FAB_CUDA_SKIP_TESTS  1: build only
#   plus the settings of scripts/cuda-env.sh.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/cuda-env.sh
source "$repo/scripts/cuda-env.sh"

log() { printf '[check-cuda-build] %s\n' "$*" >&2; }
die() { printf '[check-cuda-build] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { echo $(($(date +%s) - $1)); }

t_start=$(date +%s)
read -r -a caps <<<"${FAB_CUDA_CAPS:-80 90}"
[[ ${#caps[@]} -ge 1 ]] || die "FAB_CUDA_CAPS is empty"
for c in "${caps[@]}"; do [[ $c =~ ^[0-9]+[af]?$ ]] || die "bad compute capability '$c' in FAB_CUDA_CAPS"; done
target_base=${FAB_CUDA_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}/cuda}

fab_cuda_setup "$repo"
log "toolkit ready after $(elapsed "$t_start") s"

# No GPU to query: the capability is set explicitly (candle-kernels/cudaforge read
# CUDA_COMPUTE_CAP before trying nvidia-smi).
export CUDA_COMPUTE_CAP=${caps[0]}
export CARGO_TARGET_DIR=$target_base
log "cargo build --release --workspace --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target $CARGO_TARGET_DIR)"
t=$(date +%s)
cargo build --release --workspace --features cuda || die "the cuda build failed (sm_$CUDA_COMPUTE_CAP)"
log "build (sm_$CUDA_COMPUTE_CAP) took $(elapsed "$t") s"

if [[ ${FAB_CUDA_SKIP_TESTS:-0} != 1 ]]; then
    log "cargo test --release --workspace --features cuda"
    t=$(date +%s)
    cargo test --release --workspace --features cuda || die "tests failed under --features cuda"
    log "tests took $(elapsed "$t") s"
fi

for c in "${caps[@]:1}"; do
    export CUDA_COMPUTE_CAP=$c
    export CARGO_TARGET_DIR=$target_base/sm$c
    log "kernels for sm_$c: cargo build --release -p fab-core --features cuda (target $CARGO_TARGET_DIR)"
    t=$(date +%s)
    cargo build --release -p fab-core --features cuda || die "candle's kernels do not build for sm_$c"
    log "sm_$c kernels took $(elapsed "$t") s"
done

log "OK: --features cuda builds (sm_${caps[0]} full${caps[1]:+, kernels for sm_${caps[*]:1}}) in $(elapsed "$t_start") s"
