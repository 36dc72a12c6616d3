#!/usr/bin/env bash
# Regenerates the shipped ALDP reference (crates/fab-targets/data/aldp/reference).
# Single-threaded and sequential on purpose (one core, ~45 min CPU in total on the
# development machine); run it in the background:
#   nohup experiments/aldp-reference/regenerate.sh &> aldp-reference.log &
set -euo pipefail
cd "$(dirname "$0")/../.."
export RAYON_NUM_THREADS=1
RUNS=${RUNS:-target/aldp-reference-runs}
SWEEPS=${SWEEPS:-250000}
cargo build --release -p aldp-reference
BIN=target/release/aldp-reference
mkdir -p "$RUNS"
starts=(min alpha-r alpha-l c7ax pii)
for i in 1 2 3 4 5; do
  "$BIN" run --seed "$i" --start "${starts[$((i-1))]}" --out "$RUNS/run$i" \
    --burn-in 3000 --sweeps "$SWEEPS" --phi-psi-every 2 --z-every 20 --progress-every 25000 \
    > "$RUNS/run$i.log"
done
# Cross-check: plain single-temperature HMC (2 × 16 chains, no tempering).
"$BIN" run --seed 99 --start min --n-replicas 1 --n-chains 16 --out "$RUNS/plain" \
  --burn-in 3000 --sweeps 100000 --phi-psi-every 10 --z-every 1000 --progress-every 25000 \
  > "$RUNS/plain.log"
"$BIN" run --seed 98 --start alpha-r --n-replicas 1 --n-chains 16 --out "$RUNS/plain2" \
  --burn-in 3000 --sweeps 100000 --phi-psi-every 10 --z-every 1000 --progress-every 50000 \
  > "$RUNS/plain2.log"
"$BIN" summarize --run "$RUNS/plain" "$RUNS/plain2" > "$RUNS/plain_summary.json"
"$BIN" combine --runs "$RUNS"/run1 "$RUNS"/run2 "$RUNS"/run3 "$RUNS"/run4 "$RUNS"/run5 \
  --out crates/fab-targets/data/aldp/reference --n-z 20000 --n-phi-psi 100000 \
  --protocol "experiments/aldp-reference/regenerate.sh (SWEEPS=$SWEEPS): 5 independent replica-exchange runs, seeds 1-5, starts min/alpha-r/alpha-l/c7ax/pii, 21 replicas 300-1300 K (50 K steps), HMC in flow coordinates (10 leapfrog steps, step sizes adapted during 3000 burn-in sweeps then frozen), energy tempered (volume element untempered), neighbour swaps alternating even/odd pairs every sweep; see docs/ALDP_REFERENCE.md" \
  > "$RUNS/combine.log"
echo "done"
