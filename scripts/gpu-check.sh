#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (see docs/GPU.md):
#   1. builds with `--features cuda` (or takes binaries packaged elsewhere, --prebuilt);
#   2. runs the device tests (GPU vs CPU: flow log q, ∇ₓ log q, FAB gradient step, one AIS pass);
#   3. times CPU vs GPU side by side: a GMM iteration, a Many Well AIS pass (B = 2048) and an
#      alanine-dipeptide iteration at paper size, and prints a table;
#   4. trains the paper GMM config on the GPU for a short fixed budget and prints its metrics.
# Everything goes under one output directory. Exit status: non-zero if any step failed, in
# particular on a GPU/CPU mismatch in the device tests (the later steps still run, so one run
# reports as much as it can).
#
# Usage:
#   scripts/gpu-check.sh [--out DIR] [--prebuilt DIR] [--train-iterations N]
#   scripts/gpu-check.sh --package DIR     (on a build machine: build and copy the binaries the
#                                           check needs into DIR and DIR.tar.zst, for a GPU
#                                           machine without cargo or network; then run there
#                                           with --prebuilt DIR or --prebuilt DIR.tar.zst)
# Settings (environment): FAB_GPU_CHECK_CASES (timing cases, default all: gmm_iteration mw_ais
# aldp_transfer aldp_iteration), FAB_CUDA_CAP (compute capability to build for; default: the GPU's, or
# 90 for --package), FAB_CUDA_USE_SYSTEM=1 (use the nvcc/CUDA on PATH instead of PyPI wheels;
# automatic when nvcc is on PATH), FAB_CUDA_TARGET_DIR, and those of scripts/cuda-env.sh.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

out="$repo/runs/gpu-check-$(date +%Y%m%d-%H%M%S)"
prebuilt=""
package=""
train_iters=2000
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --prebuilt) prebuilt=$2; shift 2 ;;
        --package) package=$2; shift 2 ;;
        --train-iterations) train_iters=$2; shift 2 ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $train_iters =~ ^[0-9]+$ && $train_iters -gt 0 ]] || { echo "gpu-check: --train-iterations must be a positive integer" >&2; exit 2; }

say() { printf '\n[gpu-check] == %s\n' "$*"; }
note() { printf '[gpu-check] %s\n' "$*"; }
die() { printf '[gpu-check] ERROR: %s\n' "$*" >&2; exit 1; }
failures=()
fail() { printf '[gpu-check] FAILED: %s\n' "$*" >&2; failures+=("$*"); }

BIN_NAMES=(fab gpu_timing flows_device ais_device)

# Builds with --features cuda; fills bin[NAME] with the paths of the binaries.
declare -A bin
build() {
    local cap=$1
    export FAB_CUDA_USE_SYSTEM=${FAB_CUDA_USE_SYSTEM:-$(command -v nvcc >/dev/null && echo 1 || echo 0)}
    if [[ $FAB_CUDA_USE_SYSTEM == 1 ]]; then
        command -v nvcc >/dev/null || die "FAB_CUDA_USE_SYSTEM=1 but no nvcc on PATH"
        local root
        root=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
        export CUDA_ROOT=${CUDA_ROOT:-$root} CUDA_PATH=${CUDA_PATH:-$root} CUDA_HOME=${CUDA_HOME:-$root}
        note "using the system CUDA toolkit at $CUDA_ROOT ($(nvcc --version | tail -n 2 | head -n 1))"
    else
        # shellcheck source=scripts/cuda-env.sh
        source "$repo/scripts/cuda-env.sh"
        fab_cuda_setup "$repo"
    fi
    export CUDA_COMPUTE_CAP=$cap
    export CARGO_TARGET_DIR=${FAB_CUDA_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}/cuda}
    note "cargo build --release --workspace --features cuda (CUDA_COMPUTE_CAP=$cap, target dir $CARGO_TARGET_DIR)"
    # Whole-workspace invocations only, as in check-cuda-build.sh: selecting single packages
    # changes the feature unification and rebuilds candle (and all its CUDA kernels) again.
    cargo build --release --workspace --features cuda || die "cargo build --workspace --features cuda failed"
    bin[fab]=$CARGO_TARGET_DIR/release/fab
    local json
    # Builds every test binary and example (gpu_timing among them) without running them.
    json=$(cargo test --release --workspace --features cuda --no-run --message-format=json) \
        || die "building the tests and examples failed"
    # compiler-artifact lines: package_id names the crate's path, executable the binary.
    bin[gpu_timing]=$(printf '%s\n' "$json" | grep -o '"executable":"[^"]*/examples/gpu_timing[^"]*"' | cut -d'"' -f4 | tail -n 1)
    bin[flows_device]=$(printf '%s\n' "$json" | grep 'crates/fab-flows#' | grep -o '"executable":"[^"]*/device-[^"]*"' | cut -d'"' -f4 | tail -n 1)
    bin[ais_device]=$(printf '%s\n' "$json" | grep 'crates/fab-ais#' | grep -o '"executable":"[^"]*/device-[^"]*"' | cut -d'"' -f4 | tail -n 1)
    local b
    for b in "${BIN_NAMES[@]}"; do [[ -x ${bin[$b]:-} ]] || die "built, but cannot find the $b binary"; done
}

