#!/usr/bin/env python3
"""What an alanine-dipeptide FAB run's replay buffer holds in the rare αL basin, checkpoint by
checkpoint (needs NumPy).

usage: scripts/aldp-buffer-basin.py RUN_DIR [RUN_DIR …]

For every `checkpoints/iter_N/buffer.safetensors` of each run: the share of the buffer's filled
entries in αL (0 < φ < 2.2) by count and by weight (the buffer is drawn ∝ w, so the weight share
is what the flow is trained on; docs/ALGORITHMS.md, "Replay buffer"), and the share of αL's
entries and of αL's weight at the basin's edge toward φ = 0 (0 ≤ φ < 0.59, the first two φ
strips of aldp-alpha-l-profile.py), with the number of edge entries. The reference puts
0.240 % of all mass in αL and 11.7 % of αL's at the edge. φ is read from flow coordinate 17:
φ = φ_min − z₁₇ with φ_min = −2.5450 rad (docs/ALGORITHMS.md, "Flow-space target"). Weight shares
of a few hundred entries are dominated by their largest weights; read them as snapshots.
Then, from each run's `metrics.jsonl`, the AIS over each 1 000 iterations: the HMC step size and
acceptance of the first and last intermediate distribution and αL's share of the AIS samples.
"""
import glob
import json
import struct
import sys

import numpy as np

PHI_MIN = -2.5450
EDGE = 2 * 3 * 2 * np.pi / 64  # two strips of three 64-bin histogram bins


def read_buffer(path):
    """The flow coordinates x [n, 60] and log weights of a buffer checkpoint's filled entries."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        arrays = {}
        for key in ("x", "log_w"):
            meta = header[key]
            if meta["dtype"] != "F64":
                sys.exit(f"aldp-buffer-basin: {path}: {key} is {meta['dtype']}, expected F64")
            start, end = meta["data_offsets"]
            f.seek(8 + n + start)
            arrays[key] = np.frombuffer(f.read(end - start), dtype="<f8").reshape(meta["shape"])
    filled = np.isfinite(arrays["log_w"]) & np.isfinite(arrays["x"]).all(axis=1)
    return arrays["x"][filled], arrays["log_w"][filled]


def main(runs):
    print("run  iteration  entries  αL count %  αL weight %  edge / αL count %  edge / αL weight %  edge entries")
    for run in runs:
        paths = sorted(glob.glob(f"{run}/checkpoints/iter_*/buffer.safetensors"))
        if not paths:
            sys.exit(f"aldp-buffer-basin: {run} holds no checkpoint with a buffer")
        for path in paths:
            x, log_w = read_buffer(path)
            phi = (PHI_MIN - x[:, 17] + np.pi) % (2 * np.pi) - np.pi
            w = np.exp(log_w - log_w.max())
            w /= w.sum()
            in_l = (phi > 0) & (phi < 2.2)
            edge = (phi >= 0) & (phi < EDGE)
            n_l = max(in_l.sum(), 1)
            w_l = max(w[in_l].sum(), 1e-300)
            iteration = int(path.split("iter_")[1].split("/")[0])
            print(
                f"{run.rstrip('/').rsplit('/', 1)[-1]}  {iteration:9d}  {len(w):7d}  {100 * in_l.mean():10.3f}  "
                f"{100 * w[in_l].sum():11.3f}  {100 * edge.sum() / n_l:17.1f}  {100 * w[edge].sum() / w_l:18.1f}  {edge.sum():12d}"
            )

    print("run  iterations  HMC step size first / last  acceptance first / last  αL share of AIS samples %")
    for run in runs:
        rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl") if '"kind":"train"' in line]
        it = np.array([r["iteration"] for r in rows])
        step = np.array([r["step_size_first_last"] for r in rows])
        accept = np.array([r["accept_first_last"] for r in rows])
        alpha_l = np.array([r.get("ais_alpha_l_fraction", np.nan) for r in rows])
        for a in range(0, int(it.max()), 1000):
            m = (it > a) & (it <= a + 1000)
            print(
                f"{run.rstrip('/').rsplit('/', 1)[-1]}  {a + 1:5d}–{min(a + 1000, it.max()):5d}  {step[m, 0].mean():.4f} / {step[m, 1].mean():.4f}  "
                f"{accept[m, 0].mean():.2f} / {accept[m, 1].mean():.2f}  {100 * alpha_l[m].mean():.3f}"
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
