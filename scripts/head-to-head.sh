#!/usr/bin/env bash
# FAB against the best diffusion-sampler configuration (VarGrad + Expl. + LP + LS) on the
# 25-mode mixture, the 40-mode mixture and Many Well 32-D, each run on one core at about equal
# wall time, then the diffusion sampler again at FAB's target-evaluation budget (runs
# `diffusion-<target>-evals`) (docs/RESULTS.md, "Head to head"). On 25GMM also a longer pair:
# TB + Expl. + LS, the configuration that meets the 25GMM goal for every seed, against FAB at
# about the same wall time (runs `diffusion-25gmm-tbls`, `fab-25gmm-90k`). Two runs at a time
# (one per core); finished runs are kept, so the script can be re-run after an interruption.
#
#   scripts/head-to-head.sh OUT            # all runs, then the table and the figures
#   TABLE_ONLY=1 scripts/head-to-head.sh OUT
#
# Writes OUT/<run>/ (run directories), OUT/table.md and OUT/<target>.png.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/head-to-head.sh OUT}
mkdir -p "$OUT"
cargo build --release -p fab-cli >&2
FAB=target/release/fab
export RAYON_NUM_THREADS=1

run() { # name, then the arguments of `fab train`
  local name=$1
  shift
  if [ -f "$OUT/$name/final_metrics.json" ]; then return; fi
  if [ -d "$OUT/$name" ]; then
    "$FAB" train --resume "$OUT/$name" --no-progress >> "$OUT/$name.log" 2>&1
  else
    "$FAB" train "$@" --out "$OUT/$name" --no-progress > "$OUT/$name.log" 2>&1
  fi
}

if [ -z "${TABLE_ONLY:-}" ]; then
  (
    run fab-25gmm experiments/head-to-head/fab-25gmm.toml
    run fab-40gmm gmm-paper --set seed=0
    # Many Well's CPU config cut to about the diffusion run's wall time: 1 200 iterations (about
    # 0.5 s each on one core) with the cosine decay finishing at the end (32 gradient steps per
    # iteration).
    run fab-manywell many-well-cpu --set train.n_iterations=1200 --set train.lr_schedule.t_max=38400 \
      --set eval.n_test=2000 --set eval.final_batch_size=10000
    # 25GMM at about the wall time of the TB + Expl. + LS run below (three times the length of
    # fab-25gmm, with its cosine decay stretched to match).
    run fab-25gmm-90k experiments/head-to-head/fab-25gmm.toml --set train.n_iterations=90000 \
      --set train.lr_schedule.t_max=360000 --set train.checkpoint_every=15000
  ) &
  (
    run diffusion-25gmm diffusion-25gmm-vargrad-expl-lp-ls --set train.n_iterations=1500
    run diffusion-40gmm experiments/head-to-head/diffusion-40gmm-vargrad-expl-lp-ls.toml
    run diffusion-manywell diffusion-manywell-vargrad-expl-lp-ls --set train.n_iterations=2000
    # The configuration that meets the 25GMM goal for every seed: the embedded TB + Expl. + LS
    # (25 000 iterations in two path chunks, here on one thread; about 31 minutes).
    run diffusion-25gmm-tbls diffusion-25gmm-tb-expl-ls
  ) &
  wait
  # Equal target-evaluation budgets: the diffusion configuration again, stopped after as many
  # iterations as give FAB's training budget in target evaluations (its per-iteration count
  # taken from the equal-time run above; local-search rounds make it vary by < 1 %).
  budget_iterations() { # FAB run, diffusion run
    python3 -c 'import json, sys
f = json.load(open(sys.argv[1] + "/final_metrics.json"))
d = json.load(open(sys.argv[2] + "/final_metrics.json"))
print(max(1, round(f["n_target_calls"] / (d["n_target_calls"] / d["iteration"]))))' "$1" "$2"
  }
  run diffusion-25gmm-evals diffusion-25gmm-vargrad-expl-lp-ls \
    --set train.n_iterations="$(budget_iterations "$OUT/fab-25gmm" "$OUT/diffusion-25gmm")"
  run diffusion-40gmm-evals experiments/head-to-head/diffusion-40gmm-vargrad-expl-lp-ls.toml \
    --set train.n_iterations="$(budget_iterations "$OUT/fab-40gmm" "$OUT/diffusion-40gmm")"
  run diffusion-manywell-evals diffusion-manywell-vargrad-expl-lp-ls \
    --set train.n_iterations="$(budget_iterations "$OUT/fab-manywell" "$OUT/diffusion-manywell")"
fi

# The GMM paper config tests on 1 000 exact points; W2 is compared at 2 000 (its empirical value
# depends on n), so the 40-mode FAB flow is also evaluated with 2 000 test points.
if [ -f "$OUT/fab-40gmm/final_metrics.json" ] && [ ! -f "$OUT/fab-40gmm-test2000/final_metrics.json" ]; then
  "$FAB" eval "$OUT/fab-40gmm" --set eval.n_test=2000 --out "$OUT/fab-40gmm-test2000" > /dev/null
fi

# Sampling cost: CPU time (user + system) of `fab sample -n 10000` on one thread, process start
# and model load included (CPU time, so that other work on the machine does not count).
for d in "$OUT"/*/; do
  name=$(basename "$d")
  [ -f "$d/final_metrics.json" ] && [ -f "$d/config.toml" ] || continue
  [ -f "$OUT/$name.sample_seconds" ] && continue
  python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{r.ru_utime + r.ru_stime:.3f}")' "$FAB" sample "$d" -n 10000 --out "$OUT/$name.samples.npy" --seed 1 > "$OUT/$name.sample_seconds"
  rm -f "$OUT/$name.samples.npy" "$OUT/$name.samples_log_q.npy"
done

python3 scripts/head-to-head-table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
for t in 25gmm 40gmm manywell; do
  if [ -d "$OUT/fab-$t" ] && [ -d "$OUT/diffusion-$t" ]; then
    # log Z = 0 for the mixtures, so their EUBO is the gap itself and reads well on a log axis.
    log_eubo=()
    [ "$t" != manywell ] && log_eubo=(--log-y eubo)
    "$FAB" compare "$OUT/fab-$t" "$OUT/diffusion-$t" --x n_target_calls --log-x --y log_z_abs_error --log-y log_z_abs_error \
      --y eubo "${log_eubo[@]}" --title "FAB vs diffusion sampler on $t: |log Z error| of the importance-weighted estimate and EUBO against training target evaluations" \
      --out "$OUT/$t.png"
  fi
done
# The longer 25GMM pair beside the equal-time one.
long=("$OUT/fab-25gmm" "$OUT/fab-25gmm-90k" "$OUT/diffusion-25gmm" "$OUT/diffusion-25gmm-tbls")
if [ -d "${long[0]}" ] && [ -d "${long[1]}" ] && [ -d "${long[2]}" ] && [ -d "${long[3]}" ]; then
  "$FAB" compare "${long[@]}" --x n_target_calls --log-x --y log_z_abs_error --log-y log_z_abs_error \
    --y eubo --log-y eubo --title "FAB vs diffusion samplers on 25gmm, short and long runs: |log Z error| and EUBO against training target evaluations" \
    --out "$OUT/25gmm-long.png"
fi
