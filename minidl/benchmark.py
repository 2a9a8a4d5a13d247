"""LeNet-5 throughput on the current backend, against PyTorch where importable.

    python -m minidl.benchmark                 # NumPy, batches 8, 32 and 128, with and without BN
    python -m minidl.benchmark --backend cupy  # on the GPU, against PyTorch CUDA where it has one
    python -m minidl.benchmark --rounds 7 --batch-sizes 128 --threads 1 2
    python -m minidl.benchmark --input 1x28x28  # the lessons' MNIST shape
    python -m minidl.benchmark --ops --block-rows 0 24   # per-op CPU time, row blocking off / on
    python -m minidl.benchmark --ops --threads 1 2       # per-op time on 1 and 2 threads
    python -m minidl.benchmark --ops --threads 2 --grain 1 4194304   # every region shared out / the grain
    python -m minidl.benchmark --threads 2 --pieces 2  # minidl's network as md.nn.SplitBatch(model, 2)
    python -m minidl.benchmark --ceiling       # what 2 threads can give one step, against 2 processes

Prints images/s (median over rounds) for a training step (forward, backward,
SGD with momentum) and for inference on CIFAR-shaped input (``--input``), the ratio to
PyTorch, at every thread count (``--threads``; by default 1, 2, 4, ... and the
cores this process may use): one minidl process with ``md.set_num_threads(n)``
against PyTorch with ``torch.set_num_threads(n)``. Then the peak memory of one
batch-1000 training step with BN and, on the CPU, what a user gets from the
whole machine: one minidl process per core training at once (as the lessons
run their independent models, one thread each) against PyTorch on all cores
(``--no-cores`` skips it).

``--ops`` times each op's forward and backward inside minidl's own training
step (CPU time, median over ``--rounds``; no PyTorch), and the step's wall
time. With ``--block-rows`` it switches the convolutions' row blocking
(``minidl.ops.row_blocking.BLOCK_ROWS``; 0 is off), with ``--threads`` the
number of threads, with ``--grain`` the bytes of data a region needs for each
thread it takes (``minidl.backend.GRAIN_BYTES``; 1 shares every region out),
between settings step by step in the one process. Between
processes, and between runs of one process, a step's time drifts by 10 % and
more on a shared machine; alternating inside one process resolves a few per
cent. On n threads an op's CPU time is the sum over its threads: compare the
wall time of the step.

How it measures. Each library runs in its own worker process, and the rounds
alternate: minidl, PyTorch, minidl, ... for every setting. In one process the
two libraries slow each other: after every parallel region PyTorch's OpenMP
threads spin for a while, waiting for more work, and on 2 cores they take a
core from NumPy (measured: minidl 25 % slower beside them). Alternating rounds
spreads any drift of the machine (other jobs, clock) over both libraries, and
a pause before each round lets the other worker's threads fall asleep.
A round is one untimed step, then ``--iters`` timed steps; the ratio is the
median of the per-round ratios. On a GPU every round starts and ends with a
device synchronization (work is queued asynchronously: without it the clock
stops before the GPU does).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np

# Before each round: OpenBLAS's idle threads keep spinning for about 0.1 s after
# a product (measured with os.times); with a 0.05 s pause PyTorch measured half
# its speed alone, with 0.3 s the same as alone (14k img/s at batch 128).
PAUSE_S = 0.3


# ---- the two workloads ------------------------------------------------------
INPUTS = {"3x32x32": (3, 32), "1x28x28": (1, 28)}     # (channels, size): CIFAR, MNIST


def minidl_steps(batch, norm, image="3x32x32", pieces=None):
    """(train, infer) step functions of a LeNet-5 on one batch; with ``pieces``,
    the network runs as md.nn.SplitBatch(model, pieces)."""
    import minidl as md
    import minidl.functional as F
    md.manual_seed(0)
    channels, size = INPUTS[image]
    net = md.models.LeNet5(in_channels=channels, input_size=size, norm=norm)
    model = md.nn.SplitBatch(net, pieces) if pieces else net
    opt = md.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = md.Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
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


def torch_steps(batch, norm, image="3x32x32", device="cpu"):
    import torch
    torch.manual_seed(0)
    channels, size = INPUTS[image]
    bn = (lambda c, d: [torch.nn.BatchNorm2d(c) if d == 4 else torch.nn.BatchNorm1d(c)]) \
        if norm == "batch" else (lambda c, d: [])
    model = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 6, 5, padding=(32 - size) // 2), *bn(6, 4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), *bn(16, 4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(400, 120), *bn(120, 2), torch.nn.ReLU(),
        torch.nn.Linear(120, 84), *bn(84, 2), torch.nn.ReLU(), torch.nn.Linear(84, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, channels, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

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


# ---- per-op times inside one process ----------------------------------------
def op_times(batch, norm, image, settings, rounds, iters):
    """{setting: {op.forward / op.backward / step / wall: [seconds per step, one per round]}}
    (CPU time, the step's wall time as "wall"), the ``settings`` alternating step
    by step (their order reversed every other round). A setting is a pair
    (BLOCK_ROWS of the convolutions, 0 for none; the number of threads), or a
    triple with backend.GRAIN_BYTES third."""
    import minidl as md
    from minidl.ops import row_blocking
    from minidl.tensor import Function
    spent = {}

    def timed(method, name):
        def wrapper(self, *args, **kwargs):
            t0 = time.process_time()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t0
        return wrapper

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    originals = [(cls, m, cls.__dict__[m]) for cls in set(subclasses(Function))
                 for m in ("forward", "backward") if m in cls.__dict__]
    for cls, m, method in originals:
        setattr(cls, m, timed(method, f"{cls.__name__}.{m}"))
    from minidl import backend as engine
    backend = md.get_backend()
    saved = row_blocking.BLOCK_ROWS[backend], md.get_num_threads(), engine.GRAIN_BYTES
    times = {setting: {} for setting in settings}
    try:
        train, _ = minidl_steps(batch, norm, image)
        for r in range(rounds):
            for setting in (settings if r % 2 == 0 else settings[::-1]):
                rows, threads, *grain = setting
                row_blocking.BLOCK_ROWS[backend] = rows or None
                md.set_num_threads(threads)
                engine.GRAIN_BYTES = grain[0] if grain else saved[2]
                train()              # untimed: the first step after the other setting
                spent.clear()
                t0, w0 = time.process_time(), time.perf_counter()
                for _ in range(iters):
                    train()
                spent["step"], spent["wall"] = time.process_time() - t0, time.perf_counter() - w0
                for name, seconds in spent.items():
                    times[setting].setdefault(name, []).append(seconds / iters)
    finally:
        row_blocking.BLOCK_ROWS[backend] = saved[0]
        md.set_num_threads(saved[1])
        engine.GRAIN_BYTES = saved[2]
        for cls, m, method in originals:
            setattr(cls, m, method)
    return times


def print_op_times(args, backend):
    import minidl as md
    from minidl.ops import row_blocking
    rows = args.block_rows or [row_blocking.BLOCK_ROWS[backend] or 0]
    threads = args.threads or [md.get_num_threads()]
    grains = args.grain or [md.backend.GRAIN_BYTES]
    settings = [(r, t, g) for r in rows for t in threads for g in grains]
    label = lambda r, t, g: " ".join(([f"rows {r}"] if args.block_rows else []) +   # noqa: E731
                                     ([f"{t} threads"] if args.threads else []) +
                                     ([f"grain {_size(g)}"] if args.grain else [])) or "ms"
    alternating = [what for what, given in (("the convolutions' BLOCK_ROWS", args.block_rows),
                                            ("the threads", args.threads), ("the grain", args.grain)) if given]
    print(f"backend {backend}, numpy {np.__version__}, BLAS threads: "
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'BLAS default')} (one inside minidl's ops); per-op CPU "
          f"time of a training step and the step's wall time, ms, median of {args.rounds} rounds of {args.iters} steps"
          + (f"; {' and '.join(alternating)} alternating step by step: "
             f"{', '.join(label(*s) for s in settings)}" if alternating else ""))
    for norm in (None, "batch"):
        for batch in args.batch_sizes:
            times = op_times(batch, norm, args.input, settings, args.rounds, args.iters)
            first = times[settings[0]]
            names = ["wall", "step"] + sorted((n for n in first if n not in ("step", "wall")),
                                              key=lambda n: -statistics.median(first[n]))
            print(f"\nLeNet5{'+BN' if norm else ''}, batch {batch}, input {args.input}")
            width = max(18, 2 + max(len(label(*s)) for s in settings))
            print(f"{'':<24}" + "".join(f"{label(*s):>{width}}" for s in settings))
            for name in names:
                print(f"{'step, wall' if name == 'wall' else name:<24}" +
                      "".join(f"{statistics.median(times[s].get(name, [0.0])) * 1e3:>{width}.2f}" for s in settings))


def _size(nbytes):
    return f"{nbytes >> 20} MB" if nbytes >= 1 << 20 and nbytes % (1 << 20) == 0 else f"{nbytes} B"


# ---- a worker: one library, one process -------------------------------------
def worker(library, backend):
    """Answer requests on stdin, one JSON line each, with one JSON line on stdout."""
    gpu = backend == "cupy"
    if library == "minidl":
        import minidl as md
        md.use_backend(backend)
        make, sync, set_threads = minidl_steps, md.backend.synchronize, md.set_num_threads
        info = {"blas": os.environ.get("OPENBLAS_NUM_THREADS", "BLAS default"), "threads": md.get_num_threads()}
    else:
        import torch
        if gpu and not torch.cuda.is_available():
            raise SystemExit("PyTorch has no CUDA here")
        make = lambda b, n, i: torch_steps(b, n, i, "cuda" if gpu else "cpu")   # noqa: E731
        sync = torch.cuda.synchronize if gpu else (lambda: None)
        set_threads = torch.set_num_threads
        info = {"threads": torch.get_num_threads(), "version": torch.__version__}
    print(json.dumps(info), flush=True)
    steps = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("threads"):
            set_threads(req["threads"])
        if req["what"] == "memory":
            print(json.dumps({"mb": peak_memory_mb(req["batch"])}), flush=True)
            continue
        split = req.get("split", 1)     # models side by side, one thread and 1/split of the batch each
        key = (req["batch"] // split, req["norm"], req["input"]) + ((req["pieces"],) if req.get("pieces") else ())
        if (key, split) not in steps:
            steps[key, split] = [make(*key) for _ in range(split)]
        run = [s[0 if req["mode"] == "train" else 1] for s in steps[key, split]]
        side_by_side(run, 1)   # untimed: the first step after the other library ran
        sync()
        t0 = time.perf_counter()
        side_by_side(run, req["iters"])
        sync()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def side_by_side(steps, iters):
    """Each step function ``iters`` times, each in a thread of its own (the
    first in this one): independent models training at once, nothing shared."""
    errors = []

    def loop(step):
        try:
            for _ in range(iters):
                step()
        except BaseException as e:      # a side thread's error ends the request, as the first one's would
            errors.append(e)
    others = [threading.Thread(target=loop, args=(step,)) for step in steps[1:]]
    for t in others:
        t.start()
    loop(steps[0])
    for t in others:
        t.join()
    if errors:
        raise errors[0]


class Worker:
    def __init__(self, library, backend, threads=None, blas_threads=None):
        cmd = [sys.executable, "-m", "minidl.benchmark", "--worker", library, "--backend", backend]
        env = dict(os.environ)
        if blas_threads:      # set before NumPy loads in the worker: the only time it takes effect
            env.update({k: str(blas_threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        first = self.proc.stdout.readline()
        if not first:
            self.proc.wait()
            raise RuntimeError(f"benchmark: the {library} worker did not start")
        self.info = json.loads(first)
        self.threads = threads        # sent with every request: the worker sets it before the round

    def send(self, **req):
        req.setdefault("threads", self.threads)
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()

    def receive(self):
        return json.loads(self.proc.stdout.readline())

    def ask(self, **req):
        self.send(**req)
        return self.receive()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                   help="default: MINIDL_BACKEND, else numpy")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--input", choices=sorted(INPUTS), default="3x32x32",
                   help="image shape: CIFAR's (default) or the lessons' MNIST")
    p.add_argument("--rounds", type=int, default=7, help="rounds per library and setting")
    p.add_argument("--iters", type=int, default=5, help="timed steps per round")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts, each for both libraries (default: 1, 2, 4, ... and the cores); "
                        "with --ops: the counts to alternate")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-cores", action="store_true", help="skip the every-core comparison")
    p.add_argument("--memory-batch", type=int, default=1000,
                   help="batch of the training step whose peak memory is measured")
    p.add_argument("--ops", action="store_true",
                   help="per-op CPU time inside minidl's training step, in this process (no PyTorch)")
    p.add_argument("--block-rows", type=int, nargs="+", default=None,
                   help="with --ops: the convolutions' BLOCK_ROWS settings to alternate (0: no row blocking)")
    p.add_argument("--grain", type=int, nargs="+", default=None,
                   help="with --ops: backend.GRAIN_BYTES settings to alternate (1: every region shared out)")
    p.add_argument("--pieces", type=int, default=None,
                   help="minidl's network as md.nn.SplitBatch(model, PIECES): each thread a piece of the batch")
    p.add_argument("--ceiling", action="store_true",
                   help="what n threads can give one training step at most, against n processes and PyTorch")
    p.add_argument("--worker", choices=["minidl", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    backend = args.backend or os.environ.get("MINIDL_BACKEND", "numpy")
    if args.worker:
        return worker(args.worker, backend)
    if args.pieces is not None and (args.pieces < 1 or args.ops or args.ceiling):
        p.error(f"--pieces takes a positive count and goes without --ops and --ceiling, got {args.pieces}")
    if args.ceiling and (args.ops or backend != "numpy"):
        p.error("--ceiling measures the CPU's threads: it goes without --ops, on NumPy")
    if args.block_rows and not args.ops:
        p.error("--block-rows goes with --ops")
    if args.grain and (not args.ops or min(args.grain) < 1):
        p.error(f"--grain goes with --ops and takes positive byte counts, got {args.grain}")
    if args.threads and min(args.threads) < 1:
        p.error(f"--threads: expected positive counts, got {args.threads}")
    if args.ops:
        import minidl as md
        md.use_backend(backend)
        return print_op_times(args, backend)
    if args.ceiling:
        return ceiling(args, backend)

    ours, theirs = Worker("minidl", backend), torch_worker(args, backend)
    gpu = backend == "cupy"
    counts = [None] if gpu else args.threads or thread_counts()
    print(f"backend {backend}, {cores()} CPU cores, numpy {np.__version__} "
          f"(BLAS threads: {ours.info['blas']}, one inside minidl's ops)"
          + (f", torch {theirs.info['version']}" if theirs
             else ", PyTorch not importable" + (" with CUDA" if gpu else "") + ": no ratio"))
    if args.pieces:
        print(f"minidl's network runs as md.nn.SplitBatch(model, {args.pieces}): a piece of each batch per thread")
    print(f"input {args.input}; method: each library in its own process, at each thread count "
          f"(md.set_num_threads, torch.set_num_threads); {args.rounds} alternating rounds per setting, "
          f"each one untimed step then {args.iters} timed steps"
          + ("; the GPU synchronized around every round" if gpu else ""))
    print(f"{'model':<14}{'batch':>6} {'mode':<6}{'threads':>8}{'minidl img/s':>14}"
          + (f"{'torch img/s':>13}{'ratio':>8}" if theirs else ""))
    for norm in (None, "batch"):
        for batch in args.batch_sizes:
            for mode in ("train", "infer"):
                for threads in counts:
                    req = dict(what="rate", batch=batch, norm=norm, mode=mode, iters=args.iters,
                               input=args.input, threads=threads)
                    a, b = [], []
                    for _ in range(args.rounds):
                        for worker_, rates in ((ours, a), (theirs, b)):
                            if worker_ is not None:
                                time.sleep(PAUSE_S)
                                extra = {"pieces": args.pieces} if worker_ is ours and args.pieces else {}
                                rates.append(batch * args.iters / worker_.ask(**req, **extra)["seconds"])
                    line = (f"{'LeNet5' + ('+BN' if norm else ''):<14}{batch:>6} {mode:<6}{threads or '-':>8}"
                            f"{statistics.median(a):>14.0f}")
                    if theirs:
                        ratio = statistics.median(x / y for x, y in zip(a, b))
                        line += f"{statistics.median(b):>13.0f}{ratio:>7.2f}x"
                    print(line, flush=True)
    if not gpu:
        import minidl as md
        print(f"peak memory of one LeNet5+BN training step at batch {args.memory_batch}: "
              f"{ours.ask(what='memory', batch=args.memory_batch)['mb']:.0f} MB "
              f"(im2col built in pieces of at most {max(md.ops.conv.COL_BYTES[backend], md.ops.conv.CACHE_BYTES[backend]) / 2**20:g} MB)")
    for w in (ours, theirs):
        if w is not None:
            w.close()
    if not gpu and not args.no_cores:
        every_core(args, backend, not args.no_torch and theirs is not None, max(args.batch_sizes))


def torch_worker(args, backend):
    """PyTorch's worker, or None where --no-torch or PyTorch does not start."""
    if args.no_torch:
        return None
    try:
        return Worker("torch", backend)
    except RuntimeError:
        return None


def ceiling(args, backend):
    """How much n threads can give one minidl training step at most, on this
    machine, against what n processes give and what PyTorch's n threads give.
    Every figure is a speed-up over one minidl thread training the whole batch:

    - "n threads": md.set_num_threads(n), the ops' own pieces on the pool;
    - "n threads, SplitBatch(n)": the network as md.nn.SplitBatch(model, n), each
      thread a piece of the batch for the whole step, BatchNorm's sums shared;
    - "n threads, 1/n batch": n independent models in one process, each on 1/n
      of the batch in a thread of its own, sharing nothing: no op splits, no
      barrier, no gradient to sum. Sharing one step among n threads of one
      process does not beat it with these ops; the GIL and the smaller products
      hold it back;
    - "n processes, 1/n batch": the same models in n processes, each with its
      own GIL: what the cores give without it;
    - "to equal torch": PyTorch's n-thread rate over minidl's one-thread rate,
      the speed-up minidl's n threads need to train as fast as PyTorch's.

    Rounds alternate every setting, each after a pause; figures are medians of
    the per-round ratios."""
    n = max(args.threads) if args.threads else cores()
    if n < 2:
        raise SystemExit(f"benchmark --ceiling: needs at least 2 threads, got {n} (--threads, or the cores)")
    ours, theirs = Worker("minidl", backend), torch_worker(args, backend)
    crowd = [Worker("minidl", backend, 1, blas_threads=1) for _ in range(n)]
    print(f"ceiling: one training step on {n} threads, input {args.input}, {cores()} cores; speed-ups over "
          f"one minidl thread on the whole batch, medians of {args.rounds} alternating rounds of "
          f"{args.iters} steps" + ("" if theirs else "; PyTorch not importable"))
    head = ["minidl 1 thread img/s", f"{n} threads", f"{n} threads, SplitBatch({n})", f"{n} threads, 1/{n} batch",
            f"{n} processes, 1/{n} batch"] + (["torch 1 thread", f"torch {n} threads", "to equal torch"] if theirs else [])
    print(f"{'model':<11}{'batch':>6}" + "".join(f"{h:>{len(h) + 3}}" for h in head))
    for norm in (None, "batch"):
        for batch in args.batch_sizes:
            if batch % n or batch // n < 2:
                raise SystemExit(f"benchmark --ceiling: batch {batch} does not split into {n} parts of 2 or more")
            req = dict(what="rate", norm=norm, mode="train", iters=args.iters, input=args.input)
            rows = {k: [] for k in ("one", "ops", "pieces", "split", "procs", "t1", "tn")}
            for _ in range(args.rounds):
                def timed(key, ask, images):
                    time.sleep(PAUSE_S)
                    rows[key].append(images * args.iters / ask())
                timed("one", lambda: ours.ask(batch=batch, threads=1, **req)["seconds"], batch)
                timed("ops", lambda: ours.ask(batch=batch, threads=n, **req)["seconds"], batch)
                timed("pieces", lambda: ours.ask(batch=batch, threads=n, pieces=n, **req)["seconds"], batch)
                timed("split", lambda: ours.ask(batch=batch, threads=1, split=n, **req)["seconds"], batch)

                def processes():                 # all at once: each on its own core
                    for w in crowd:
                        w.send(batch=batch // n, **req)
                    return max(w.receive()["seconds"] for w in crowd)
                timed("procs", processes, batch)
                if theirs:
                    timed("t1", lambda: theirs.ask(batch=batch, threads=1, **req)["seconds"], batch)
                    timed("tn", lambda: theirs.ask(batch=batch, threads=n, **req)["seconds"], batch)
            med = statistics.median
            up = lambda key: med(a / b for a, b in zip(rows[key], rows["one"]))    # noqa: E731
            cells = [f"{med(rows['one']):.0f}"] + [f"{up(k):.2f}x" for k in ("ops", "pieces", "split", "procs")]
            if theirs:
                cells += [f"{med(rows['t1']):.0f}", f"{med(rows['tn']):.0f}", f"{up('tn'):.2f}x"]
            print(f"{'LeNet5' + ('+BN' if norm else ''):<11}{batch:>6}"
                  + "".join(f"{c:>{len(h) + 3}}" for c, h in zip(cells, head)), flush=True)
    for w in [ours, theirs] + crowd:
        if w is not None:
            w.close()


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def thread_counts():
    """1, 2, 4, ... below the cores, and the cores."""
    counts = [1]
    while counts[-1] * 2 < cores():
        counts.append(counts[-1] * 2)
    return counts + [cores()] if cores() > 1 else counts


def every_core(args, backend, with_torch, batch):
    """What a user gets from the whole machine: one minidl training process, core
    for core against PyTorch on one thread, and the aggregate images/s of one
    minidl process per core running at once (as the lessons' runs do) against
    PyTorch's one process on all its threads."""
    n = cores()
    one = Worker("minidl", backend, 1, blas_threads=1)
    crowd = [one] + [Worker("minidl", backend, 1, blas_threads=1) for _ in range(n - 1)]
    torch_one = Worker("torch", backend, 1) if with_torch else None
    torch_all = Worker("torch", backend, n) if with_torch else None
    print(f"\nevery core: training at batch {batch}, input {args.input}; minidl with 1 BLAS thread per process "
          f"and 1 thread for its ops, {n} cores")
    print(f"{'model':<14}{'minidl, 1 process':>19}{'torch, 1 thread':>17}{'core for core':>15}"
          f"{f'minidl, {n} processes':>22}{f'torch, {n} threads':>19}{'aggregate':>11}")
    rate = lambda reply: batch * args.iters / reply["seconds"]             # noqa: E731
    for norm in (None, "batch"):
        req = dict(what="rate", batch=batch, norm=norm, mode="train", iters=args.iters,
                   input=args.input)
        solo, t1, crowd_total, tn = [], [], [], []
        for _ in range(args.rounds):
            time.sleep(PAUSE_S)
            solo.append(rate(one.ask(**req)))
            time.sleep(PAUSE_S)
            for w in crowd:                 # all at once: each process on its own core
                w.send(**req)
            crowd_total.append(sum(rate(w.receive()) for w in crowd))
            if with_torch:
                time.sleep(PAUSE_S)
                t1.append(rate(torch_one.ask(**req)))
                time.sleep(PAUSE_S)
                tn.append(rate(torch_all.ask(**req)))
        med = statistics.median
        line = f"{'LeNet5' + ('+BN' if norm else ''):<14}{med(solo):>19.0f}"
        line += (f"{med(t1):>17.0f}{med(a / b for a, b in zip(solo, t1)):>14.2f}x" if with_torch else f"{'':>32}")
        line += f"{med(crowd_total):>22.0f}"
        line += (f"{med(tn):>19.0f}{med(a / b for a, b in zip(crowd_total, tn)):>10.2f}x" if with_torch else "")
        print(line, flush=True)
    for w in crowd + [torch_one, torch_all]:
        if w is not None:
            w.close()


if __name__ == "__main__":
    main()
