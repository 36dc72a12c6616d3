#!/usr/bin/env python3
"""The head-to-head table of scripts/head-to-head.sh: one row per run directory in OUT.

Usage: scripts/head-to-head-table.py OUT   (standard library only)
"""
import json
import os
import sys

LOG_Z = {"25gmm": 0.0, "40gmm": 0.0, "manywell": 164.69567532}
# Run-name variants that select another diffusion configuration: variant -> (configuration, label).
DIFFUSION_VARIANT = {"tbls": ("TB + Expl. + LS", "embedded, 2 path chunks")}
TARGET_NAME = {"25gmm": "25GMM", "40gmm": "40-mode GMM", "manywell": "Many Well 32-D"}


def fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float) and (v != v):
        return "nan"
    if abs(v) >= 1e5:
        return f"{v:.2e}"
    return f"{v:.{digits}f}"


def main():
    out = sys.argv[1]
    rows = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, "final_metrics.json")
        if not os.path.isfile(path):
            continue
        # <method>-<target>[-<variant>], e.g. fab-manywell or fab-manywell-400.
        method, rest = name.split("-", 1)
        target, _, variant = rest.partition("-")
        m = json.load(open(path))
        lz = LOG_Z[target]
        sample_s = None
        sp = os.path.join(out, name + ".sample_seconds")
        if os.path.isfile(sp):
            sample_s = float(open(sp).read())
        # The diffusion configuration: VarGrad + Expl. + LP + LS unless the variant names another.
        config, label = DIFFUSION_VARIANT.get(variant, ("VarGrad + Expl. + LP + LS", variant))
        if method == "diffusion":
            method = f"diffusion, {config}"
        label = {"evals": "at FAB's target evaluations"}.get(label, label)
        rows.append((target, method + (f" ({label})" if label else ""), m, lz, sample_s))
    order = {"25gmm": 0, "40gmm": 1, "manywell": 2}
    rows.sort(key=lambda r: (order.get(r[0], 9), r[1]))
    print("| target | method | iterations | train min | target evaluations | \\|Δlog Z\\| (IS) | \\|Δlog Z\\| (flow / model IS) | EUBO − log Z | W2 (points) | MMD | modes | CPU s per 10⁴ samples |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for target, method, m, lz, sample_s in rows:
        is_err = m.get("log_z_abs_error")
        model_err = m.get("flow_log_z_abs_error", m.get("model_log_z_abs_error"))
        eubo = m.get("eubo")
        w2 = m.get("w2")
        pts = m.get("w2_points", 2000 if method.startswith("diffusion") else None)
        modes = m.get("modes_covered")
        n_modes = m.get("n_modes")
        cells = [
            TARGET_NAME.get(target, target),
            method.replace("fab", "FAB (flow + AIS + buffer)", 1) if method.startswith("fab") else method,
            f"{int(m['iteration'])}",
            fmt(m.get("train_seconds", float("nan")) / 60, 1),
            fmt(m.get("n_target_calls")) if m.get("n_target_calls") is not None else "–",
            fmt(is_err, 4),
            fmt(model_err, 4),
            fmt(None if eubo is None else eubo - lz, 3),
            f"{fmt(w2, 2)} ({int(pts)})" if w2 is not None and pts else "–",
            fmt(m.get("mmd"), 4),
            f"{int(modes)}/{int(n_modes)}" if modes is not None and n_modes else "–",
            fmt(sample_s, 2),
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
