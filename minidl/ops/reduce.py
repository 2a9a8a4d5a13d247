"""Reductions over ``axis`` (None, an int or a tuple), with ``keepdims``: NumPy's
names for what PyTorch calls ``dim`` and ``keepdim``.

One rule for reductions over no values: a sum of none is 0, a product 1; a
statistic of none (mean, max, min, argmax, argmin), or a variance of fewer than
ddof + 1 values, is an error that names the op and the shape."""
import numpy as np

from ..tensor import Function, Tensor
from .elementwise import mul, pow, sub


def normalize_axis(op, axis, ndim):
    """``axis`` as a sorted tuple of non-negative ints, checked against ``ndim``."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dims")
    return tuple(sorted(a % ndim for a in axes))


def count(shape, axes):
    """How many values a reduction over ``axes`` of ``shape`` combines."""
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _need_values(op, shape, axes, needed=1):
    if count(shape, axes) < needed:
        raise ValueError(f"{op}: {count(shape, axes)} value(s) over axes {axes} of a tensor of shape "
                         f"{tuple(shape)}; it needs at least {needed}")


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


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    """sum / n."""
    axes = normalize_axis("mean", axis, x.ndim)
    _need_values("mean", x.shape, axes)
    return mul(sum(x, axes, keepdims), 1.0 / count(x.shape, axes))


def var(x, axis=None, keepdims=False, ddof=0):
    """Biased (ddof=0) variance by default, as NumPy; ddof=1 for the unbiased one
    (PyTorch's default: pass ddof=1 to match ``torch.var``)."""
    axes = normalize_axis("var", axis, x.ndim)
    _need_values("var", x.shape, axes, ddof + 1)
    # var  ==  sum((x - mean(x))**2) / (n - ddof)
    d = sub(x, mean(x, axes, keepdims=True))
    return mul(sum(pow(d, 2), axes, keepdims), 1.0 / (count(x.shape, axes) - ddof))


def std(x, axis=None, keepdims=False, ddof=0):
    return pow(var(x, axis, keepdims, ddof), 0.5)         # std  ==  √var


class Prod(Function):
    """The product over axes. Its gradient at x_i is the product of the others,
    computed as exclusive cumulative products (no division: zeros are fine)."""

    def __init__(self, axes, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
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


def prod(x, axis=None, keepdims=False):
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
    a = normalize_axis(op, axis, data.ndim)[0]
    _need_values(op, data.shape, (a,))
    out = getattr(data, op)(axis=a)
    return Tensor._wrap((out.reshape(out.shape[:a] + (1,) + out.shape[a:]) if keepdims else out).astype(np.int64))


def argmax(x, axis=None, keepdims=False): return _arg("argmax", x, axis, keepdims)
def argmin(x, axis=None, keepdims=False): return _arg("argmin", x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Max(axis, keepdims)(x)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return Min(axis, keepdims)(x)
