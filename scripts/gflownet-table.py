#!/usr/bin/env python3
"""Table of the gridworld protocol's final metrics: scripts/gflownet-table.py OUT_DIR [OUT_DIR…]
(run directories named CONFIG-dD-HH-sS, as scripts/gflownet-protocol.sh writes them)."""
import json, os, re, statistics, sys

rows = {}
for out in sys.argv[1:]:
    for name in sorted(os.listdir(out)):
        m = re.match(r"(.+)-d(\d+)-H(\d+)-s(\d+)$", name)
        d = os.path.join(out, name)
        f = os.path.join(d, "final_metrics.json")
        if not m or not os.path.exists(f):
            continue
        fm = json.load(open(f))
        # Wall time of the whole run (training, evaluations, checkpoints, plots).
        fm["_wall"] = os.path.getmtime(f) - os.path.getmtime(os.path.join(d, "config.toml"))
        rows.setdefault((int(m[2]), int(m[3]), m[1]), []).append(fm)


def ms(xs, fmt):
    if len(xs) == 1:
        return fmt.format(xs[0])
    return (fmt + " ± " + fmt).format(statistics.mean(xs), statistics.stdev(xs))


print("| d | H | config | seeds | exact L1 (mean conv.) | eval empirical L1 | student mass on goals | goals found (per seed) | reward calls to all goals | wall s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (d, h, cfg), fms in sorted(rows.items()):
    calls = "/".join("—" if x.get("reward_calls_all_goals") is None else f"{int(x['reward_calls_all_goals'])}" for x in fms)
    goals = "/".join(f"{int(x['n_goals_found'])}" for x in fms)
    target_mass = fms[0]["target_mode_mass"]
    print(
        f"| {d} | {h} | {cfg} | {len(fms)} | {ms([x['exact_l1'] for x in fms], '{:.2e}')} | "
        f"{ms([x['eval_empirical_l1'] for x in fms], '{:.2e}')} | {ms([x['exact_mode_mass'] for x in fms], '{:.3f}')} (target {target_mass:.3f}) | "
        f"{goals} of {int(fms[0]['n_goals'])} | {calls} | {max(x['_wall'] for x in fms):.0f} |"
    )
