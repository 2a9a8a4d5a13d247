"""Reductions over ``axis`` (None, an int or a tuple), with ``keepdims``, in
NumPy's names; PyTorch's ``dim`` and ``keepdim`` are accepted too, each
spelling with its own library's meaning where the two differ:

    x.max(dim=1)   (values, indices), as PyTorch     x.max(axis=1)   values, as NumPy
    x.std(dim=1)   unbiased (ddof=1), as PyTorch     x.std(axis=1)   biased (ddof=0), as NumPy

A 0-d tensor has one position, axis 0 or −1, as in PyTorch (NumPy has none).

One rule for reductions over no values: a sum of none is 0, a product 1; a
statistic of none (mean, max, min, argmax, argmin), or a variance of fewer than
ddof + 1 values, is an error that names the op and the shape."""
from typing import NamedTuple

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..errors import InputError, OutOfRangeError
from ..tensor import Function, Tensor
from .elementwise import mul, pow, sub


def normalize_axis(op, axis, ndim):
    """``axis`` as a sorted tuple of non-negative ints, checked against ``ndim``."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if ndim == 0 and all(a in (0, -1) for a in axes):
        return ()                 # a 0-d tensor's one position, as PyTorch: reducing it changes nothing
    for a in axes:
        if not -ndim <= a < ndim:
            raise OutOfRangeError(f"{op}: axis {a} is out of range for a tensor with {ndim} dims")
    return tuple(sorted(a % ndim for a in axes))


def pytorch_names(op, axis, dim, keepdims, keepdim):
    """(axis, keepdims, by_dim) from NumPy's ``axis``/``keepdims`` or PyTorch's
    ``dim``/``keepdim``; by_dim says PyTorch's spelling was used. Both spellings
    of one argument at once is an error naming both."""
    if dim is not None and axis is not None:
        raise TypeError(f"{op}: got both axis={axis!r} (NumPy's name) and dim={dim!r} (PyTorch's); pass one")
    if keepdim is not None and keepdims is not None:
        raise TypeError(f"{op}: got both keepdims={keepdims!r} (NumPy's name) and keepdim={keepdim!r} "
                        "(PyTorch's); pass one")
    keep = keepdim if keepdim is not None else keepdims
    return (dim if dim is not None else axis), bool(keep), dim is not None


def count(shape, axes):
    """How many values a reduction over ``axes`` of ``shape`` combines."""
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _need_values(op, shape, axes, needed=1, why=""):
    if count(shape, axes) < needed:
        raise InputError(f"{op}: {count(shape, axes)} value(s) over axes {axes} of a tensor of shape "
                         f"{tuple(shape)}; it needs at least {needed}{why}")


def expand_back(gy, shape, axes, keepdims):
    """Put the reduced ``axes`` back into ``gy`` as axes of length 1, so that it
    broadcasts against the input's ``shape``."""
    if not keepdims:
        gy = gy.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return gy


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = normalize_axis("sum", self.axis, x.ndim)
        backend.check_not_across_pieces("sum", self.axes, x.shape)
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        gy = expand_back(gy, self.shape, self.axes, self.keepdims)
        return self.xp.broadcast_to(gy, self.shape)


