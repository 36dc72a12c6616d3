#!/usr/bin/env python3
"""Markdown table of diffusion-sampler runs (final_metrics.json of each run directory).

usage: scripts/diffusion-table.py RUN_DIR...
Runs whose directories share a name (the same config, e.g. OUT/25gmm-tb, OUT/s1/25gmm-tb,
OUT/s2/25gmm-tb for three seeds) form one row: mean ± sample standard deviation over the seeds,
with the number of seeds; a single run is printed as is.
Columns: Δlog Z (ELBO), Δlog Z^RW, EUBO − log Z, W2, MMD, modes covered (min–max over seeds),
min/max mode-mass ratio (worst over seeds), iterations, training minutes (mean).
"""
import json
import math
import pathlib
import sys


def fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def stat(vals, digits=3):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{fmt(mean, digits)} ± {fmt(sd, digits)}"


groups = {}
for d in sys.argv[1:]:
    p = pathlib.Path(d)
    f = p / "final_metrics.json"
    if not f.exists():
        print(f"skipping {d}: no final_metrics.json", file=sys.stderr)
        continue
    m = json.loads(f.read_text())
    groups.setdefault(p.name, []).append(m.get("metrics", m))

print("| run | seeds | Δlog Z | Δlog Z^RW | EUBO − log Z | W2 | MMD | modes | mass ratio min / max | iterations | train min |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, ms in groups.items():
    col = lambda k: [m.get(k) for m in ms]
    modes = [int(v) for v in col("modes_covered") if v is not None]
    modes_s = "–" if not modes else (str(modes[0]) if min(modes) == max(modes) else f"{min(modes)}–{max(modes)}")
    lo = [v for v in col("mode_mass_ratio_min") if v is not None]
    hi = [v for v in col("mode_mass_ratio_max") if v is not None]
    ratio = f"{fmt(min(lo), 2)} / {fmt(max(hi), 2)}" if lo and hi else "–"
    iters = sorted({int(m.get("iteration", 0)) for m in ms})
    minutes = sum(m.get("train_seconds", 0) for m in ms) / len(ms) / 60
    print(
        f"| {name} | {len(ms)} | {stat(col('delta_log_z'))} | {stat(col('delta_log_z_rw'))} | {stat(col('delta_log_z_eubo'))} "
        f"| {stat(col('w2'), 2)} | {stat(col('mmd'), 4)} | {modes_s} | {ratio} | {'/'.join(map(str, iters))} | {fmt(minutes, 1)} |"
    )
