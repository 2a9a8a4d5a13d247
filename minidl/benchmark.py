"""LeNet-5 throughput on the current backend, against PyTorch where importable.

    python -m minidl.benchmark                 # NumPy, batches 8, 32 and 128, with and without BN
    python -m minidl.benchmark --backend cupy  # on the GPU, against PyTorch CUDA where it has one
    python -m minidl.benchmark --repeats 5 --batch-sizes 128 --threads 2

Prints images/s (min / median / max over repeats) for a training step
(forward, backward, SGD update) and for inference, and the ratio to PyTorch
measured in the same run. Each library runs its repeats in one block: when
they alternate, each one's idle BLAS/OpenMP threads spin while the other
works, and on 2 cores that halves PyTorch's inference speed (measured).
On a GPU every timed block starts and ends with a device synchronization
(work is queued asynchronously: without it the clock stops before the GPU
does). Also the peak memory of one batch-1000 training step (CPU).
"""
import argparse
import os
import statistics
import time
import tracemalloc

import numpy as np

import minidl as md
import minidl.functional as F


def _rates(step, batch, repeats, iters, synchronize):
    step()   # warm-up
    rates = []
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        synchronize()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return min(rates), statistics.median(rates), max(rates)


def minidl_steps(batch, norm):
    md.manual_seed(0)
    model = md.models.LeNet5(norm=norm)
    opt = md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = md.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = md.Tensor(rng.integers(0, 10, batch))

    def train():
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with md.no_grad():
            model(x)
    return train, infer


def torch_steps(batch, norm, device="cpu"):
    import torch
    torch.manual_seed(0)
    bn = (lambda c, d: [torch.nn.BatchNorm2d(c) if d == 4 else torch.nn.BatchNorm1d(c)]) \
        if norm == "batch" else (lambda c, d: [])
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 5), *bn(6, 4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), *bn(16, 4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(400, 120), *bn(120, 2), torch.nn.ReLU(),
        torch.nn.Linear(120, 84), *bn(84, 2), torch.nn.ReLU(), torch.nn.Linear(84, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)

    def train():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x)
    return train, infer


def peak_memory_mb(batch=1000):
    train, _ = minidl_steps(batch, "batch")
    tracemalloc.start()   # NumPy reports its buffers to tracemalloc
    train()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                   help="default: the current one (MINIDL_BACKEND)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=5, help="steps per repeat")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: its own)")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    if args.backend:
        md.use_backend(args.backend)
    gpu = md.get_backend() == "cupy"

    try:
        if args.no_torch:
            raise ImportError
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        if gpu and not torch.cuda.is_available():
            raise ImportError
        have_torch = True
    except ImportError:
        have_torch = False
    torch_device = "cuda" if gpu else "cpu"
    torch_sync = (lambda: torch.cuda.synchronize()) if have_torch and gpu else (lambda: None)
    print(f"backend {md.get_backend()}, {os.cpu_count()} CPU cores, numpy {np.__version__}"
          + (f", torch {torch.__version__} on {torch_device} ({torch.get_num_threads()} threads)"
             if have_torch else ", PyTorch (CUDA, for the GPU) not importable: no ratio"))
    print(f"method: {args.repeats} repeats of {args.iters} steps after one warm-up step, in one "
          "process; each library runs its repeats in one block"
          + ("; the GPU synchronized around every timed block" if gpu else ""))
    print(f"{'model':<14}{'batch':>6} {'mode':<6}{'minidl img/s min/med/max':>30}"
          + (f"{'torch img/s med':>18}{'ratio':>8}" if have_torch else ""))
    for norm in (None, "batch"):
        for batch in args.batch_sizes:
            ours = minidl_steps(batch, norm)
            theirs = torch_steps(batch, norm, torch_device) if have_torch else (None, None)
            for mode, a, b in (("train", ours[0], theirs[0]), ("infer", ours[1], theirs[1])):
                r = _rates(a, batch, args.repeats, args.iters, md.backend.synchronize)
                line = (f"{'LeNet5' + ('+BN' if norm else ''):<14}{batch:>6} {mode:<6}"
                        f"{r[0]:>10.0f}{r[1]:>10.0f}{r[2]:>10.0f}")
                if have_torch:
                    t = _rates(b, batch, args.repeats, args.iters, torch_sync)
                    line += f"{t[1]:>18.0f}{r[1] / t[1]:>8.2f}x"
                print(line, flush=True)
    if md.get_backend() == "numpy":
        print(f"peak memory of one LeNet5+BN training step at batch 1000: {peak_memory_mb():.0f} MB "
              f"(im2col built in pieces of at most {md.ops.conv.COL_BYTES // 2**20} MB)")


if __name__ == "__main__":
    main()
