#!/usr/bin/env bash
# Side-by-side CPU timings: fab-rs vs the PyTorch reference (lollcat/fab-torch), same models,
# float64, one pinned core, one thread.
#
# usage: benches/vs-torch/run.sh FABTORCH_CHECKOUT [PYTHON]
#   FABTORCH_CHECKOUT  checkout of lollcat/fab-torch (the directory containing fab/ and experiments/)
#   PYTHON             interpreter with torch, numpy, normflows, omegaconf, pandas, wandb, matplotlib
#                      (default: python3)
# environment (optional):
#   ROUNDS=3        interleaved rounds per row and side (each run is its own process)
#   CORE=0          CPU core for taskset
#   METRIC=cpu      cpu: process CPU time (robust to other jobs on the machine); wall: wall clock
#   QUICK=1         tiny warm-up/repetition counts (checks that everything runs; numbers are noisy)
#   MW_ITERATION=0  skip the whole Many Well FAB iteration row (its buffer fill costs ~1 min per run)
#   LOG_DIR=DIR     where every run's full output is kept (default: a new temp dir)
#   REPORT_ONLY=1   build and run nothing: print the table from the results already in LOG_DIR
#
# Each row runs fab-rs (crates/fab-train/examples/vs_torch.rs) and the reference
# (benches/vs-torch/torch_side.py) alternately, ROUNDS times each, the side that goes first
# alternating; each run does W untimed and R timed calls (the same W and R on both sides) and
# reports its median; the table shows the median over the rounds. Nothing is fetched or installed.
set -euo pipefail