if [[ -n $package ]]; then
    build "${FAB_CUDA_CAP:-90}"
    mkdir -p "$package"
    for b in "${BIN_NAMES[@]}"; do
        cp "${bin[$b]}" "$package/$b"
        strip --strip-debug "$package/$b" 2>/dev/null || true
    done
    echo "$CUDA_COMPUTE_CAP" >"$package/COMPUTE_CAP"
    note "packaged into $package: $(du -sh "$package" | cut -f1) for sm_$CUDA_COMPUTE_CAP"
    # The four binaries embed the same PTX; a compressor with a long window stores it once
    # (214 MB -> 12 MB with zstd --long=28).
    if command -v zstd >/dev/null; then
        tar -C "$(dirname "$package")" -cf - "$(basename "$package")" | zstd -q -T0 -19 --long=28 -f -o "$package.tar.zst"
        note "compressed: $package.tar.zst ($(du -sh "$package.tar.zst" | cut -f1)); --prebuilt takes it as it is"
    elif command -v xz >/dev/null; then
        tar -C "$(dirname "$package")" -cf - "$(basename "$package")" | xz -T0 --lzma2=preset=6,dict=256MiB >"$package.tar.xz"
        note "compressed: $package.tar.xz ($(du -sh "$package.tar.xz" | cut -f1)); --prebuilt takes it as it is"
    fi
    note "on the GPU machine: scripts/gpu-check.sh --prebuilt $package"
    exit 0
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/gpu-check.log") 2>&1
t_start=$(date +%s)
note "output directory: $out"

say "1/5 the GPU"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU and driver (use scripts/check-cuda-build.sh to check the build without one)"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$out/gpu.csv"
gpu_line=$(nvidia-smi --query-gpu=driver_version,compute_cap --format=csv,noheader | head -n 1)
driver=${gpu_line%%,*}
cap=$(echo "${gpu_line#*,}" | tr -d ' .')
[[ $cap =~ ^[0-9]+$ ]] || die "cannot read the compute capability from nvidia-smi ('$gpu_line')"
driver_major=${driver%%.*}
if [[ -z $prebuilt && ${FAB_CUDA_USE_SYSTEM:-} != 1 ]] && ! command -v nvcc >/dev/null && [[ $driver_major -lt 580 ]]; then
    die "driver $driver is older than 580: it cannot load the PTX of the CUDA 13 toolkit this script installs. Install a CUDA toolkit matching the driver and rerun with FAB_CUDA_USE_SYSTEM=1 and nvcc on PATH."
fi

