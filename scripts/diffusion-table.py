#!/usr/bin/env python3
"""Markdown table of diffusion-sampler runs: one row per run directory (final_metrics.json).

usage: scripts/diffusion-table.py RUN_DIR...
Columns: Δlog Z (ELBO), Δlog Z^RW, EUBO − log Z, W2, MMD, modes covered, min/max mode-mass ratio,
iterations, training minutes.
"""
import json
import pathlib
import sys


def fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


rows = []
for d in sys.argv[1:]:
    p = pathlib.Path(d)
    f = p / "final_metrics.json"
    if not f.exists():
        print(f"skipping {d}: no final_metrics.json", file=sys.stderr)
        continue
    m = json.loads(f.read_text())
    m = m.get("metrics", m)
    rows.append((p.name, m))

print("| run | Δlog Z | Δlog Z^RW | EUBO − log Z | W2 | MMD | modes | mass ratio min / max | iterations | train min |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, m in rows:
    modes = m.get("modes_covered")
    ratio = f"{fmt(m.get('mode_mass_ratio_min'), 2)} / {fmt(m.get('mode_mass_ratio_max'), 2)}" if "mode_mass_ratio_min" in m else "–"
    print(
        f"| {name} | {fmt(m.get('delta_log_z'))} | {fmt(m.get('delta_log_z_rw'))} | {fmt(m.get('delta_log_z_eubo'))} | {fmt(m.get('w2'), 2)} "
        f"| {fmt(m.get('mmd'), 4)} | {'–' if modes is None else int(modes)} | {ratio} | {int(m.get('iteration', 0))} "
        f"| {fmt(m.get('train_seconds', 0) / 60, 1)} |"
    )
