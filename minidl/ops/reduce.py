"""Reductions over ``axis`` (None, an int or a tuple), with ``keepdims``."""
from ..tensor import Function
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


def expand_back(gy, shape, axes, keepdims):
    """Put the reduced ``axes`` back into ``gy`` and broadcast it to ``shape``."""
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
        if any(x.shape[a] == 0 for a in self.axes):
            raise ValueError(f"{self.reduce}: cannot reduce over an axis of length 0 (input shape "
                             f"{x.shape}, axes {self.axes}): an empty {self.reduce} has no value")
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
    """sum / n. The mean of no values is NaN, as PyTorch returns (and NumPy, with
    a warning we do not repeat); sum of no values is 0."""
    axes = normalize_axis("mean", axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    return mul(sum(x, axes, keepdims), 1.0 / n if n else float("nan"))


def var(x, axis=None, keepdims=False, ddof=0):
    """Biased (ddof=0) variance by default, as NumPy; ddof=1 for the unbiased one."""
    axes = normalize_axis("var", axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    if n - ddof <= 0:
        raise ValueError(f"var: {n} value(s) over axis {axis} with ddof={ddof}: "
                         "the variance is undefined")
    # var  ==  sum((x - mean(x))**2) / (n - ddof)
    d = sub(x, mean(x, axes, keepdims=True))
    return mul(sum(pow(d, 2), axes, keepdims), 1.0 / (n - ddof))


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Max(axis, keepdims)(x)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return Min(axis, keepdims)(x)
