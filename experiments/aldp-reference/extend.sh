#!/usr/bin/env bash
# Adds independent replica-exchange runs for the extended ALDP reference (docs/ALDP_REFERENCE.md,
# "Extended reference"). One run per seed, one after the other, single-threaded; a seed whose
# run directory already has diagnostics.json is skipped, so the script can be restarted and the
# runs spread over several machines or sessions. Run one instance per core with disjoint seeds:
#   nohup experiments/aldp-reference/extend.sh target/aldp-reference-ext 101 103 105 &> ext-a.log &
#   nohup experiments/aldp-reference/extend.sh target/aldp-reference-ext 102 104 106 &> ext-b.log &
# Environment: SWEEPS (production sweeps per run, default 3 000 000), BIN (the aldp-reference
# binary; default: build target/release/aldp-reference).
set -euo pipefail
cd "$(dirname "$0")/../.."
export RAYON_NUM_THREADS=1
RUNS=${1:?usage: extend.sh RUNS_DIR SEED...}
shift
SWEEPS=${SWEEPS:-3000000}
if [ -z "${BIN:-}" ]; then
  cargo build --release -p aldp-reference
  BIN=target/release/aldp-reference
fi
mkdir -p "$RUNS"
starts=(min alpha-r alpha-l c7ax pii)
for seed in "$@"; do
  out="$RUNS/geo8-seed$seed"
  if [ -f "$out/diagnostics.json" ]; then
    echo "seed $seed: done already"
    continue
  fi
  # Geometric ladder of 8 replicas, 300-1300 K: two full 4-lane groups per density call, every
  # neighbour pair swaps ~42 % of the time; the 300 K replica is recorded every 2 sweeps.
  "$BIN" run --seed "$seed" --start "${starts[$((seed % 5))]}" --ladder geometric --n-replicas 8 \
    --t-max 1300 --out "$out" --burn-in 3000 --sweeps "$SWEEPS" --phi-psi-every 2 --z-every 40 \
    --progress-every 250000 > "$out.log"
  echo "seed $seed: $(tail -n 1 "$out.log")"
done
