#!/usr/bin/env python3
"""Markdown table: does each early alanine-dipeptide run keep the rare alpha_L basin?

usage: scripts/aldp-early-basin.py [--every N] RUN_DIR [RUN_DIR ...]

For runs made by scripts/aldp-early-basin.sh (or any run whose `metrics.jsonl` logs the
`ais_alpha_l_fraction` and `ais_alpha_l_weight` of its AIS batches). Columns:
- the flow's L-form alpha_L share and its re-weighted share at the run's end
  (`basin_alpha_l_flow_l_form`, `basin_alpha_l_flow_reweighted` of `final_metrics.json`;
  reference 0.240 %);
- per window of iterations, the mean number of L-form alpha_L samples in an AIS batch (after
  the chirality filter) and how many logged batches had any;
- per window, the mean share of an AIS batch's importance weight that lies in alpha_L and how
  many logged batches put more than 1 % of their weight there. A flow that has lost the basin
  stops producing such batches: its few alpha_L samples are high-energy and carry no weight.
The windows are iterations 1-60, 61-120, 121-200 and 201-300; with --every N, 1-N, N+1-2N, ...
up to the last iteration of the longest run (for whole runs, e.g. --every 1000).
"""
import json
import os
import sys
import tomllib

EARLY_WINDOWS = [(1, 60), (61, 120), (121, 200), (201, 300)]


def windows(rows, key, scale, hit, spans):
    out = []
    for lo, hi in spans:
        v = [r[key] * scale for r in rows if lo <= r["iteration"] <= hi]
        out.append(f"{sum(v) / len(v):.2f} ({sum(1 for x in v if x > hit)}/{len(v)})" if v else "–")
    return " / ".join(out)


def main(args):
    every = None
    if args[:1] == ["--every"] and len(args) > 1:
        every, args = int(args[1]), args[2:]
    dirs = [d for d in args if os.path.isfile(os.path.join(d, "metrics.jsonl"))]
    if not args or (every is not None and every <= 0):
        sys.exit(__doc__.strip().splitlines()[2])
    runs = {d: [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))] for d in dirs}
    spans = EARLY_WINDOWS
    if every is not None:
        last = max((r["iteration"] for rows in runs.values() for r in rows if r.get("kind") == "train"), default=0)
        spans = [(lo, min(lo + every - 1, last)) for lo in range(1, last + 1, every)]
    span = " / ".join(f"{lo}–{hi}" for lo, hi in spans)
    print(f"| run | iterations | flow αL L-form | αL re-weighted | αL samples per AIS batch, {span} (batches with any) "
          f"| αL weight share of AIS batches, same windows (batches > 1 %) |")
    print("|---|---|---|---|---|---|")
    for d in args:
        if d not in runs:
            print(f"| {d.rstrip('/')} | (no metrics.jsonl) | | | | |")
            continue
        rows = runs[d]
        train = [r for r in rows if r.get("kind") == "train" and "ais_alpha_l_fraction" in r]
        # The AIS batch is the training batch: its size comes from the resolved config.
        with open(os.path.join(d, "config.toml"), "rb") as f:
            batch = tomllib.load(f)["train"]["batch_size"]
        final = os.path.join(d, "final_metrics.json")
        if os.path.exists(final):
            m = json.load(open(final))
            flow = f"{100 * m['basin_alpha_l_flow_l_form']:.3f} %"
            rew = f"{100 * m['basin_alpha_l_flow_reweighted']:.3f} %"
        else:
            flow = rew = "(running)"
        last = train[-1]["iteration"] if train else 0
        print(f"| {d.rstrip('/')} | {last} | {flow} | {rew} | {windows(train, 'ais_alpha_l_fraction', batch, 0, spans)} "
              f"| {windows(train, 'ais_alpha_l_weight', 1.0, 0.01, spans)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
