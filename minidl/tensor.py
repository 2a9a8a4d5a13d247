"""Tensor, the Function base class, and reverse-mode autograd.

A Tensor holds a backend array (``data``) and, after ``backward()``, the
gradient of a scalar with respect to it (``grad``). Every op is a Function:
``forward`` computes on arrays, ``backward`` maps the upstream gradient to one
gradient per input, and ``__call__`` records the graph.

Gradients accumulate. ``loss.backward()`` adds into ``.grad`` of every leaf
tensor that requires a gradient, exactly as PyTorch does, so two backward calls
without a ``zero_grad()`` between them give the sum of both. The graph is kept
after ``backward()``: calling it a second time through the same graph adds the
same gradients again (PyTorch raises instead, because it frees the graph; we
keep it so a lesson can backpropagate twice and watch the sum).
"""
import contextlib
import threading

import numpy as np

from . import backend
from .backend import get_array_module
from .errors import InputError


class _Modes(threading.local):
    """The modes below, each thread its own (PyTorch's grad mode is thread-local too):
    a Dask worker runs tasks in threads, and one evaluating under no_grad() must not
    stop another, training beside it, from recording its graph."""
    enable_grad = True      # record the graph (off inside no_grad())
    freeze_state = False    # layers leave their buffers alone (gradcheck sets it)
    detect_anomaly = False  # check every op's output for NaN/inf
    promote_float64 = False # ops compute in float64 whatever their inputs (gradcheck sets it)


Config = _Modes()


@contextlib.contextmanager
def _config(name, value):
    old = getattr(Config, name)
    setattr(Config, name, value)
    try:
        yield
    finally:
        setattr(Config, name, old)


def no_grad():
    """``with no_grad():`` ops record no graph (evaluation, parameter updates)."""
    return _config("enable_grad", False)


def enable_grad():
    return _config("enable_grad", True)


def is_grad_enabled():
    """Whether ops record the graph here: False inside ``no_grad()`` (PyTorch's name)."""
    return Config.enable_grad


def frozen_state():
    """``with frozen_state():`` layers do not update buffers such as BN running
    statistics. gradcheck probes under it, so checking a layer never moves it."""
    return _config("freeze_state", True)


def promote_float64():
    """``with promote_float64():`` every op casts its floating inputs to float64
    first, so a closure over float32 layers computes in float64. gradcheck probes
    under it: finite differences need float64, and checking ``lambda x: bn(x)``
    should not first require ``bn.astype("float64")``."""
    return _config("promote_float64", True)


def detect_anomaly():
    """``with detect_anomaly():`` every op checks its output for NaN/inf and
    raises naming the op that produced it (slower; for debugging)."""
    return _config("detect_anomaly", True)


def _is_array(value):
    return isinstance(value, np.ndarray) or backend.device_of(value) == "gpu"


