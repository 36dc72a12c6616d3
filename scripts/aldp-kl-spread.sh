#!/usr/bin/env bash
# The Ramachandran KL of an alanine-dipeptide run or model on several independent sets of 10^6
# flow samples: how much of a difference between two runs, or from the goal, is the metric's own
# scatter (docs/RESULTS.md, "Seed 1 of `aldp-cpu` to the end").
#
# usage: scripts/aldp-kl-spread.sh DIR [SEED ...]     (default seeds 7 8 9)
#
# Draws `fab sample DIR -n 1000000 --cartesian --seed S` for each seed into a temporary
# directory (about 70 MB per set, deleted at the end), scores every set with
# scripts/aldp-kl-floor.py against the shipped reference, and prints each KL and the mean and
# standard deviation over these sets and the run's own final evaluation. Environment: FAB (the
# fab binary; default target/release/fab); RAYON_NUM_THREADS as for sampling. Needs NumPy.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '6p' "$0" | sed 's/^# //' >&2
  exit 2
fi
dir=$1
shift
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(7 8 9)
root=$(cd "$(dirname "$0")/.." && pwd)
fab=${FAB:-$root/target/release/fab}
[ -x "$fab" ] || { echo "aldp-kl-spread: no fab binary at $fab (cargo build --release, or set FAB)" >&2; exit 2; }
[ -f "$dir/final_metrics.json" ] || { echo "aldp-kl-spread: $dir has no final_metrics.json (not a finished run or model)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
files=()
for s in "${seeds[@]}"; do
  "$fab" sample "$dir" -n 1000000 --cartesian --seed "$s" --out "$tmp/x$s.npy" > "$tmp/sample$s.log" 2>&1 \
    || { cat "$tmp/sample$s.log" >&2; exit 1; }
  files+=("$tmp/x$s.npy")
done
python3 "$root/scripts/aldp-kl-floor.py" --run "$dir" "${files[@]}" | sed "s#$tmp/##"
