#!/usr/bin/env python3
"""Per-mode masses of mixture runs, from the `mode_mass_ratio_NN` keys of final_metrics.json.

usage: scripts/mode-masses.py RUN_DIR...

Each value is a mode's share of the model draws inside some component's 99.9 % ellipsoid,
divided by its mixture weight (1 = the right mass; docs/ALGORITHMS.md, "GMM: quadratic-function
MAE, mode coverage and mode-mass TV"). For the 25-component grid mixture (target `gmm25`,
component k at x = −10 + 5·(k div 5), y = −10 + 5·(k mod 5)) the ratios are laid out like the
target: top row y = 10, left column x = −10 (when RUN_DIR has no config.toml, as an `fab eval
--out` directory, any 25 modes are taken to be that mixture). Other mixtures are listed from the
lightest mode up.
Ratios below 0.8 or above 1.2 (the 25GMM goal's ±20 %) are marked with *.
"""
import json
import pathlib
import sys
import tomllib


def ratios(run):
    path = pathlib.Path(run) / "final_metrics.json"
    metrics = json.loads(path.read_text())
    keys = sorted(k for k in metrics if k.startswith("mode_mass_ratio_") and k[len("mode_mass_ratio_"):].isdigit())
    if not keys:
        sys.exit(f"{path}: no per-mode mass ratios (not a mixture target, or written before they existed)")
    return [metrics[k] for k in keys], metrics


def cell(r):
    return f"{r:5.2f}{'*' if r < 0.8 or r > 1.2 else ' '}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for run in sys.argv[1:]:
        rs, metrics = ratios(run)
        print(f"{run}: {len(rs)} modes, min {min(rs):.3f}, max {max(rs):.3f}, "
              f"TV {metrics.get('mode_mass_tv', float('nan')):.4f}")
        config = pathlib.Path(run) / "config.toml"
        target = tomllib.loads(config.read_text()).get("target", {}).get("type") if config.exists() else "gmm25"
        if len(rs) == 25 and target == "gmm25":
            for row in range(5):
                y = 4 - row
                print("  " + " ".join(cell(rs[5 * x + y]) for x in range(5)))
        else:
            order = sorted(range(len(rs)), key=lambda k: rs[k])
            print("  " + ", ".join(f"{k}: {rs[k]:.2f}" for k in order))


if __name__ == "__main__":
    main()