class Max(Function):
    """max over axes; tied maxima share the gradient equally."""
    reduce = "max"

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = normalize_axis(self.reduce, self.axis, x.ndim)
        _need_values(self.reduce, x.shape, self.axes)
        backend.check_not_across_pieces(self.reduce, self.axes, x.shape)
        self.x = x
        self.y = getattr(x, self.reduce)(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        gy = expand_back(gy, self.x.shape, self.axes, self.keepdims)
        hit = (self.x == self.y)
        share = hit / hit.sum(axis=self.axes, keepdims=True)
        return gy * share.astype(gy.dtype)


class Min(Max):
    reduce = "min"


class ValuesIndices(NamedTuple):
    """What ``max(dim=…)`` and ``min(dim=…)`` return, as PyTorch's: ``v, i = x.max(dim=1)``."""
    values: Tensor
    indices: Tensor


class MaxAlong(Function):
    """max along one axis and where it is, PyTorch's ``max(dim=…)``: the gradient
    goes to that one position (ties: the first), where ``Max`` shares it."""
    arg = "argmax"

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp, a = self.xp, self.axis
        backend.check_not_across_pieces(self.arg[3:], (a,), x.shape)        # a: one axis, from 0
        self.indices = getattr(x, self.arg)(axis=a, keepdims=True)               # the first on ties
        # where along the axis the index points: a one-hot mask, (..., n, ...)
        self.hit = xp.arange(x.shape[a]).reshape((-1,) + (1,) * (x.ndim - a - 1)) == self.indices
        y = xp.where(self.hit, x, xp.zeros((), x.dtype)).sum(axis=a, keepdims=True)
        return y if self.keepdims else y.squeeze(a)

    def backward(self, gy):
        gy = gy if self.keepdims else self.xp.expand_dims(gy, self.axis)
        return self.xp.where(self.hit, gy, self.xp.zeros((), gy.dtype))


class MinAlong(MaxAlong):
    arg = "argmin"


def sum(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001
    axis, keepdims, _ = pytorch_names("sum", axis, dim, keepdims, keepdim)
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """sum / n."""
    axis, keepdims, _ = pytorch_names("mean", axis, dim, keepdims, keepdim)
    axes = normalize_axis("mean", axis, x.ndim)
    _need_values("mean", x.shape, axes)
    return mul(sum(x, axes, keepdims), 1.0 / count(x.shape, axes))


def _ddof(op, ddof, correction, unbiased, by_dim):
    """How many degrees of freedom a variance loses: ``ddof`` (NumPy), ``correction``
    or ``unbiased`` (PyTorch); when none is given, 1 with ``dim=`` (PyTorch's
    default) and 0 otherwise (NumPy's)."""
    given = {k: v for k, v in (("ddof", ddof), ("correction", correction), ("unbiased", unbiased))
             if v is not None}
    if len(given) > 1:
        raise TypeError(f"{op}: got {' and '.join(f'{k}={v!r}' for k, v in given.items())}; pass one")
    if unbiased is not None:
        return int(bool(unbiased))
    if given:
        return next(iter(given.values()))
    return 1 if by_dim else 0


def var(x, axis=None, keepdims=None, ddof=None, *, dim=None, keepdim=None, correction=None, unbiased=None):
    """Biased (ddof=0) variance by default, as NumPy; ddof=1 for the unbiased one.
    PyTorch's spelling, ``var(dim=…)``, is unbiased unless ``correction=`` or
    ``unbiased=`` says otherwise, as ``torch.var``."""
    return _variance("var", x, axis, keepdims, ddof, dim, keepdim, correction, unbiased)


def std(x, axis=None, keepdims=None, ddof=None, *, dim=None, keepdim=None, correction=None, unbiased=None):
    # std  ==  √var, with var's arguments and their two spellings
    return pow(_variance("std", x, axis, keepdims, ddof, dim, keepdim, correction, unbiased), 0.5)


def _variance(op, x, axis, keepdims, ddof, dim, keepdim, correction, unbiased):
    axis, keepdims, by_dim = pytorch_names(op, axis, dim, keepdims, keepdim)
    ddof = _ddof(op, ddof, correction, unbiased, by_dim)
    axes = normalize_axis(op, axis, x.ndim)
    _need_values(op, x.shape, axes, ddof + 1, why=(
        " for the unbiased variance (ddof=1: divided by n − 1; PyTorch's default with dim=); "
        "ddof=0 (correction=0) gives the biased one" if ddof == 1 else f" for ddof={ddof}"))
    # var  ==  sum((x - mean(x))**2) / (n - ddof)
    d = sub(x, mean(x, axes, keepdims=True))
    return mul(sum(pow(d, 2), axes, keepdims), 1.0 / (count(x.shape, axes) - ddof))


class Prod(Function):
    """The product over axes. Its gradient at x_i is the product of the others,
    computed as exclusive cumulative products (no division: zeros are fine)."""

    def __init__(self, axes, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        backend.check_not_across_pieces("prod", self.axes, x.shape)
        self.x = x
        return x.prod(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp, x = self.xp, self.x
        kept = [a for a in range(x.ndim) if a not in self.axes]
        order = kept + list(self.axes)
        flat = x.transpose(order).reshape([x.shape[a] for a in kept] + [count(x.shape, self.axes)])
        ones = xp.ones(flat.shape[:-1] + (1,), dtype=x.dtype)
        before = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        after = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(flat, -1)[..., :-1]], axis=-1), axis=-1), -1)
        others = (before * after).reshape([x.shape[a] for a in order]).transpose(tuple(int(a) for a in np.argsort(order)))
        return expand_back(gy, x.shape, self.axes, self.keepdims) * others


