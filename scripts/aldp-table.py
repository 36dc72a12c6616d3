#!/usr/bin/env python3
"""Markdown table of alanine-dipeptide FAB runs against the issue-15 goals.

usage: scripts/aldp-table.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds a `final_metrics.json` (written by `fab train` at the end of a run or by
`fab eval DIR --out DIR`). Basin errors are relative to the extended reference's pooled
populations (crates/fab-targets/data/aldp/reference/reference.json), re-weighted flow samples.
With more than one run a last row gives mean ± sample standard deviation (and the worst basin
error over the runs).
"""
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "crates/fab-targets/data/aldp/reference/reference.json")
BASINS = [("β", "basin_beta_c5_flow_reweighted"), ("αR", "basin_alpha_r_flow_reweighted"),
          ("αL", "basin_alpha_l_flow_reweighted")]


def row(path, ref):
    m = json.load(open(os.path.join(path, "final_metrics.json")))
    errs = [m[key] / r["mean"] - 1.0 for (_, key), r in zip(BASINS, ref)]
    return {
        "run": path.rstrip("/"),
        "iteration": m.get("iteration"),
        "hours": m.get("train_seconds", float("nan")) / 3600.0,
        "ess_flow": m["eval_ess_flow"],
        "kl": m["ramachandran_kl_flow"],
        "kl_rw": m["ramachandran_kl_flow_reweighted"],
        "errs": errs,
        "alpha_l": m["basin_alpha_l_flow_l_form"],
        "l_form": m["l_form_fraction"],
        "ess_ais": m["eval_ess_ais"],
    }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[2])
    ref = json.load(open(REFERENCE))["basins"]
    rows = [row(p, ref) for p in sys.argv[1:]]
    print("| run | iterations | train h | flow ESS | Ramachandran KL (flow / re-weighted) "
          "| β / αR / αL vs reference (re-weighted) | αL, L-form, unweighted | L-form | AIS ESS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        errs = " / ".join(f"{100 * e:+.1f} %" for e in r["errs"])
        print(f"| {r['run']} | {r['iteration']} | {r['hours']:.2f} | {100 * r['ess_flow']:.1f} % "
              f"| {r['kl']:.4f} / {r['kl_rw']:.4f} | {errs} | {100 * r['alpha_l']:.3f} % "
              f"| {100 * r['l_form']:.2f} % | {100 * r['ess_ais']:.1f} % |")
    if len(rows) > 1:
        def ms(key, scale=1.0, fmt=".1f"):
            v = [scale * r[key] for r in rows]
            return f"{statistics.mean(v):{fmt}} ± {statistics.stdev(v):{fmt}}"
        worst = " / ".join(
            f"{100 * max((r['errs'][i] for r in rows), key=abs):+.1f} %" for i in range(3))
        print(f"| mean ± sd of {len(rows)} (basins: worst) | – | – | {ms('ess_flow', 100)} % "
              f"| {ms('kl', 1, '.4f')} / {ms('kl_rw', 1, '.4f')} | {worst} "
              f"| {ms('alpha_l', 100, '.3f')} % | {ms('l_form', 100, '.2f')} % | {ms('ess_ais', 100)} % |")
    print(f"\nreference (pooled, 6 runs): β {ref[0]['mean']:.4f}, αR {ref[1]['mean']:.4f}, "
          f"αL {ref[2]['mean']:.5f}")


if __name__ == "__main__":
    main()
