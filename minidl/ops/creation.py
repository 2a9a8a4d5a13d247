"""Making tensors with PyTorch's names and PyTorch's dtype rules, so code written
for ``import torch`` runs with ``import minidl as torch``:

    md.tensor([1, 2])   int64, as torch.tensor      md.Tensor([1, 2])   float32, minidl's rule
    md.tensor([1., 2])  float32                     md.tensor(array)    the array's dtype
    md.zeros(2, 3), md.ones((2, 3)), md.rand(2), md.randn(2), md.eye(3), md.linspace(0, 1, 5): float32
    md.arange(5)        int64; with a float start, end or step float32
    md.full((2,), 7)    int64 (the value's kind: bool, int64 or float32)

Every function takes ``dtype=`` (a NumPy dtype, its name, or PyTorch's names:
``md.float64``, ``md.long``, ...), ``device=`` ("cpu", "gpu" or PyTorch's
"cuda"; the current backend's by default) and ``requires_grad=``. Random draws
come from minidl's generator (``md.manual_seed``): a seed gives other numbers
than it gives PyTorch."""
import numpy as np

from .. import backend
from ..errors import InputError
from ..tensor import Tensor, _is_array

_KINDS = {"b": np.bool_, "i": np.int64, "u": np.int64, "f": np.float32}   # PyTorch's inference


def _module(device):
    return backend.default_module() if device is None else backend.module_for(device)


def _finish(op, array, dtype, requires_grad):
    """The tensor of ``array`` in ``dtype`` (where given), a leaf that may require a gradient."""
    if dtype is not None:
        array = array.astype(np.dtype(dtype), copy=False)
    if requires_grad and array.dtype.kind != "f":
        raise TypeError(f"{op}: only floating-point tensors can require gradients, got dtype {array.dtype} "
                        "(pass dtype=md.float32)")
    return Tensor._wrap(array, requires_grad=requires_grad)


def _size(op, size):
    """PyTorch's two spellings of a shape: zeros(2, 3) and zeros((2, 3))."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in size):
        raise TypeError(f"{op}: a size is non-negative ints, {op}(2, 3) or {op}((2, 3)); got {size!r}")
    return tuple(int(n) for n in size)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of ``data``, its dtype inferred as PyTorch's
    ``torch.tensor`` does: Python ints int64, floats float32, bools bool; an
    array (or tensor) keeps its dtype. (``md.Tensor(data)`` makes every number
    float32, minidl's own rule.)"""
    if isinstance(data, Tensor):
        data = data.data
    xp = _module(device)
    if _is_array(data) or isinstance(data, np.generic):
        moved = backend.to_device(np.asarray(data) if isinstance(data, np.generic) else data,
                                  "cpu" if xp is np else "gpu")
        return _finish("tensor", moved.copy() if moved is data else moved, dtype, requires_grad)
    try:
        host = np.asarray(data)
    except ValueError:
        raise ValueError("tensor: the nested lists have different lengths (a ragged array); a tensor "
                         "needs a rectangular block of numbers") from None
    if host.dtype.kind not in _KINDS:
        raise TypeError(f"tensor: expected numbers (or nested lists of them), got {type(data).__name__} "
                        f"{str(data)[:40]!r}")
    return _finish("tensor", xp.asarray(host.astype(_KINDS[host.dtype.kind])), dtype, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _finish("zeros", _module(device).zeros(_size("zeros", size), dtype=dtype or np.float32),
                   None, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _finish("ones", _module(device).ones(_size("ones", size), dtype=dtype or np.float32),
                   None, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """``size`` filled with ``fill_value``; its dtype the value's kind (bool, int64,
    float32), as PyTorch's."""
    if dtype is None:
        dtype = np.bool_ if isinstance(fill_value, (bool, np.bool_)) else \
            np.int64 if isinstance(fill_value, (int, np.integer)) else np.float32
    return _finish("full", _module(device).full(_size("full", (size,)), fill_value, dtype=dtype),
                   None, requires_grad)


def zeros_like(x, dtype=None, device=None, requires_grad=False):
    """Zeros of ``x``'s shape, dtype and device (unless given)."""
    return zeros(x.shape, dtype=dtype or x.dtype, device=device or x.device, requires_grad=requires_grad)


def ones_like(x, dtype=None, device=None, requires_grad=False):
    return ones(x.shape, dtype=dtype or x.dtype, device=device or x.device, requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False):
    return full(x.shape, fill_value, dtype=dtype or x.dtype, device=device or x.device,
                requires_grad=requires_grad)


def _draw(op, how, size, dtype, device, requires_grad):
    """Random numbers from minidl's generator of the device (both follow md.manual_seed)."""
    dtype = np.dtype(dtype or np.float32)
    if dtype.kind != "f":
        raise TypeError(f"{op}: draws floating-point numbers, got dtype={dtype}")
    xp = _module(device)
    draw = backend.rng() if xp is np else backend.device_rng()
    shape = _size(op, size)
    drawn = getattr(draw, how)(shape, dtype=np.float64 if dtype == np.float16 else dtype)
    return _finish(op, drawn, dtype, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1), float32."""
    return _draw("rand", "random", size, dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal, float32."""
    return _draw("randn", "standard_normal", size, dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """start, start + step, ... below ``end`` (``arange(n)``: 0 .. n − 1). int64, or
    float32 where start, end or step is a float, as PyTorch's; computed in
    float64 and then rounded, as PyTorch's."""
    if end is None:
        start, end = 0, start
    floats = any(isinstance(v, (float, np.floating)) for v in (start, end, step))
    if step == 0:
        raise InputError(f"arange: step must be nonzero, got arange({start}, {end}, {step})")
    if (end - start) * step < 0:
        raise InputError(f"arange: the end {end} lies the other way from the start {start} than the "
                         f"step {step} goes")
    values = _module(device).arange(start, end, step, dtype=np.float64 if floats else np.int64)
    return _finish("arange", values, dtype or (np.float32 if floats else None), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from start to end, both included; float32."""
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"linspace: steps must be a non-negative int, got {steps!r}")
    values = _module(device).linspace(start, end, steps, dtype=np.float64)
    return _finish("linspace", values, dtype or np.float32, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The n × m identity (n × n by default), float32."""
    return _finish("eye", _module(device).eye(n, m, dtype=dtype or np.float32), None, requires_grad)
