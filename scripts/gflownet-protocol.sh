#!/usr/bin/env bash
# The deceptive-gridworld protocol (docs/GFLOWNETS.md, docs/RESULTS.md): every embedded grid-*
# config at (d, H) = (2, 64) and (4, 16) for the given seeds, default budgets, one thread each,
# then a table of final metrics. Usage: scripts/gflownet-protocol.sh OUT_DIR [SEEDS] [CONFIGS]
# (SIZES="2 64,4 16" by default; e.g. SIZES="4 32" for the harder setting).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gflownet-protocol.sh OUT_DIR [SEEDS] [CONFIGS]}
seeds=${2:-"0 1 2"}
configs=${3:-"grid-tb grid-tb-eps grid-gafn grid-tb-prt grid-tb-per grid-teacher grid-teacher-prt grid-teacher-per grid-tb-ls grid-teacher-ls grid-tb-ls-per grid-teacher-ls-per grid-db grid-db-per grid-teacher-db grid-teacher-db-per"}
cargo build --release -q -p fab-cli
mkdir -p "$out"
IFS=, read -ra size_list <<< "${SIZES:-2 64,4 16}"
for size in "${size_list[@]}"; do
  set -- $size
  for cfg in $configs; do
    for seed in $seeds; do
      dir="$out/$cfg-d$1-H$2-s$seed"
      [ -f "$dir/final_metrics.json" ] && continue
      if ! target/release/fab configs | cut -f1 | grep -qx "$cfg"; then echo "skip $cfg (not embedded)"; continue; fi
      rm -rf "$dir"
      RAYON_NUM_THREADS=1 target/release/fab train "$cfg" --set env.ndim=$1 --set env.horizon=$2 --set seed=$seed --out "$dir" > "$dir.log" 2>&1 || echo "FAILED $dir"
    done
  done
done
python3 scripts/gflownet-table.py "$out"
