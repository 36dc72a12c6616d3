#!/usr/bin/env bash
# Every metric of an alanine-dipeptide run or model on several independent evaluation sets: its
# own final evaluation and `fab eval DIR --seed S` for each seed, then the headline keys per set
# with their mean and standard deviation (docs/RESULTS.md, "Using the rest of the 3 hours", the
# table of four sets). Says how much of a gap to a goal is the metrics' own scatter.
#
# usage: scripts/aldp-eval-sets.sh DIR [SEED ...] [-- --set eval.key=value ...]   (default seeds 7 8 9)
#
# Each set is evaluated with `--set eval.final_ais_batch_size=64 --set eval.plots=false` (the
# flow keys do not depend on the AIS size) plus whatever follows `--` (it does not change the
# run's own evaluation, so keep the sample count at 10^6 to compare them), into a temporary directory
# deleted at the end; DIR is left as it is. Set KEEP=OUTDIR to keep the evaluations there
# instead (OUTDIR/seed_S/final_metrics.json). Environment: FAB (the fab binary; default
# target/release/fab); RAYON_NUM_THREADS as for evaluation. Needs python3 (no NumPy).
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '7p' "$0" | sed 's/^# //' >&2
  exit 2
fi
dir=$1
shift
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  seeds+=("$1")
  shift
done
[ $# -gt 0 ] && shift
extra=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(7 8 9)
for s in "${seeds[@]}"; do
  [[ $s =~ ^[0-9]+$ ]] || { echo "aldp-eval-sets: seed '$s' is not a whole number (put --set options after --)" >&2; exit 2; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
fab=${FAB:-$root/target/release/fab}
[ -x "$fab" ] || { echo "aldp-eval-sets: no fab binary at $fab (cargo build --release, or set FAB)" >&2; exit 2; }
[ -f "$dir/final_metrics.json" ] || { echo "aldp-eval-sets: $dir has no final_metrics.json (not a finished run or model)" >&2; exit 2; }
if [ -n "${KEEP:-}" ]; then
  out=$KEEP
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
files=("$dir/final_metrics.json")
for s in "${seeds[@]}"; do
  "$fab" eval "$dir" --seed "$s" --out "$out/seed_$s" \
    --set eval.final_ais_batch_size=64 --set eval.plots=false ${extra[@]+"${extra[@]}"} > "$out/eval_$s.log" 2>&1 \
    || { cat "$out/eval_$s.log" >&2; exit 1; }
  files+=("$out/seed_$s/final_metrics.json")
done
python3 - "${files[@]}" <<'PY'
import json
import statistics
import sys

KEYS = [
    ("eval_ess_flow", "flow ESS", 100.0, 1, "%"),
    ("eval_ess_flow_clipped", "flow ESS, clipped", 100.0, 1, "%"),
    ("eval_ess_flow_outside_alpha_l", "flow ESS outside αL", 100.0, 1, "%"),
    ("ramachandran_kl_flow", "Ramachandran KL", 1e3, 2, "·10⁻³"),
    ("ramachandran_kl_flow_alpha_l", "  its αL part", 1e3, 2, "·10⁻³"),
    ("basin_alpha_l_flow_reweighted", "αL re-weighted", 100.0, 3, "%"),
    ("basin_alpha_l_flow_l_form", "αL unweighted (L-form)", 100.0, 3, "%"),
    ("l_form_fraction", "L-form", 100.0, 2, "%"),
]
paths = sys.argv[1:]
sets = [json.load(open(p)) for p in paths]
print("sets: own evaluation, then " + ", ".join(p.rsplit("/", 2)[-2] for p in paths[1:]))
for key, label, scale, digits, unit in KEYS:
    vals = [s.get(key) for s in sets]
    if any(not isinstance(v, (int, float)) for v in vals):
        print(f"{label:26s} (missing in some set: {key})")
        continue
    vals = [v * scale for v in vals]
    sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    each = " / ".join(f"{v:.{digits}f}" for v in vals)
    print(f"{label:26s} {each}   mean {statistics.mean(vals):.{digits}f} ± {sd:.{digits}f} {unit}")
PY
