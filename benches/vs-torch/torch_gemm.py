"""Single-thread matrix-product rates of torch (MKL on x86) at the Many Well conditioner shapes,
the counterpart of `cargo run --release -p fab-flows --example gemm_probe` (docs/PERFORMANCE.md).

    taskset -c 1 PYTHON benches/vs-torch/torch_gemm.py
    taskset -c 1 PYTHON benches/vs-torch/torch_gemm.py --flow-passes

Median of 5 timings of 20 products each, after 3 warm-up products. With `--flow-passes`, the
products of one pass of the Many Well flow (B 2048, 10 layers; the list of
`cargo run --release -p fab-flows --example peak_probe`), f64, summed per row.
"""
import sys, time, torch
torch.set_num_threads(1)


def time_product(m, k, n, ta, tb, dt, inner=20):
    a = torch.randn(k, m, dtype=dt).T if ta else torch.randn(m, k, dtype=dt)
    b = torch.randn(n, k, dtype=dt).T if tb else torch.randn(k, n, dtype=dt)
    for _ in range(3):
        c = a @ b
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(inner):
            c = a @ b
        ts.append((time.perf_counter() - t) / inner)
    ts.sort()
    return ts[2]


if "--flow-passes" in sys.argv:
    B = 2048
    fwd = [(B, 16, 320, False, True), (B, 320, 320, False, True), (B, 320, 32, False, True), (B, 32, 32, False, False)]
    gin = [(B, 32, 320, False, False), (B, 320, 320, False, False), (B, 320, 16, False, False), (B, 32, 32, False, True)]
    gw = [(32, B, 320, True, False), (320, B, 320, True, False), (320, B, 16, True, False), (32, B, 32, True, False)]
    sums = {}
    for name, lst in (("density pass", fwd), ("input gradients", gin), ("parameter gradients", gw)):
        s = f = 0.0
        for (m, k, n, ta, tb) in lst:
            d = time_product(m, k, n, ta, tb, torch.float64, inner=max(1, int(2e8 / (2 * m * k * n)) + 1))
            print(f"torch f64 {m}x{k}x{n} ta={ta} tb={tb}: {d*1e3:.3f} ms, {2*m*k*n/d/1e9:.1f} GFLOP/s")
            s += d
            f += 2 * m * k * n
        sums[name] = (10 * s, 10 * f)
    rows = [("flow log q + backward", ("density pass", "input gradients", "parameter gradients")),
            ("flow sample + log q", ("density pass",)),
            ("flow log q + ∇ₓ", ("density pass", "input gradients"))]
    for row, parts in rows:
        s = sum(sums[p][0] for p in parts)
        f = sum(sums[p][1] for p in parts)
        print(f"torch {row}: products alone {s*1e3:.1f} ms, {f/1e9:.2f} GFLOP, {f/s/1e9:.1f} GFLOP/s")
    sys.exit(0)

for (m, k, n, ta, tb) in [(2048, 320, 320, False, True), (2048, 320, 320, False, False), (320, 2048, 320, True, False)]:
    for dt in (torch.float64, torch.float32):
        d = time_product(m, k, n, ta, tb, dt)
        print(f"torch {str(dt)[6:]} {m}x{k}x{n} ta={ta} tb={tb}: {d*1e3:.3f} ms, {2*m*k*n/d/1e9:.1f} GFLOP/s")