def prod(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    axis, keepdims, _ = pytorch_names("prod", axis, dim, keepdims, keepdim)
    return Prod(normalize_axis("prod", axis, x.ndim), keepdims)(x)


def _arg(op, x, axis, keepdims):
    """argmax/argmin: an int64 tensor outside the graph (indices have no gradient).
    ``axis`` None means the flattened tensor, as in NumPy and PyTorch."""
    data = x.data if isinstance(x, Tensor) else x
    if axis is None:
        _need_values(op, data.shape, tuple(range(data.ndim)))
        out = getattr(data.reshape(-1), op)()
        return Tensor._wrap(out.reshape((1,) * data.ndim if keepdims else ()).astype(np.int64))
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be one int (or None for the flattened tensor), got {axis!r}")
    axes = normalize_axis(op, axis, data.ndim)
    if not axes:                                  # a 0-d tensor: its one position
        return Tensor._wrap(get_array_module(data).zeros((), np.int64))
    a = axes[0]
    _need_values(op, data.shape, (a,))
    out = getattr(data, op)(axis=a)
    return Tensor._wrap((out.reshape(out.shape[:a] + (1,) + out.shape[a:]) if keepdims else out).astype(np.int64))


def argmax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    return _arg("argmax", x, *pytorch_names("argmax", axis, dim, keepdims, keepdim)[:2])


def argmin(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    return _arg("argmin", x, *pytorch_names("argmin", axis, dim, keepdims, keepdim)[:2])


def _max_or_min(op, x, axis, keepdims, dim, keepdim):
    axis, keepdims, by_dim = pytorch_names(op, axis, dim, keepdims, keepdim)
    reduce, along = (Max, MaxAlong) if op == "max" else (Min, MinAlong)
    if not by_dim:
        return reduce(axis, keepdims)(x)                  # NumPy's: the values
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be one int, as PyTorch's {op}(dim=…) returns (values, indices) "
                        f"along one axis; got {dim!r}. For the {op} over several axes use axis=")
    axes = normalize_axis(op, dim, x.ndim)
    if not axes:                                          # a 0-d tensor: x itself, at position 0
        return ValuesIndices(reduce(axes, keepdims)(x), _arg("arg" + op, x, dim, keepdims))
    _need_values(op, x.shape, axes)
    f = along(axes[0], keepdims)
    values = f(x)
    indices = f.indices if keepdims else f.indices.squeeze(axes[0])
    return ValuesIndices(values, Tensor._wrap(indices.astype(np.int64)))


def max(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001
    """The max over ``axis`` (NumPy's), or PyTorch's ``max(dim=…)``: ``(values, indices)``."""
    _two_tensors("max", "maximum", axis)
    return _max_or_min("max", x, axis, keepdims, dim, keepdim)


def min(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001
    """The min over ``axis`` (NumPy's), or PyTorch's ``min(dim=…)``: ``(values, indices)``."""
    _two_tensors("min", "minimum", axis)
    return _max_or_min("min", x, axis, keepdims, dim, keepdim)


def _two_tensors(op, elementwise, axis):
    if isinstance(axis, Tensor):       # PyTorch's torch.max(a, b) is elementwise
        raise TypeError(f"{op}(a, b) of two tensors: minidl's {op} reduces one tensor over an axis; the "
                        f"elementwise {op} of two tensors is md.{elementwise}(a, b)")