usage() { echo "usage: $0 FABTORCH_CHECKOUT [PYTHON]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../common.sh"
ROOT=$BENCH_ROOT
REF=$(bench_checkout "$1" fab-torch) || exit 2
PY=${2:-python3}
ROUNDS=${ROUNDS:-3}
CORE=${CORE:-0}
METRIC=${METRIC:-cpu}
QUICK=${QUICK:-0}
MW_ITERATION=${MW_ITERATION:-1}
REPORT_ONLY=${REPORT_ONLY:-0}
[[ $REPORT_ONLY == 0 || -n "${LOG_DIR:-}" ]] || { echo "error: REPORT_ONLY=1 needs LOG_DIR (a previous run's log directory)" >&2; exit 2; }
LOG_DIR=${LOG_DIR:-$(mktemp -d -t vs-torch.XXXXXX)}
mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
[[ $METRIC == cpu || $METRIC == wall ]] || { echo "error: METRIC must be cpu or wall" >&2; exit 2; }

[[ -f "$REF/fab/sampling_methods/ais.py" && -f "$REF/experiments/setup_run.py" && -f "$REF/experiments/config/many_well.yaml" ]] \
  || { echo "error: $REF does not look like a fab-torch checkout (fab/sampling_methods/ais.py, experiments/setup_run.py, experiments/config/*.yaml expected)" >&2; exit 2; }
bench_require_taskset || exit 2
command -v "$PY" >/dev/null || { echo "error: python interpreter '$PY' not found" >&2; exit 2; }
"$PY" -c 'import torch' 2>/dev/null \
  || { echo "error: '$PY' cannot import torch; pass an interpreter that has PyTorch (e.g. a venv with 'pip install torch numpy')" >&2; exit 2; }
if ! missing=$("$PY" - <<'EOF' 2>/dev/null
import importlib.util
miss = [m for m in ("numpy", "normflows", "omegaconf", "pandas", "wandb", "matplotlib", "tqdm")
        if importlib.util.find_spec(m) is None]
print(" ".join(miss))
EOF
); then missing="(check failed)"; fi
[[ -z "$missing" ]] || { echo "error: '$PY' lacks modules fab-torch imports: $missing (pip install $missing)" >&2; exit 2; }

# fab-rs side: build once, then call the binary directly.
if [[ $REPORT_ONLY == 0 ]]; then
FAB_BIN=$(bench_build_example fab-train vs_torch "$LOG_DIR/cargo-build.log" "$PY") || exit 1
fi

# key | label | warm-up | timed repetitions
ROWS=(
  "gmm_backward|GMM flow log q + backward (B 128)|10|50"
  "gmm_iteration|GMM FAB + buffer iteration (paper config)|20|50"
  "mw_backward|Many Well flow log q + backward (B 2048, hidden 320)|1|5"
  "mw_sample|Many Well flow sample + log q (B 2048)|1|5"
  "mw_grad_x|Many Well flow log q + ∇ₓ (B 2048)|1|5"
  "mw_ais|Many Well AIS pass (B 2048, 4 levels, HMC 5 leapfrog)|1|3"
)
[[ $MW_ITERATION == 0 ]] || ROWS+=("mw_iteration|Many Well FAB iteration (AIS + 8 gradient steps, B 2048)|1|3")

# value of field $2 (wall_ms or cpu_ms) on the line `row KEY ...` of a log, or nothing
val_of() { awk -v f="$2" '$1 == "row" { for (i = 3; i < NF; i++) if ($i == f) { print $(i + 1); exit } }' "$1"; }

run_side() { # side key warmup reps log
  if [[ $1 == fab ]]; then
    (cd "$ROOT" && taskset -c "$CORE" "$FAB_BIN" "$2" --warmup "$3" --reps "$4") >"$5" 2>&1
  else
    (cd "$LOG_DIR" && taskset -c "$CORE" "$PY" "$HERE/torch_side.py" "$REF" "$2" --warmup "$3" --reps "$4") >"$5" 2>&1
  fi
}

for spec in "${ROWS[@]}"; do
  [[ $REPORT_ONLY == 0 ]] || break
  IFS='|' read -r key label warmup reps <<<"$spec"
  if [[ $QUICK != 0 ]]; then
    warmup=1
    case $key in mw_ais | mw_iteration) reps=1 ;; *) reps=2 ;; esac
  fi
  rm -f "$LOG_DIR/$key".{fab,torch}.{cpu,wall}
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(fab torch); else order=(torch fab); fi
    for side in "${order[@]}"; do
      log="$LOG_DIR/$key.$side.round$r.log"
      if run_side "$side" "$key" "$warmup" "$reps" "$log"; then
        c=$(val_of "$log" cpu_ms) w=$(val_of "$log" wall_ms)
        if [[ -n "$c" && -n "$w" ]]; then
          echo "$c" >>"$LOG_DIR/$key.$side.cpu"
          echo "$w" >>"$LOG_DIR/$key.$side.wall"
          echo "  $key round $r $side: cpu $c ms, wall $w ms" >&2
          continue
        fi
      fi
      echo "  $key round $r $side: FAILED, see $log" >&2
    done
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
med_of() { [[ -f "$1" ]] && median <"$1" || true; }

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
if grep -qw avx512f /proc/cpuinfo; then AVX512=yes; else AVX512=no; fi
# (awk reads the logs itself: `cat | awk '...exit'` would die of SIGPIPE under pipefail)
first_of() { awk "$1" "$LOG_DIR"/*."$2".round*.log 2>/dev/null || true; }
FAB_AVX=$(first_of '/^# fab-rs avx512f detected:/ { print $NF; exit }' fab)
TORCH_CAP=$(first_of '/^# torch .*cpu capability/ { print $NF; exit }' torch)
TORCH_VER=$(first_of '/^# torch / { sub(/,$/, "", $3); print $3; exit }' torch)

echo
echo "fab-rs vs fab-torch (torch ${TORCH_VER:-?}), float64, one core (taskset -c $CORE), one thread; $ROUNDS interleaved rounds per side, each run the median of its timed repetitions; table: median over rounds"
echo "primary metric: $METRIC ($([[ $METRIC == cpu ]] && echo 'process CPU time' || echo 'wall clock')); load average when printed: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| row | fab-rs ms | torch ms | fab-rs/torch | fab-rs wall ms | torch wall ms | wall fab-rs/torch |"
echo "|---|---|---|---|---|---|---|"
worst="" worst_row="" incomplete=""
other=$([[ $METRIC == cpu ]] && echo wall || echo cpu)
for spec in "${ROWS[@]}"; do
  IFS='|' read -r key label _ _ <<<"$spec"
  f=$(med_of "$LOG_DIR/$key.fab.$METRIC") t=$(med_of "$LOG_DIR/$key.torch.$METRIC")
  fw=$(med_of "$LOG_DIR/$key.fab.wall") tw=$(med_of "$LOG_DIR/$key.torch.wall")
  if [[ -n "$f" && -n "$t" ]]; then
    q=$(ratio "$f" "$t")
    if [[ -z "$worst" ]] || awk -v a="$q" -v b="$worst" 'BEGIN { exit !(a > b) }'; then worst=$q worst_row=$label; fi
  else
    q=n/a incomplete=1
  fi
  qw=$([[ -n "$fw" && -n "$tw" ]] && ratio "$fw" "$tw" || echo n/a)
  fmt() { [[ -n "$1" ]] && printf '%.2f' "$1" || echo n/a; }
  echo "| $label | $(fmt "$f") | $(fmt "$t") | $q | $(fmt "$fw") | $(fmt "$tw") | $qw |"
done
echo
echo "CPU: ${CPU:-unknown}"
# gemm compiles its 512-bit kernels only with its x86-v4 feature (set in the workspace Cargo.toml)
if grep -Eq '^gemm *=.*"x86-v4"' "$ROOT/Cargo.toml"; then GEMM_V4=yes; else GEMM_V4=no; fi
if [[ $AVX512 == yes && $GEMM_V4 == yes && $FAB_AVX == true ]]; then
  echo "AVX-512: present (avx512f); fab-rs: used (gemm built with x86-v4, avx512f detected at run time); torch: cpu capability ${TORCH_CAP:-?}"
elif [[ $AVX512 == yes ]]; then
  echo "AVX-512: present (avx512f); fab-rs: NOT used (gemm x86-v4 in Cargo.toml: $GEMM_V4, run-time detection: ${FAB_AVX:-?}); torch: cpu capability ${TORCH_CAP:-?}"
else
  echo "AVX-512: absent (no avx512f); fab-rs runs gemm's AVX2/FMA kernels; torch: cpu capability ${TORCH_CAP:-?}"
fi
echo "full output of every run: $LOG_DIR"
if [[ -n "$worst" ]]; then
  [[ -z "$incomplete" ]] || echo "warning: some rows have no value on one side (see the logs)"
  echo "worst ratio $worst ($worst_row)"
else
  echo "worst ratio n/a (no row has both sides)"
  exit 1
fi
