"""Array-module choice: the only file in minidl that imports CuPy.

Two words, each with one meaning: a *backend* is the array library new tensors
are made with, "numpy" or "cupy" (``use_backend``, ``MINIDL_BACKEND``); a
*device* is where one array lives, "cpu" or "gpu" (``tensor.to``,
``device_of``, ``to_device``). ``Function.__call__`` asks
``get_array_module`` once per op for the inputs' module and hands it to
``forward`` as ``self.xp``; everything an op creates is made with it. CuPy is
imported on first use, never at import time, and the random generator that
init, shuffling and dropout draw from (``manual_seed``) is NumPy's.

On the CPU the ops that take a real share of a training step (the
convolutions, pooling, BatchNorm) cut their work into pieces and run them on a
thread pool owned by this module (``set_num_threads``, ``parallel``).
"""
import concurrent.futures
import os
import threading

import numpy as np

BACKENDS = ("numpy", "cupy")
DEVICES = {"numpy": "cpu", "cupy": "gpu"}

_cupy = None          # the cupy module once imported successfully
_default = "numpy"    # backend that new tensors are created on

CUPY_INSTALL_HINT = (
    "Install the CuPy wheel that matches your CUDA toolkit, e.g. "
    "`pip install cupy-cuda12x` (CUDA 12) or `pip install cupy-cuda11x` (CUDA 11), "
    "or `pip install minidl[gpu]`; `nvidia-smi` shows the CUDA version."
)


class BackendError(RuntimeError):
    """CuPy was asked for but cannot be used here."""


class DeviceMismatchError(RuntimeError):
    """An op received arrays living on different devices."""


CTK_HINT = ("CuPy is installed but cannot compile its kernels: the CUDA libraries are missing. "
            "Install the wheel that brings them: `pip install \"cupy-cuda12x[ctk]\"` (or "
            "`pip install \"minidl[gpu]\"`), or install the CUDA toolkit.")


