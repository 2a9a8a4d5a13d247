"""SplitBatch: one network's training step on every core.

An op's own pieces are too small to share between threads here: handing a piece
to another thread costs 42-125 µs, and between NumPy's calls each piece waits
for the GIL (docs/performance.md). SplitBatch hands each thread a piece of the
batch for the whole forward and backward instead, as data parallelism does
across GPUs:

    model = md.nn.SplitBatch(md.models.LeNet5(norm="batch"), pieces=2)
    loss = F.cross_entropy(model(x), y)      # as before: the same graph, one loss
    loss.backward()                          # model.module's parameters get the whole batch's gradient

Each piece runs the module on its samples in a thread of its own, through its
own graph (a replica of the module whose parameters are leaves of their own over
the same arrays). BatchNorm's statistics are the whole batch's: its sums are
added over the pieces (``backend.BatchPieces.all_sum``), and only the first
piece updates the running statistics. The parameters' gradients are the pieces'
gradients added in the pieces' order. So the result is the unsplit module's up
to rounding, and the same to the last bit on any number of threads: the pieces
depend on the batch and ``pieces`` alone; ``md.set_num_threads`` only decides
how many run at once.

Where it differs from PyTorch's ``nn.DataParallel`` (replicas on GPUs, each
BatchNorm normalizing by its own piece): here BatchNorm sees the whole batch, as
``SyncBatchNorm`` would.

What it asks of the network: apart from BatchNorm, each sample is computed on
its own. A sum, mean, variance, max or product over axis 0 inside a piece is an
error (Switchable Norm's batch statistics, the homework's BatchNorm written
with ``mean(axis=0)``); other ways of mixing samples (``x[0]``, ``x.T @ x``, a
softmax over axis 0) are not detected and would see only the piece. So are
errors: a parameter reached outside the registered modules, an attribute the
forward sets (each piece sets its copy's; a reassigned buffer is kept, the
first piece's), pieces that take different paths through BatchNorm.
"""
import concurrent.futures
import copy
import os
import threading

import numpy as np

from .. import backend
from ..tensor import Config, Function, Tensor, _Modes
from .module import Module, check_input


class SplitBatch(Module):
    """``module`` run on ``pieces`` pieces of each batch (split along axis 0), side
    by side on up to ``md.get_num_threads()`` threads. ``model.module`` is the
    network: its parameters, buffers and state_dict are the ones trained."""

    def __init__(self, module, pieces=2):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"SplitBatch: expected a Module to run, got {type(module).__name__}")
        if isinstance(pieces, bool) or not isinstance(pieces, (int, np.integer)) or pieces < 1:
            raise ValueError(f"SplitBatch: pieces must be a positive integer, got {pieces!r}")
        self.module, self.pieces = module, int(pieces)

    def forward(self, x):
        check_input("SplitBatch", x)
        if backend.batch_piece() is not None:
            raise RuntimeError("SplitBatch: inside another SplitBatch's piece; its BatchNorm sums would "
                               "cover only the inner pieces: split the batch once, at the outermost module")
        if x.ndim == 0 or x.shape[0] < self.pieces:
            raise ValueError(f"SplitBatch: a batch of shape {tuple(x.shape)} does not split into "
                             f"{self.pieces} pieces of at least one sample each")
        params = self.module.parameters()            # each once: a tied weight is one parameter
        # one number from minidl's generator per forward seeds the pieces' own (dropout)
        seed = int(backend.rng().integers(2**62))
        return _Split(self.module, self.pieces, seed, params)(x, *params)

    def extra_repr(self):
        return f"pieces={self.pieces}"