say "2/5 binaries"
if [[ -n $prebuilt ]]; then
    case $prebuilt in
        *.tar.zst | *.tar.xz)
            [[ -f $prebuilt ]] || die "--prebuilt $prebuilt: no such file"
            mkdir -p "$out/prebuilt"
            if [[ $prebuilt == *.zst ]]; then
                command -v zstd >/dev/null || die "zstd is needed to unpack $prebuilt"
                zstd -q -d --long=28 -c "$prebuilt" | tar -C "$out/prebuilt" -xf -
            else
                xz -d -c "$prebuilt" | tar -C "$out/prebuilt" -xf -
            fi
            prebuilt=$(find "$out/prebuilt" -name COMPUTE_CAP -printf '%h\n' | head -n 1)
            [[ -n $prebuilt ]] || die "the archive holds no package made by --package"
            ;;
    esac
    for b in "${BIN_NAMES[@]}"; do
        [[ -x $prebuilt/$b ]] || die "--prebuilt $prebuilt has no executable $b (make it with --package)"
        bin[$b]=$prebuilt/$b
    done
    built_cap=$(cat "$prebuilt/COMPUTE_CAP" 2>/dev/null || echo "?")
    note "prebuilt for sm_$built_cap; this GPU is sm_$cap"
    [[ $built_cap == "$cap" || $built_cap == "?" ]] || note "capability differs: PTX built for sm_$built_cap is JIT-compiled if the GPU is newer, fails if older"
    # The CUDA libraries the binaries link (cuBLAS, cuRAND, NVRTC, cudart): from the system, or
    # from the nvidia-* Python wheels if that is how CUDA is installed.
    if ! ldconfig -p | grep -q 'libcublas\.so\.13'; then
        wheel_lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
        [[ -n $wheel_lib && -d $wheel_lib ]] && export LD_LIBRARY_PATH="$wheel_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    missing=$(ldd "${bin[fab]}" | grep 'not found' || true)
    [[ -z $missing ]] || die "the prebuilt binaries miss libraries on this machine:
$missing"
else
    t=$(date +%s)
    build "${FAB_CUDA_CAP:-$cap}"
    note "build took $(($(date +%s) - t)) s"
fi
ldd "${bin[fab]}" | grep -E 'cuda|cublas|curand|nvrtc' | tee "$out/linked-cuda-libs.txt" || true

say "3/5 device tests (GPU vs CPU; FAB_REQUIRE_CUDA=1: a missing device fails)"
for b in flows_device ais_device; do
    if FAB_REQUIRE_CUDA=1 RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-4} "${bin[$b]}" --nocapture --test-threads 1 2>&1 | tee "$out/$b.log"; then
        note "$b: passed"
    else
        fail "device tests $b (see $out/$b.log)"
    fi
done

say "4/5 timings, CPU (one thread, as docs/PERFORMANCE.md) vs GPU"
: >"$out/timings.txt"
for dev in cpu cuda; do
    threads=1
    [[ $dev == cuda ]] && threads=${RAYON_NUM_THREADS:-4}
    # shellcheck disable=SC2086 # FAB_GPU_CHECK_CASES is a list of case names
    if ! RAYON_NUM_THREADS=$threads timeout 300 "${bin[gpu_timing]}" "$dev" ${FAB_GPU_CHECK_CASES:-} 2>"$out/timing-$dev.err" | tee -a "$out/timings.txt"; then
        fail "timings on $dev (see $out/timing-$dev.err)"
    fi
done
{
    printf '\n%-16s %14s %14s %9s\n' case "CPU ms" "GPU ms" speedup
    for c in gmm_iteration mw_ais aldp_target_eval aldp_transfer aldp_ais_pass aldp_grad_step aldp_iteration; do
        c_ms=$(awk -v c="$c" '$1=="TIMING" && $2==c && $3=="cpu" {print $4}' "$out/timings.txt")
        g_ms=$(awk -v c="$c" '$1=="TIMING" && $2==c && $3=="cuda" {print $4}' "$out/timings.txt")
        sp=$(awk -v a="${c_ms:-0}" -v b="${g_ms:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "-" }')
        printf '%-16s %14s %14s %9s\n' "$c" "${c_ms:--}" "${g_ms:--}" "$sp"
    done
} | tee "$out/timing-table.txt"

say "5/5 paper GMM config on the GPU, short budget ($train_iters iterations)"
# flow_eval_budget that gives train_iters iterations with the buffer: (N − 4·1280)/(5·128).
budget=$((train_iters * 640 + 5120))
if timeout 420 "${bin[fab]}" train gmm-paper --set device='"cuda"' --set train.flow_eval_budget="$budget" \
    --set eval.n_evals=2 --set eval.final_batch_size=10000 --set eval.mae_repeats=10 \
    --out "$out/gmm-train" --no-progress 2>&1 | tee "$out/gmm-train.log"; then
    note "final metrics ($out/gmm-train/final_metrics.json):"
    cat "$out/gmm-train/final_metrics.json" 2>/dev/null || fail "no final_metrics.json"
else
    fail "GMM training on the GPU (see $out/gmm-train.log)"
fi

say "done in $(($(date +%s) - t_start)) s; everything is in $out"
if [[ ${#failures[@]} -gt 0 ]]; then
    printf '[gpu-check] %d step(s) failed:\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
note "all steps passed"