def _load_cupy():
    """Import CuPy and prove it can run one small kernel; three failures, three fixes."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as e:
        raise BackendError(f"the cupy backend needs CuPy, which is not installed ({e}). "
                           + CUPY_INSTALL_HINT) from None
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise BackendError(f"CuPy is installed but no usable GPU or driver was found ({e}). "
                           "Check `nvidia-smi`; on a machine without an NVIDIA GPU use the numpy "
                           "backend.") from None
    if n_gpus == 0:
        raise BackendError("CuPy is installed but no GPU is visible (check `nvidia-smi` and "
                           "CUDA_VISIBLE_DEVICES).")
    try:
        (cupy.arange(3, dtype=cupy.float32) * 2).sum().item()     # compiles and runs a kernel
    except Exception as e:
        raise BackendError(f"{CTK_HINT} ({type(e).__name__}: {e})") from None
    _cupy = cupy
    return cupy


def cupy_available():
    """True where CuPy imports and sees a GPU (used by tests to skip)."""
    try:
        _load_cupy()
        return True
    except BackendError:
        return False


def use_backend(name):
    """Choose where new tensors live: backend "numpy" (device "cpu") or "cupy" (device "gpu")."""
    global _default
    if name not in BACKENDS:
        hint = (f" ({name!r} is a device: tensor.to({name!r}) moves one tensor)"
                if name in DEVICES.values() else "")
        raise ValueError(f"use_backend: unknown backend {name!r}; expected one of {BACKENDS}{hint}")
    if name == "cupy":
        _load_cupy()
    _default = name


def get_backend():
    return _default


def default_module():
    """The array module new tensors are created with. With MINIDL_BACKEND=cupy
    where CuPy cannot run, this is where the error says why (import never fails)."""
    if _default not in BACKENDS:
        raise BackendError(f"MINIDL_BACKEND={_default!r}: expected one of {BACKENDS}")
    return _load_cupy() if _default == "cupy" else np


def default_device():
    """"cpu" or "gpu": where new tensors are made (the current backend's device)."""
    return "cpu" if default_module() is np else "gpu"


def get_array_module(*arrays):
    """numpy or cupy, whichever holds the given arrays (numpy for plain values)."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def module_name(xp):
    """"numpy" or "cupy": the backend name of an array module."""
    return "numpy" if xp is np else "cupy"


def device_of(array):
    """"cpu" for NumPy arrays and Python values, "gpu" for CuPy arrays."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return "gpu"
    return "cpu"


def canonical_device(device):
    """"cpu" or "gpu"; PyTorch's "cuda" (or "cuda:0") is accepted as "gpu"."""
    return "gpu" if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")) else device


def module_for(device):
    """The array module of a device: numpy for "cpu", cupy for "gpu" (alias "cuda")."""
    device = canonical_device(device)
    if device == "cpu":
        return np
    if device == "gpu":
        return _load_cupy()
    hint = (f" ({device!r} names a backend: devices are 'cpu' and 'gpu', backends 'numpy' and "
            "'cupy', chosen with md.use_backend)") if device in BACKENDS else ""
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'gpu' (or PyTorch's 'cuda'){hint}")


def to_device(array, device):
    """Copy ``array`` to "cpu" or "gpu" (no copy when it is already there)."""
    xp = module_for(device)
    if xp is np:
        return as_numpy(array)
    return xp.asarray(array)


def as_numpy(array):
    """A NumPy array, copied from the GPU where needed."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def check_same_device(op_name, *arrays):
    """Raise DeviceMismatchError naming the op and both devices."""
    devices = [device_of(a) for a in arrays]
    if len(set(devices)) > 1:
        raise DeviceMismatchError(
            f"{op_name}: inputs live on different devices ({', '.join(devices)}); "
            "move them together first with .to('cpu') or .to('gpu')")
    return devices[0] if devices else "cpu"


# The random generator behind init, shuffling and dropout (see manual_seed).
_rng = np.random.default_rng()


_seed = None
_device_rng = None


def manual_seed(seed):
    """Make init, data shuffling and dropout reproducible run to run. Dropout on
    the GPU draws its masks on the device from CuPy's generator seeded with the
    same seed: reproducible too, but a different stream from the CPU's."""
    global _rng, _seed, _device_rng
    _rng, _seed, _device_rng = np.random.default_rng(seed), seed, None


def rng():
    """minidl's generator (init, shuffling, dropout); inside a piece of
    nn.SplitBatch the piece's own, so its draws do not depend on which piece ran first."""
    return getattr(_piece, "rng", None) or _rng


def device_rng():
    """CuPy's generator, seeded by manual_seed (drawn on the device: no copies);
    inside a piece of nn.SplitBatch the piece's own."""
    global _device_rng
    if getattr(_piece, "seed", None) is not None:
        if getattr(_piece, "device_rng", None) is None:
            _piece.device_rng = _load_cupy().random.default_rng(_piece.seed)
        return _piece.device_rng
    if _device_rng is None:
        seed = None if _seed is None else int(np.random.SeedSequence(_seed).generate_state(1)[0])
        _device_rng = _load_cupy().random.default_rng(seed)
    return _device_rng


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (add.at on either device)."""
    get_array_module(target).add.at(target, index, values)


def synchronize():
    """Wait for the GPU to finish its queued work (a no-op on the CPU): timings need it."""
    if _cupy is not None:
        _cupy.cuda.runtime.deviceSynchronize()


# ---- checks that cost no synchronization -----------------------------------
# Reading a GPU value on the host (bool(), float(), .item()) waits for the device.
# A check that needs a value (is the loss finite? are the targets in range?) is
# made on the device and queued; check_pending() reads all of them at once, one
# synchronization per training step (the optimizer's step calls it). On the CPU
# nothing waits, so every check raises at once, where it was made.
_pending = []


def defer_check(failed, error, message):
    """Raise ``error(message)`` if ``failed`` (a 0-d boolean array) is true: now
    on the CPU, at the next ``check_pending()`` on the GPU."""
    if device_of(failed) == "cpu":
        if bool(failed):
            raise error(message)
    else:
        _pending.append((failed, error, message))
        if len(_pending) > 1024:          # nobody calls step(): do not grow without bound
            check_pending()


def check_pending():
    """Read every queued check in one synchronization; raise the first that failed."""
    if not _pending:
        return
    queued = list(_pending)
    _pending.clear()
    xp = get_array_module(queued[0][0])
    if bool(xp.stack([f for f, _, _ in queued]).any()):
        for failed, error, message in queued:
            if bool(failed):
                raise error(message)


# ---- threads ------------------------------------------------------------------
# PyTorch's names and meaning: the number of threads an op may use on the CPU.
# The pieces an op cuts its work into depend on the data's shape only, never on
# the number of threads: the threads only share the pieces out, and what is
# summed across pieces (a conv's dl/dW) is summed on the calling thread in the
# pieces' order. So a result is the same to the last bit on any number of
# threads. NumPy releases the GIL in its products and loops, where the work is.


def _default_threads():
    """OMP_NUM_THREADS where it is a positive integer (as PyTorch reads it), else
    the cores this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_num_threads = _default_threads()
_pool = None                    # (pid, threads, ThreadPoolExecutor), started on first use
_pool_lock = threading.Lock()
_inside = threading.local()     # a piece that calls parallel() again runs its pieces itself


def set_num_threads(n):
    """Let minidl's ops use ``n`` threads on the CPU (``torch.set_num_threads``).
    Results do not depend on ``n``; CuPy ignores it. A process that trains
    one model of several at once (the lessons' workers) keeps 1."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    _num_threads = int(n)


def get_num_threads():
    """The number of threads minidl's ops may use on the CPU (``torch.get_num_threads``)."""
    return _num_threads


def _executor(threads):
    """The pool's threads beside the calling one: threads − 1 of them. A new pool
    after set_num_threads or a fork (a forked child has none of the parent's threads)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[:2] != (os.getpid(), threads):
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            _pool = (os.getpid(), threads, concurrent.futures.ThreadPoolExecutor(
                threads - 1, thread_name_prefix="minidl"))
        return _pool[2]


# OpenBLAS's threads would multiply with the pool's (and its results change in
# their last bits with its thread count): inside parallel() it runs one thread.
_blas = None
_blas_depth, _blas_saved = 0, []


class _OneBlasThread:
    def __enter__(self):
        global _blas, _blas_depth
        with _pool_lock:
            if _blas is None:
                from threadpoolctl import ThreadpoolController
                _blas = ThreadpoolController().select(user_api="blas").lib_controllers
            if _blas_depth == 0:
                _blas_saved[:] = [lib.get_num_threads() for lib in _blas]
                for lib in _blas:
                    lib.set_num_threads(1)
            _blas_depth += 1

    def __exit__(self, *exc):
        global _blas_depth
        with _pool_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, n in zip(_blas, _blas_saved):
                    lib.set_num_threads(n)


def one_blas_thread():
    """``with one_blas_thread():`` BLAS (OpenBLAS, MKL) multiplies on one thread."""
    return _OneBlasThread()


# Handing a share of a region to a pool thread costs 42-125 µs on the machines here
# (a region of two no-op pieces; the thread is woken, then the caller), the time
# NumPy takes to copy 1-3 MB: a thread joins a region only for each GRAIN_BYTES
# of the data it works on (PyTorch's at::parallel_for has its grain size too).
GRAIN_BYTES = 4 << 20


def threads_for(nbytes):
    """How many threads a region over ``nbytes`` bytes of data uses: one per
    GRAIN_BYTES, at least one, at most get_num_threads()."""
    return max(1, min(_num_threads, int(nbytes) // GRAIN_BYTES))


def parallel(function, pieces, xp=np, nbytes=None):
    """[function(piece) for piece in pieces], on up to get_num_threads()
    threads (``threads_for(nbytes)`` given the bytes the pieces work on): the
    calling one takes the first share of the pieces, the pool's threads the
    others, each a run of neighbouring pieces. BLAS runs one thread
    throughout, on one thread too, so that results never depend on the count.
    On CuPy (``xp``) one after another: the GPU runs each piece's kernels itself."""
    threads = min(_num_threads if nbytes is None else threads_for(nbytes), len(pieces))
    if xp is not np:
        return [function(piece) for piece in pieces]
    with one_blas_thread():
        if threads <= 1 or getattr(_inside, "active", False):
            return [function(piece) for piece in pieces]
        bounds = [len(pieces) * t // threads for t in range(threads + 1)]
        share = lambda t: _run_share(function, pieces[bounds[t]:bounds[t + 1]])   # noqa: E731
        futures = [_executor(_num_threads).submit(share, t) for t in range(1, threads)]
        try:
            results = share(0)
        finally:
            concurrent.futures.wait(futures)          # every piece done before its arrays are used
        return results + [r for f in futures for r in f.result()]


def shares(n, nbytes):
    """range(n) in ``threads_for(nbytes)`` runs of neighbouring indices, as even
    as can be: the pieces of exact work (copies, a max, a product of two numbers)
    over ``nbytes`` bytes, whose results cannot depend on how it is cut. One piece
    on one thread: every piece costs its Python calls (measured: LeNet-5's deals
    of rows in pieces of 3 samples took the first conv's forward from 1.0 to 2.4 ms)."""
    k = max(1, min(threads_for(nbytes), n))
    return [slice(n * i // k, n * (i + 1) // k) for i in range(k)]


def outer_pieces(a, axes=None):
    """``shares`` of the outermost axis of ``a`` in memory, of ``axes`` (all by
    default), as indices: the pieces of an op that works on every value (ReLU)
    or every window (pooling: axes N and C) alone."""
    if a.ndim == 0:
        return [(Ellipsis,)]
    axis = max(axes or range(a.ndim), key=lambda i: (a.shape[i] > 1, a.strides[i], -i))
    return [(slice(None),) * axis + (part,) for part in shares(a.shape[axis], a.nbytes)]


# ---- pieces of one batch, side by side (nn.SplitBatch) ----------------------
# An op's own pieces are too small for two threads here (the hand-off and the GIL
# eat them, docs/performance.md); nn.SplitBatch gives each thread a piece of the
# batch for a whole forward and backward instead. What spans the batch, BatchNorm's
# sums, is summed over the pieces in their order by every piece alike (``all_sum``):
# the pieces depend on the batch alone, the threads only run them, so results do
# not depend on the number of threads.
_piece = threading.local()      # .pieces, .rank: the batch piece this thread runs, if any


class PiecesApart(RuntimeError):
    """The pieces of a batch did not make the same sums (nn.SplitBatch)."""


class PieceStopped(PiecesApart):
    """A piece stopped because another failed (nn.SplitBatch raises the other's error)."""


class BatchPieces:
    """The pieces of one batch (``sizes``, samples each), run one thread each, at
    most ``threads`` of them at a time: a piece waiting for the others' sums lets
    another run, so one thread runs any number of pieces, in turns."""

    def __init__(self, sizes, threads):
        self.sizes = [int(n) for n in sizes]      # Python ints: an np.int64 count would make μ float64
        self.running = threading.Semaphore(threads)
        self.ready = threading.Condition()
        # two sets of slots, used in turns: a piece writes its next value into the
        # other set, which every piece has finished reading once it got this sum
        self.slots, self.calls = [[None] * len(self.sizes) for _ in range(2)], [0] * len(self.sizes)
        self.arrived, self.rounds, self.finished, self.failed = 0, 0, 0, False

    def all_sum(self, rank, value):
        """Σ over the pieces of their ``value`` (arrays of one shape), in the
        pieces' order, the same to the last bit in every piece."""
        slots = self.slots[self.calls[rank] % 2]
        self.calls[rank] += 1
        slots[rank] = value
        self.running.release()
        try:
            with self.ready:
                round_ = self.rounds
                self.arrived += 1
                if self.arrived == len(self.sizes):            # the last value in: every piece may go on
                    self.arrived, self.rounds = 0, self.rounds + 1
                    self.ready.notify_all()
                while self.rounds == round_:
                    if self.failed:
                        raise PieceStopped(f"nn.SplitBatch: piece {rank + 1} stopped: another piece failed")
                    if self.finished:
                        raise PiecesApart(
                            f"nn.SplitBatch: piece {rank + 1} of {len(self.sizes)} waited for a sum over the "
                            "pieces (BatchNorm's statistics) that another piece, already finished, never made: "
                            "the pieces took different paths through the network (a branch on the batch's "
                            "size, say)")
                    self.ready.wait()
        finally:
            self.running.acquire()
        total = slots[0]
        for v in slots[1:]:
            total = total + v
        return total

    def run(self, rank, work, seed=None):
        """work() as piece ``rank`` of the batch, in this thread."""
        self.running.acquire()
        _piece.pieces, _piece.rank = self, rank
        _piece.rng = None if seed is None else np.random.default_rng(seed)
        _piece.seed, _piece.device_rng = seed, None
        inside, _inside.active = getattr(_inside, "active", False), True   # the piece is this thread's share
        try:
            result = work()
            self._end(finished=True)        # a piece still waiting for this one's sums would wait forever
            return result
        except BaseException:
            self._end(failed=True)          # the others stop waiting for this piece's sums
            raise
        finally:
            _inside.active, _piece.pieces, _piece.rng, _piece.seed, _piece.device_rng = inside, None, None, None, None
            self.running.release()

    def _end(self, finished=False, failed=False):
        with self.ready:
            self.finished += finished
            self.failed = self.failed or failed
            self.ready.notify_all()


def batch_piece():
    """(BatchPieces, rank) of the piece of a batch this thread runs, else None."""
    pieces = getattr(_piece, "pieces", None)
    return None if pieces is None else (pieces, _piece.rank)


def check_not_across_pieces(op, axes, shape):
    """A reduction over the batch inside a piece would see only the piece: an error
    (BatchNorm's statistics are summed over the pieces; nothing else is)."""
    piece = batch_piece()
    if piece is not None and 0 in axes and shape and shape[0] == piece[0].sizes[piece[1]]:
        raise RuntimeError(
            f"{op}: reduces over the batch (axis 0 of shape {tuple(shape)}) inside nn.SplitBatch, where "
            f"each thread holds {shape[0]} of the batch's {sum(piece[0].sizes)} samples and would see only "
            "those. SplitBatch sums BatchNorm's statistics over its pieces and nothing else: run this "
            "module without SplitBatch (if axis 0 here is not the batch, a piece of another size "
            "would pass: pieces= decides the size)")


def _after_fork_in_child():
    global _pool, _pool_lock, _blas_depth
    _pool, _pool_lock, _blas_depth = None, threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run_share(function, pieces):
    _inside.active = True
    try:
        return [function(piece) for piece in pieces]
    finally:
        _inside.active = False


_env = os.environ.get("MINIDL_BACKEND", "").lower()
if _env:
    _default = _env      # checked, and CuPy loaded, on first use: importing minidl never fails