def as_array(value, dtype=None, xp=None):
    """Python numbers and lists become float32; arrays keep their dtype."""
    if isinstance(value, Tensor):
        value = value.data
    if _is_array(value):
        return value.astype(dtype, copy=False) if dtype is not None else value
    xp = xp or backend.default_module()
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError("Tensor: the nested lists have different lengths (a ragged array); a "
                         "tensor needs a rectangular block of numbers, every row as long as the "
                         "others") from None
    if arr.dtype.kind in "USO":
        raise TypeError(f"Tensor: expected numbers, got {type(value).__name__} "
                        f"{str(value)[:40]!r}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype == np.bool_ else np.float32
    return xp.asarray(arr, dtype=dtype)


class Count(int):
    """``t.size``: NumPy's number of values, an int. Called, it is PyTorch's
    ``t.size()``, the shape, or ``t.size(dim)``, one axis's length: the spelling
    decides, as with ``max(axis=)`` and ``max(dim=)``."""

    def __new__(cls, shape):
        n = 1
        for d in shape:
            n *= d
        count = super().__new__(cls, n)
        count.shape = tuple(shape)
        return count

    def __call__(self, dim=None):
        return self.shape if dim is None else self.shape[dim]


class Tensor:
    """An array with a gradient. ``Tensor([1, 2])`` is float32; a float64
    NumPy array stays float64. New tensors live on the current backend."""

    __array_priority__ = 1000  # numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if _is_array(data) and backend.device_of(data) != backend.default_device():
            data = backend.to_device(data, backend.default_device())
        arr = as_array(data, dtype)
        # a tensor owns its data: updating a parameter never writes into the caller's array
        self._init(arr.copy() if arr is data else arr, requires_grad)

    def _init(self, data, requires_grad=False, creator=None):
        if data.dtype.kind == "O":
            raise TypeError(f"Tensor: cannot hold an object array of shape {data.shape}; "
                            "expected numbers")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, "
                            f"got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = creator
        self.name = None
        self.retains_grad = False

    @classmethod
    def _wrap(cls, data, requires_grad=False, creator=None):
        """Wrap a backend array as is (no device move, no dtype change)."""
        t = cls.__new__(cls)
        t._init(data, requires_grad, creator)
        return t

    # ---- properties -------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: Count(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self.creator is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(backend.as_numpy(self.data), precision=4, separator=", ",
                               prefix="tensor(", threshold=50)
        extra = f", dtype={self.dtype}"
        if self.device != "cpu":
            extra += f", device={self.device!r}"
        if self.creator is not None:
            extra += f", grad_fn={type(self.creator).__name__}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        if self.name:
            extra += f", name={self.name!r}"
        return f"tensor({body}{extra})"

    def __bool__(self):
        """The truth of a one-value tensor. With more values it is ambiguous and an
        error, as in PyTorch: ``x in [a, b]`` or ``if x == y`` would otherwise
        compare element by element and always be true."""
        if self.size != 1:
            raise InputError(f"the truth value of a tensor of shape {tuple(self.shape)} is ambiguous; "
                             "use (x == y).all().item(), or `is` to ask whether it is the same tensor")
        return bool(self.data.reshape(()).item())

    def __float__(self):
        """``float(t)`` of a one-value tensor, as ``t.item()``."""
        return float(self._one_value("float"))

    def __int__(self):
        """``int(t)`` of a one-value tensor; a float is truncated, as ``int(2.7)``."""
        return int(self._one_value("int"))

    def __index__(self):
        """A one-value integer tensor as an index: ``range(t)``, ``[a, b][t]``."""
        if self.dtype.kind not in "iu":
            raise TypeError(f"only an integer tensor can be an index, got dtype {self.dtype}")
        return int(self._one_value("index"))

    def _one_value(self, op):
        if self.size != 1:
            raise InputError(f"{op}: only a tensor with one element converts to a Python number; this "
                             f"one has shape {tuple(self.shape)} ({self.size} elements). Reduce it first "
                             "(.sum(), .mean()) or pick one element (t[0])")
        return self.data.reshape(()).item()

    # ---- conversions ------------------------------------------------------
    def numpy(self):
        """A NumPy array (copied from the GPU where needed)."""
        return backend.as_numpy(self.data)

    def item(self):
        return self._one_value("item")

    def dim(self):
        """PyTorch's name for ``ndim``."""
        return self.ndim

    def numel(self):
        """PyTorch's name for the number of values, ``size``."""
        return int(self.size)

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data)

    def zero_grad(self):
        self.grad = None

    def requires_grad_(self, requires_grad=True):
        """Start (or stop) recording this leaf's gradient, in place; returns the tensor."""
        if self.creator is not None:
            raise RuntimeError("requires_grad_: only a leaf's flag can change; this tensor was computed "
                               f"by {type(self.creator).__name__} (use .detach().requires_grad_())")
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require gradients, got "
                            f"dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def zero_(self):
        """Fill with zeros in place; returns the tensor. As in PyTorch, not a leaf that
        records its gradient (do it under ``md.no_grad()``); and not a tensor inside a
        graph, whose ops may have kept its values for their backward (PyTorch tracks
        such writes, minidl does not): ``x * 0`` or ``md.zeros_like(x)`` instead."""
        if self.requires_grad and (self.creator is not None or Config.enable_grad):
            raise RuntimeError(
                "zero_: this tensor requires a gradient; a leaf is zeroed under md.no_grad(), a "
                "result inside a graph not at all (its ops may need its values): use x * 0")
        self.data[...] = 0
        return self

    # ---- autograd ---------------------------------------------------------
    def retain_grad(self):
        """Keep this tensor's gradient in ``.grad`` after ``backward()`` even though
        it is not a leaf (PyTorch's name and meaning): it accumulates like a leaf's."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require a gradient, so none "
                               "will reach it")
        self.retains_grad = True
        return self

    def backward(self, grad=None):
        """Backpropagate from this tensor; adds into ``.grad`` of every leaf that
        requires a gradient (and of every tensor that called ``retain_grad()``).
        ``grad`` is the upstream gradient, needed unless this tensor holds a
        single value. ``md.backward_steps`` is the same pass, one op at a time."""
        for _ in backward_steps(self, grad):
            pass


class BackwardStep:
    """One op of a backward pass: the op, its output tensor, the upstream
    gradient arriving at that output, and the gradient it sends to each input
    (None where an input needs none). ``index`` is its place in the pass
    (``steps[index]``, from 0); printed, a step counts from 1, as the stepper's
    "Step 3 of 13" does, and names its tensors as the pictures do (``md.graph.label``)."""

    def __init__(self, index, function, output, grad_output, grad_inputs):
        self.index, self.function, self.output = index, function, output
        self.grad_output, self.grad_inputs = grad_output, grad_inputs
        self.inputs = function.inputs

    op = property(lambda self: type(self.function).__name__)
    number = property(lambda self: self.index + 1, doc="the step's number as a person counts: from 1")

    # The labels read the ops ("a / b" is a × b^−1), and the ops import this module:
    # they are imported when a step is printed, not when this module loads.
    def __repr__(self):
        from .graph.labels import as_inputs, describe, grad_name, label, received, values_text
        lines = [f"step {self.number}: {self.op} -> {describe(self.output)}",
                 f"  upstream {grad_name(label(self.output))} {values_text(self.grad_output)}"]
        for x, g, parts in received(self):
            lines.append(f"  sends {grad_name(label(x))} {values_text(g)}" + as_inputs(parts))
        return "\n".join(lines)

    def row(self):
        """(step number, op, output, sends to): one line of ``md.steps_table``."""
        from .graph.labels import as_inputs, describe, received
        return (self.number, self.op, describe(self.output),
                ", ".join(describe(x) + as_inputs(parts) for x, _, parts in received(self)))


def backward_steps(y, grad=None):
    """The backward pass from ``y``, one op at a time: yields a BackwardStep for
    every op, each after all the ops that consume its output. Run to the end
    (``list(md.backward_steps(y))``) it leaves every ``.grad`` exactly as
    ``y.backward(grad)`` does; ``.grad`` is written only then, so a pass stopped
    halfway writes nothing and a later ``backward()`` counts nothing twice."""
    xp = get_array_module(y.data)
    if grad is None:
        if y.size != 1:
            raise RuntimeError(
                f"backward: this tensor has shape {y.shape}; backward() without an "
                "upstream gradient needs a single value (a loss). Reduce it first "
                "(e.g. .sum() or .mean()) or pass grad= of the same shape.")
        backend.defer_check(~xp.isfinite(y.data).all(), FloatingPointError,
                            "backward: the loss is NaN or inf; training has diverged or an op "
                            "produced NaN (try a smaller learning rate, or `with "
                            "md.detect_anomaly():`)")
        grad = xp.ones_like(y.data)
    else:
        if isinstance(grad, Tensor):
            grad = grad.data
        if _is_array(grad) and backend.device_of(grad) != y.device:
            grad = backend.to_device(grad, y.device)     # a host gradient for a GPU tensor
        grad = as_array(grad, dtype=y.dtype, xp=xp)
        if grad.shape != y.shape:
            raise InputError(f"backward: upstream gradient has shape {grad.shape}, "
                             f"expected the tensor's shape {y.shape}")
    if not y.requires_grad:
        raise RuntimeError("backward: this tensor does not require a gradient: no input "
                           "had requires_grad=True, or it was computed under no_grad()")

    grads, finished, index = {id(y): grad}, [], 0   # finished: (tensor, its whole gradient), written at the end
    for t in reversed(_topological_order(y)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t.creator is None or t.retains_grad:
            finished.append((t, g))
        if t.creator is None:
            continue
        f = t.creator
        gxs = f.backward(g)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        sent = tuple(None if gx is None or not x.requires_grad else gx for x, gx in zip(f.inputs, gxs))
        for x, gx in zip(f.inputs, sent):
            if gx is not None:
                grads[id(x)] = gx if id(x) not in grads else grads[id(x)] + gx
        yield BackwardStep(index, f, t, g, sent)
        index += 1
    for t, g in finished:
        t.grad = g.copy() if t.grad is None else t.grad + g


def _topological_order(root, follow=lambda x: x.requires_grad):
    """Tensors of the graph below ``root``, every input before its outputs,
    through the inputs ``follow`` accepts (those needing a gradient; a drawing
    takes constants too). Iterative depth-first search: deep graphs never hit
    the recursion limit."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t.creator is not None:
            for x in t.creator.inputs:
                if follow(x) and id(x) not in visited:
                    stack.append((x, False))
    return order


