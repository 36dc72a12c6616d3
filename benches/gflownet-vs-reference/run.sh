#!/usr/bin/env bash
# Side-by-side timing of one training iteration: reference grid GFlowNet (PyTorch) vs fab-gflownet.
#
# usage: benches/gflownet-vs-reference/run.sh REFERENCE_CHECKOUT [PYTHON]
#   REFERENCE_CHECKOUT  checkout of the reference repository (the directory containing grid/)
#   PYTHON              interpreter with torch, numpy, tqdm, matplotlib, pillow (default: python3)
# environment (optional):
#   ROUNDS=3 ITERS=200 WARMUP=50 CORE=0   interleaved rounds, timed and warm-up iterations, CPU core
#   LOG_DIR=DIR                           where every run's full output is kept (default: a new temp dir)
#
# Every run is pinned to one core (taskset -c $CORE) with one thread. For each row the reference and
# fab-rs are run alternately, ROUNDS times each; the table shows the medians of the per-run values
# (each run's own value is its median ms over ITERS iterations). Round r runs the reference with
# --seed r-1. Nothing is fetched or installed.
set -euo pipefail

usage() { echo "usage: $0 REFERENCE_CHECKOUT [PYTHON]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../common.sh"
ROOT=$BENCH_ROOT
REF=$(bench_checkout "$1" reference) || exit 2
PY=${2:-python3}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-200}
WARMUP=${WARMUP:-50}
CORE=${CORE:-0}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t gflownet-vs-reference.XXXXXX)}
mkdir -p "$LOG_DIR"

[[ -f "$REF/grid/trainer.py" ]] || { echo "error: $REF/grid/trainer.py not found: pass the reference checkout (the directory containing grid/)" >&2; exit 2; }
bench_require_taskset || exit 2
"$PY" -c 'import torch, numpy, tqdm, matplotlib, PIL' 2>/dev/null \
  || { echo "error: '$PY' cannot import torch, numpy, tqdm, matplotlib and PIL; pass an interpreter that has them" >&2; exit 2; }

# fab-rs side: build once, then call the binary directly.
FAB_MISSING=""
FAB_BIN=$(bench_build_example fab-gflownet iteration_timing "$LOG_DIR/cargo-build.log" "$PY") \
  || FAB_MISSING="the fab-gflownet example did not build; see $LOG_DIR/cargo-build.log"
if [[ -n "$FAB_MISSING" ]]; then
  echo "error: fab-rs side unavailable: $FAB_MISSING" >&2
  echo "       timing the reference only; the fab-rs column will read n/a" >&2
fi


run_ref() { # agent ndim horizon round log
  taskset -c "$CORE" "$PY" "$HERE/reference_iteration.py" "$REF" --agent "$1" --ndim "$2" --horizon "$3" \
    --iterations "$ITERS" --warmup "$WARMUP" --seed "$(($4 - 1))" >"$5" 2>&1
}
run_fab() { # agent ndim horizon round log
  (cd "$ROOT" && taskset -c "$CORE" "$FAB_BIN" --agent "$1" --ndim "$2" --horizon "$3" \
    --iterations "$ITERS" --warmup "$WARMUP") >"$5" 2>&1
}
one() { # side agent ndim horizon round -> appends the value to $LOG_DIR/<row>.<side>
  local side=$1 row="$2-d$3-H$4" log ms
  log="$LOG_DIR/$row.$side.round$5.log"
  if "run_$side" "$2" "$3" "$4" "$5" "$log"; then
    ms=$(ms_of "$log")
    if [[ -n "$ms" ]]; then
      echo "$ms" >>"$LOG_DIR/$row.$side"
      echo "  $row round $5 $side: $ms ms" >&2
      return
    fi
  fi
  echo "  $row round $5 $side: FAILED, see $log" >&2
}

ROWS=("tb 2 64" "teacher 2 64" "tb 4 16" "teacher 4 16")
for spec in "${ROWS[@]}"; do
  read -r agent ndim horizon <<<"$spec"
  rm -f "$LOG_DIR/$agent-d$ndim-H$horizon".{ref,fab}
  for ((r = 1; r <= ROUNDS; r++)); do
    # interleaved, and the side that goes first alternates from round to round
    if ((r % 2)); then order=(ref fab); else order=(fab ref); fi
    for side in "${order[@]}"; do
      [[ $side == fab && -z "$FAB_BIN" ]] && continue
      one "$side" "$agent" "$ndim" "$horizon" "$r"
    done
  done
done

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "CPU: ${CPU:-unknown} (one core, taskset -c $CORE, one thread)"
echo "batch 16, MLP 256x2; $WARMUP warm-up + $ITERS timed iterations per run; median of $ROUNDS interleaved runs per side"
echo
echo "| row | reference ms | fab-rs ms | speed-up |"
echo "|---|---|---|---|"
worst="" worst_row=""
for spec in "${ROWS[@]}"; do
  read -r agent ndim horizon <<<"$spec"
  row="$agent-d$ndim-H$horizon"
  ref=$( [[ -f "$LOG_DIR/$row.ref" ]] && median <"$LOG_DIR/$row.ref" || true)
  fab=$( [[ -f "$LOG_DIR/$row.fab" ]] && median <"$LOG_DIR/$row.fab" || true)
  label="$agent d$ndim H$horizon"
  if [[ -n "$ref" && -n "$fab" ]]; then
    s=$(awk -v a="$ref" -v b="$fab" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %.3f | %.3f | %sx |\n' "$label" "$ref" "$fab" "$s"
    if [[ -z "$worst" ]] || awk -v a="$s" -v b="$worst" 'BEGIN { exit !(a < b) }'; then worst=$s worst_row=$label; fi
  else
    printf '| %s | %s | %s | n/a |\n' "$label" "${ref:-n/a}" "${fab:-n/a}"
  fi
done
echo
echo "full output of every run: $LOG_DIR"
if [[ -n "$worst" ]]; then
  echo "worst speed-up ${worst}x ($worst_row)"
else
  echo "worst speed-up n/a (no row has both sides${FAB_MISSING:+; fab-rs: $FAB_MISSING})"
  exit 1
fi
