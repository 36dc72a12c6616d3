# Helpers shared by the side-by-side harnesses (`benches/*/run.sh` source this file; it does
# nothing on its own). Each harness compares one pinned core running one thread against one
# pinned core running one thread, so every thread pool is set to one here.

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=1

# The repository root (the parent of benches/).
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# bench_checkout PATH WHAT: prints the absolute path of a reference checkout, or a one-line error
# naming WHAT (and fails).
bench_checkout() {
  (cd "$1" 2>/dev/null && pwd) || { echo "error: $2 checkout '$1' is not a directory" >&2; return 2; }
}

# Fails with a one-line error when taskset (util-linux) is missing.
bench_require_taskset() {
  command -v taskset >/dev/null || { echo "error: taskset not found (util-linux)" >&2; return 2; }
}

# bench_build_example PACKAGE EXAMPLE LOG PYTHON: builds one fab-rs example in release mode (the
# output goes to LOG) and prints the path of its binary; a failed build is a one-line error.
bench_build_example() {
  local pkg=$1 ex=$2 log=$3 py=$4 target bin
  echo "building: cargo build --release -p $pkg --example $ex (log: $log)" >&2
  (cd "$BENCH_ROOT" && cargo build --release -p "$pkg" --example "$ex") >"$log" 2>&1 \
    || { echo "error: 'cargo build --release -p $pkg --example $ex' failed; see $log" >&2; return 1; }
  target=$(cd "$BENCH_ROOT" && cargo metadata --format-version 1 --no-deps \
    | "$py" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  bin="$target/release/examples/$ex"
  [[ -x "$bin" ]] || { echo "error: built, but $bin is not there" >&2; return 1; }
  echo "$bin"
}

# The median of the numbers on stdin, one per line (nothing for no input).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The value of the line `ms_per_iteration <value> ...` of a log file, or nothing.
ms_of() { awk '$1 == "ms_per_iteration" { print $2; exit }' "$1"; }
