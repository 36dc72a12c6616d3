"""Single-thread matrix-product rates of torch (MKL on x86) at the Many Well conditioner shapes,
the counterpart of `cargo run --release -p fab-flows --example gemm_probe` (docs/PERFORMANCE.md).

    taskset -c 1 PYTHON benches/vs-torch/torch_gemm.py

Median of 5 timings of 20 products each, after 3 warm-up products.
"""
import time, torch
torch.set_num_threads(1)
for (m,k,n,ta,tb) in [(2048,320,320,False,True),(2048,320,320,False,False),(320,2048,320,True,False)]:
    for dt in (torch.float64, torch.float32):
        a = torch.randn(k,m,dtype=dt).T if ta else torch.randn(m,k,dtype=dt)
        b = torch.randn(n,k,dtype=dt).T if tb else torch.randn(k,n,dtype=dt)
        for _ in range(3): c = a@b
        ts=[]
        for _ in range(5):
            t=time.perf_counter()
            for _ in range(20): c=a@b
            ts.append((time.perf_counter()-t)/20)
        ts.sort(); d=ts[2]
        print(f"torch {str(dt)[6:]} {m}x{k}x{n} ta={ta} tb={tb}: {d*1e3:.3f} ms, {2*m*k*n/d/1e9:.1f} GFLOP/s")
