#!/usr/bin/env bash
# Regenerates the shipped ALDP reference (crates/fab-targets/data/aldp/reference), the extended
# protocol of docs/ALDP_REFERENCE.md: 6 independent replica-exchange runs (seeds 101-106, 8
# replicas 300-1300 K, 3e6 production sweeps each), three after one another on each of two
# cores (about 1.5 h wall, 3 CPU hours on the development machine), then pooled by `combine`.
# Run it in the background:
#   nohup experiments/aldp-reference/regenerate.sh &> aldp-reference.log &
# Environment: RUNS (run directory, default target/aldp-reference-ext), SWEEPS (default 3000000).
# Finished runs are kept and skipped, so an interrupted regeneration resumes where it stopped.
# More runs (seeds 107, 108, ...) can be added with extend.sh and pooled with `combine`.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-target/aldp-reference-ext}
export SWEEPS=${SWEEPS:-3000000}
cargo build --release -p aldp-reference
export BIN=target/release/aldp-reference
experiments/aldp-reference/extend.sh "$RUNS" 101 103 105 &
experiments/aldp-reference/extend.sh "$RUNS" 102 104 106 &
wait
"$BIN" combine --runs "$RUNS"/geo8-seed{101..106} \
  --out crates/fab-targets/data/aldp/reference --n-z 100000 --n-phi-psi 100000 \
  --protocol "experiments/aldp-reference/regenerate.sh (SWEEPS=$SWEEPS), runs of seeds 101-106: 6 independent replica-exchange runs, starts cycling min/alpha-r/alpha-l/c7ax/pii (seed mod 5), 8 replicas 300-1300 K (geometric), HMC in flow coordinates (10 leapfrog steps, step sizes adapted during 3000 burn-in sweeps then frozen), energy tempered (volume element untempered), neighbour swaps alternating even/odd pairs every sweep, 300 K replica recorded every 2 sweeps; histograms of every L-form record, 1e5 (phi, psi) pairs and 1e5 float16 z shipped; see docs/ALDP_REFERENCE.md" \
  > "$RUNS/combine.log"
echo "done"