class _Split(Function):
    """The module's forward on pieces of x, one thread each; backward: each
    piece's own backward, in its thread, from its slice of dl/dy. Inputs: x and
    the module's parameters (so their gradients are this op's)."""

    def __init__(self, module, pieces, seed, params):
        self.module, self.n, self.seed, self.params = module, pieces, seed, params

    def forward(self, x, *params):
        N = x.shape[0]
        self.bounds = [N * k // self.n for k in range(self.n + 1)]
        modes = {k: getattr(Config, k) for k in vars(_Modes) if not k.startswith("_")}
        self.replicas, self.leaves = [], []
        for k in range(self.n):
            leaves = {id(p): Tensor._wrap(p.data, requires_grad=p.requires_grad) for p in self.params}
            self.replicas.append(_replica(self.module, leaves))
            self.leaves.append([leaves[id(p)] for p in self.params])

        def forward_piece(k):
            for name, value in modes.items():          # the caller's modes; one piece updates buffers
                setattr(Config, name, value)
            if k > 0:
                Config.freeze_state = True
            piece = Tensor._wrap(x[self.bounds[k]:self.bounds[k + 1]], requires_grad=self.needs_grad[0])
            y = self.replicas[k](piece)
            if not isinstance(y, Tensor) or y.ndim == 0 or y.shape[0] != piece.shape[0]:
                raise TypeError(f"SplitBatch: {type(self.module).__name__} returned "
                                f"{type(y).__name__} {getattr(y, 'shape', '')} for a piece of "
                                f"{piece.shape[0]} samples; SplitBatch joins one tensor per piece "
                                "along axis 0")
            _check_own_leaves(self.module, y, [piece] + self.leaves[k])
            return piece, y
        self.inputs_, self.outputs = zip(*self._run(forward_piece))
        _write_back(self.module, self.replicas[0])
        y = self.xp.concatenate([y.data for y in self.outputs])
        if not any(self.needs_grad):
            self.replicas = self.leaves = self.inputs_ = self.outputs = None
        return y

    def backward(self, gy):
        for t in [*self.inputs_, *(leaf for leaves in self.leaves for leaf in leaves)]:
            t.grad = None                    # a second backward through this graph counts from zero again

        def backward_piece(k):
            y = self.outputs[k]
            if y.requires_grad:
                y.backward(gy[self.bounds[k]:self.bounds[k + 1]])
        self._run(backward_piece)
        gx = None
        if self.needs_grad[0]:
            gx = self.xp.concatenate([piece.grad if piece.grad is not None else self.xp.zeros_like(piece.data)
                                      for piece in self.inputs_])
        grads = []
        for i in range(len(self.params)):        # added in the pieces' order, whatever thread ran them
            total = None
            for leaves in self.leaves:
                g = leaves[i].grad
                if g is not None:
                    total = g.copy() if total is None else total + g
            grads.append(total)
        return (gx, *grads)                      # the inputs after x are self.params, in order

    def _run(self, work):
        """[work(k) for each piece k], piece 0 on this thread and each other on
        one of the split's own threads; at most get_num_threads() run at once."""
        threads = backend.get_num_threads() if self.xp is np else 1
        pieces = backend.BatchPieces(np.diff(self.bounds), threads)
        seeds = [self.seed + k for k in range(self.n)]
        errors, results = [], []
        # BLAS on one thread, set here: OpenBLAS ignores a thread count set from
        # another thread once the main one has set it (0.3.31), and the pieces are the threads
        with backend.one_blas_thread():
            futures = [] if self.n == 1 else [_executor(self.n).submit(pieces.run, k, lambda k=k: work(k), seeds[k])
                                              for k in range(1, self.n)]
            try:
                results.append(pieces.run(0, lambda: work(0), seeds[0]))
            except BaseException as e:
                errors.append(e)
            for f in futures:
                try:
                    results.append(f.result())
                except BaseException as e:
                    errors.append(e)
        if errors:     # the piece that failed first, not the others it stopped
            raise min(errors, key=lambda e: (isinstance(e, backend.PiecesApart), isinstance(e, backend.PieceStopped)))
        return results


def _check_own_leaves(module, y, own):
    """Every leaf of a piece's graph that takes a gradient is the piece's input or
    one of its replica's parameters: any other (a layer in a plain list, a tensor
    held but not registered) would get every piece's gradient at once, from
    several threads."""
    from ..tensor import _topological_order
    own = {id(t) for t in own}
    for t in _topological_order(y) if y.requires_grad else ():
        if t.creator is None and id(t) not in own:
            raise RuntimeError(
                f"SplitBatch: {type(module).__name__} reached a tensor of shape {t.shape} that takes a "
                "gradient but is not among its registered parameters (a layer in a plain list, a tensor "
                "held but not registered); each piece's thread would write its gradient at once. Register "
                "it (a Parameter as an attribute, or its layer in Sequential), or run without SplitBatch")


def _write_back(module, replica):
    """The first piece's buffers that its replica reassigned, into the module;
    any other attribute a forward set is an error (each piece set its own copy)."""
    for name, value in replica._buffers.items():
        if value is not module._buffers.get(name):
            setattr(module, name, value)
    skip = {"_parameters", "_modules", "_buffers", *module._parameters, *module._modules, *module._buffers}
    for name, value in replica.__dict__.items():
        if name not in skip and module.__dict__.get(name, _missing) is not value:
            raise RuntimeError(
                f"SplitBatch: {type(module).__name__}'s forward set its attribute {name!r}; every piece "
                f"ran on a copy of the module and set its own, so none is the whole batch's. Keep state in "
                f"registered buffers (register_buffer: the first piece's is kept), or run without SplitBatch")
    for name, sub in module._modules.items():
        _write_back(sub, replica._modules[name])


_missing = object()
_pools = threading.local()      # each calling thread its own: two splits at once never wait on one pool


def _executor(pieces):
    """Threads for the pieces beside the caller's, started once per calling thread (and after a fork)."""
    pool = getattr(_pools, "pool", None)
    if pool is None or pool[0] != os.getpid() or pool[1] < pieces - 1:
        pool = _pools.pool = (os.getpid(), pieces - 1, concurrent.futures.ThreadPoolExecutor(
            pieces - 1, thread_name_prefix="minidl-piece"))
    return pool[2]


def _replica(module, leaves):
    """A shallow copy of ``module`` and its sub-modules whose parameters are
    ``leaves[id(parameter)]``: the same arrays, a graph of its own. Buffers are
    the same tensors (the first piece updates them in place); one a piece
    reassigns is its replica's (the first piece's goes back, ``_write_back``)."""
    r = copy.copy(module)
    object.__setattr__(r, "_parameters", {})
    object.__setattr__(r, "_modules", {})
    object.__setattr__(r, "_buffers", dict(module._buffers))      # a buffer it reassigns is its own
    for name, p in module._parameters.items():
        r._parameters[name] = leaves[id(p)]
        object.__setattr__(r, name, leaves[id(p)])
    for name, m in module._modules.items():
        r._modules[name] = _replica(m, leaves)
        object.__setattr__(r, name, r._modules[name])
    return r
