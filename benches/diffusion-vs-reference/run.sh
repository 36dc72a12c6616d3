#!/usr/bin/env bash
# Side-by-side timing of one training iteration of the diffusion sampler: the reference
# (GFNOrg/gfn-diffusion, energy_sampling/, PyTorch) against fab-diffusion.
#
# usage: benches/diffusion-vs-reference/run.sh REFERENCE_CHECKOUT [PYTHON]
#   REFERENCE_CHECKOUT  checkout of gfn-diffusion (the directory containing energy_sampling/)
#   PYTHON              interpreter with torch, numpy, matplotlib, einops, pillow (default: python3)
# environment (optional):
#   ROUNDS=3 ITERS=20 WARMUP=3 CORE=0   interleaved rounds, timed and warm-up iterations, CPU core
#   LOG_DIR=DIR                         where every run's full output is kept (default: a new temp dir)
#
# The row is the one of docs/PERFORMANCE.md: Many Well 32-D, batch 300, T = 100, the PIS network
# of width 64, forward trajectory balance with the Langevin parametrisation (and clipping),
# float32. Every run is pinned to one core (taskset -c $CORE) with one thread; the two sides run
# alternately, ROUNDS times each, the side that goes first alternating; the table shows the
# medians of the per-run values (each run's own value is its median over ITERS iterations).
# Nothing is fetched or installed.
set -euo pipefail

usage() { echo "usage: $0 REFERENCE_CHECKOUT [PYTHON]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../common.sh"
ROOT=$BENCH_ROOT
REF=$(bench_checkout "$1" gfn-diffusion) || exit 2
PY=${2:-python3}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-3}
CORE=${CORE:-0}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t diffusion-vs-reference.XXXXXX)}
mkdir -p "$LOG_DIR"

[[ -f "$REF/energy_sampling/models/gfn.py" ]] \
  || { echo "error: $REF/energy_sampling/models/gfn.py not found: pass the gfn-diffusion checkout" >&2; exit 2; }
bench_require_taskset || exit 2
"$PY" -c 'import torch, numpy, matplotlib, einops, PIL' 2>/dev/null \
  || { echo "error: '$PY' cannot import torch, numpy, matplotlib, einops and PIL; pass an interpreter that has them" >&2; exit 2; }

FAB_BIN=$(bench_build_example fab-diffusion diffusion_iteration_timing "$LOG_DIR/cargo-build.log" "$PY") || exit 1

run_ref() { # round log
  taskset -c "$CORE" "$PY" "$HERE/reference_iteration.py" "$REF" --iterations "$ITERS" --warmup "$WARMUP" \
    --seed "$(($1 - 1))" >"$2" 2>&1
}
run_fab() { # round log
  (cd "$ROOT" && taskset -c "$CORE" "$FAB_BIN" --iterations "$ITERS" --warmup "$WARMUP" \
    --set "seed=$(($1 - 1))") >"$2" 2>&1
}

rm -f "$LOG_DIR"/row.{ref,fab}
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(ref fab); else order=(fab ref); fi
  for side in "${order[@]}"; do
    log="$LOG_DIR/$side.round$r.log"
    if "run_$side" "$r" "$log" && ms=$(ms_of "$log") && [[ -n "$ms" ]]; then
      echo "$ms" >>"$LOG_DIR/row.$side"
      echo "  round $r $side: $ms ms" >&2
    else
      echo "  round $r $side: FAILED, see $log" >&2
    fi
  done
done

CPU=$(awk -F': ' '/^model name/ { n = $2 } /^cpu family/ { f = $2 } /^model\t/ { m = $2 } END { printf "%s (family %s, model %s)", n, f, m }' /proc/cpuinfo)
AVX512=$(grep -q -m1 -w avx512f /proc/cpuinfo && echo yes || echo no)
REF_REV=$(git -C "$REF" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
TORCH=$(awk '$1 == "torch" { print $2; exit }' "$LOG_DIR"/ref.round1.log 2>/dev/null || true)
echo
echo "CPU: ${CPU:-unknown} (AVX-512: $AVX512; one core, taskset -c $CORE, one thread)"
echo "reference: $REF ($REF_REV), torch ${TORCH:-?}; fab-rs: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "Many Well 32-D, B 300, T 100, PIS net hidden 64, forward TB + Langevin parametrisation, f32;"
echo "$WARMUP warm-up + $ITERS timed iterations per run; median of $ROUNDS interleaved runs per side; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| row | reference ms | fab-rs ms | speed-up |"
echo "|---|---|---|---|"
ref=$( [[ -f "$LOG_DIR/row.ref" ]] && median <"$LOG_DIR/row.ref" || true)
fab=$( [[ -f "$LOG_DIR/row.fab" ]] && median <"$LOG_DIR/row.fab" || true)
if [[ -n "$ref" && -n "$fab" ]]; then
  s=$(awk -v a="$ref" -v b="$fab" 'BEGIN { printf "%.2f", a / b }')
  printf '| Many Well TB + LP iteration | %.1f | %.1f | %sx |\n' "$ref" "$fab" "$s"
  echo
  echo "full output of every run: $LOG_DIR"
  echo "speed-up ${s}x"
else
  printf '| Many Well TB + LP iteration | %s | %s | n/a |\n' "${ref:-n/a}" "${fab:-n/a}"
  echo
  echo "full output of every run: $LOG_DIR"
  echo "speed-up n/a (a side failed)"
  exit 1
fi
