#!/usr/bin/env bash
# The first ITERS iterations of an alanine-dipeptide FAB config for several seeds, to see whether
# each seed keeps or loses the rare phi > 0 (alpha_L) basin, which is decided in this phase
# (docs/RESULTS.md, "The warm-up decides whether the rare basin is kept").
#
# usage: scripts/aldp-early-basin.sh CONFIG OUT SEED [SEED ...] [-- --set key=value ...]
#   e.g. scripts/aldp-early-basin.sh experiments/aldp/cpu.toml /tmp/early 1 2 3
#
# Environment: FAB (the fab binary; default target/release/fab), ITERS (default 300), JOBS
# (runs at once, one thread each; default 2). Each run keeps the config's learning-rate schedule
# (it is set in gradient steps, not in iterations), logs every iteration (ITERS < 1000), and ends
# with a small final evaluation (2e5 flow samples, 256 AIS samples) whose basin keys the table
# reads.
# Prints the table of scripts/aldp-early-basin.py at the end.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '6,7p' "$0" | sed 's/^# //' >&2
  exit 2
fi
config=$1 out=$2
shift 2
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
extra=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
fab=${FAB:-$root/target/release/fab}
iters=${ITERS:-300}
jobs=${JOBS:-2}
[ -x "$fab" ] || { echo "aldp-early-basin: no fab binary at $fab (cargo build --release, or set FAB)" >&2; exit 2; }
[ -f "$config" ] || { echo "aldp-early-basin: no config file $config" >&2; exit 2; }
mkdir -p "$out"

run_one() {
  local seed=$1 dir=$out/seed$1
  if [ -e "$dir" ]; then echo "aldp-early-basin: $dir exists, kept as it is" >&2; return 0; fi
  RAYON_NUM_THREADS=1 "$fab" train "$config" --set seed="$seed" --set train.n_iterations="$iters" \
    --set eval.n_evals=1 --set eval.final_batch_size=200000 --set eval.final_ais_batch_size=256 \
    --set eval.plots=false "${extra[@]}" --out "$dir" > "$out/seed$seed.log" 2>&1 \
    || echo "aldp-early-basin: seed $seed failed, see $out/seed$seed.log" >&2
}

running=0
for s in "${seeds[@]}"; do
  run_one "$s" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
python3 "$root/scripts/aldp-early-basin.py" "$out"/seed*/