class Function:
    """Base class of every op: subclass and write ``forward`` on arrays and,
    right under it, ``backward`` returning one gradient per input.

    ``__call__`` sets, before ``forward`` runs, ``self.xp`` (numpy or cupy,
    the inputs' array module: create every array with it) and
    ``self.needs_grad`` (one bool per input: will anyone ask for its gradient?
    An op may skip keeping or computing what nobody needs)."""

    float_result = False     # True where the op's value is not an integer (exp, log, x ** 0.5, ...)
    pytorch_style = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # PyTorch's spelling: static forward(ctx, ...) and backward(ctx, ...), run by
        # Op.apply (minidl/autograd.py gives every Function PyTorch's apply)
        cls.pytorch_style = isinstance(cls.__dict__.get("forward"), staticmethod) or \
            any(getattr(base, "pytorch_style", False) for base in cls.__bases__)


    def __call__(self, *inputs):
        if self.pytorch_style:
            raise TypeError(f"{type(self).__name__} is written PyTorch's way (static forward(ctx, ...)): "
                            f"call it as {type(self).__name__}.apply(...)")
        tensors = _as_tensors(type(self).__name__, inputs, self.float_result)
        self.xp = get_array_module(*[t.data for t in tensors])
        # which inputs want a gradient, known before forward: an op may skip
        # keeping (forward) or computing (backward) what nobody will ask for
        self.needs_grad = tuple(Config.enable_grad and t.requires_grad for t in tensors)
        y = self.forward(*[t.data for t in tensors])
        if Config.detect_anomaly and y.dtype.kind == "f" and not bool(self.xp.isfinite(y).all()):
            raise FloatingPointError(
                f"{type(self).__name__}: produced NaN or inf from inputs of shapes "
                f"{[t.shape for t in tensors]}")
        needs_grad = any(self.needs_grad)
        out = Tensor._wrap(y, requires_grad=needs_grad, creator=self if needs_grad else None)
        if needs_grad:
            self.inputs = tensors
        return out

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError


