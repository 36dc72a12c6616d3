#!/usr/bin/env python3
"""Table of the gridworld protocol's final metrics (scripts/gflownet-protocol.sh OUT_DIR)."""
import json, os, re, statistics, sys
out = sys.argv[1]
rows = {}
for name in sorted(os.listdir(out)):
    m = re.match(r"(.+)-d(\d+)-H(\d+)-s(\d+)$", name)
    f = os.path.join(out, name, "final_metrics.json")
    if not m or not os.path.exists(f):
        continue
    fm = json.load(open(f))
    rows.setdefault((int(m[2]), int(m[3]), m[1]), []).append(fm)
print("| d | H | config | seeds | exact L1 (mean conv.) | eval empirical L1 | goals found | reward calls to all goals | train s |")
print("|---|---|---|---|---|---|---|---|---|")
for (d, h, cfg), ms in sorted(rows.items()):
    f = lambda k: statistics.mean(x[k] for x in ms)
    calls = [x.get("reward_calls_all_goals") for x in ms]
    calls_s = "/".join("—" if c is None else f"{int(c)}" for c in calls)
    goals = "/".join(f"{int(x['n_goals_found'])}" for x in ms)
    print(f"| {d} | {h} | {cfg} | {len(ms)} | {f('exact_l1'):.3e} | {f('eval_empirical_l1'):.3e} | {goals} of {int(ms[0]['n_goals'])} | {calls_s} | {f('train_seconds'):.0f} |")
