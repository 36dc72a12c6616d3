#!/usr/bin/env bash
# The final evaluation of one checkpoint of a run (`fab eval` reads a run's latest checkpoint
# only): copies RUN's config.toml and checkpoints/iter_ITER into OUT, names that checkpoint as
# OUT's latest, and runs `fab eval OUT` with the given settings. RUN is not touched. Evaluating a
# checkpoint this way gives what a run stopped at ITER (by a time limit or Ctrl-C) would have
# reported, bit for bit: the evaluation stream is saved with the checkpoint.
#
# usage: scripts/eval-checkpoint.sh RUN ITER OUT [--set eval.KEY=VALUE ...]
#   e.g. scripts/eval-checkpoint.sh runs/aldp 1500 /tmp/aldp_1500
#        scripts/eval-checkpoint.sh runs/aldp 2000 /tmp/aldp_2000 --set eval.final_batch_size=200000 \
#          --set eval.final_ais_batch_size=64 --set eval.plots=false
# Environment: FAB (the fab binary; default target/release/fab). Metrics: OUT/final_metrics.json.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '8,11p' "$0" | sed 's/^# //' >&2
  exit 2
fi
run=$1 iter=$2 out=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
fab=${FAB:-$root/target/release/fab}
ckpt=$(printf 'iter_%08d' "$iter")
[ -x "$fab" ] || { echo "eval-checkpoint: no fab binary at $fab (cargo build --release, or set FAB)" >&2; exit 2; }
[ -d "$run/checkpoints/$ckpt" ] || { echo "eval-checkpoint: $run has no checkpoint $ckpt" >&2; exit 2; }
[ -e "$out" ] && { echo "eval-checkpoint: $out exists, kept as it is" >&2; exit 2; }
mkdir -p "$out/checkpoints"
cp "$run/config.toml" "$out/"
cp -r "$run/checkpoints/$ckpt" "$out/checkpoints/"
printf '%s' "$ckpt" > "$out/checkpoints/latest"
"$fab" eval "$out" "$@"