def _as_tensors(op, inputs, float_result=False):
    """Tensors for a Function's inputs, by the one dtype rule:

    - floating tensors must agree (float32 and float64 never mix silently);
    - an integer (or boolean) tensor meeting a float, tensor or Python number,
      takes the float's dtype, float32 for a Python number, as does any integer
      input of an op whose value is not an integer (exp, log, true division);
    - Python numbers take the tensors' dtype; integers among integers stay so.

    Tensors and arrays must also agree on device."""
    tensors = [x if isinstance(x, Tensor) else Tensor._wrap(x) if _is_array(x) else None
               for x in inputs]
    if Config.promote_float64:
        # a float64 copy outside the graph: only the inputs gradcheck perturbs
        # (already float64) need their gradients
        tensors = [Tensor._wrap(t.data.astype("float64")) if t is not None and t.dtype.kind == "f"
                   and t.dtype != "float64" else t for t in tensors]
    present = [t for t in tensors if t is not None]
    backend.check_same_device(op, *[t.data for t in present])
    floats = {t.dtype for t in present if t.dtype.kind == "f"}
    if len(floats) > 1:
        raise TypeError(f"{op}: inputs have different float dtypes "
                        f"({', '.join(sorted(str(d) for d in floats))}); minidl never promotes "
                        "silently: cast one with .astype()")
    float_number = any(t is None and isinstance(x, (float, np.floating)) for t, x in zip(tensors, inputs))
    target = floats.pop() if floats else (
        np.dtype(np.float32) if float_number or float_result else None)
    if target is not None:        # integers meet a float: they take its dtype (outside the graph)
        tensors = [Tensor._wrap(t.data.astype(target)) if t is not None and t.dtype.kind in "biu" else t
                   for t in tensors]
    if any(t is None for t in tensors):
        xp = get_array_module(*[t.data for t in present]) if present else backend.default_module()
        dtype = target if target is not None else (
            np.result_type(*[t.dtype for t in present]) if present else np.dtype(np.float32))
        # a number becomes xp.full, not xp.asarray: on a GPU a fill kernel, not a copy from the host
        tensors = [t if t is not None else Tensor._wrap(
                   xp.full((), x, dtype=dtype) if isinstance(x, (int, float, np.number))
                   else xp.asarray(x, dtype=dtype)) for t, x in zip(tensors, inputs)]
    return tensors
