"""Elementwise ops. Broadcasting works both ways: each backward reduces its
gradient back to its input's shape with ``sum_to``. Constants are Python floats:
a NumPy float64 scalar would promote a float32 array."""
import math

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..errors import InputError
from ..tensor import Function, Tensor, _as_tensors


def sum_to(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, so the
    gradient has the input's ``shape`` again."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def sum_product_to(a, b, shape):
    """``sum_to(a * b, shape)`` without the a·b temporary: einsum multiplies and
    sums in one pass (BatchNorm's Σ dl/dy·x̂ and Σ(x − μ)²)."""
    return _einsum_to(shape, a, b)


def einsum_sum_to(a, shape):
    """``sum_to(a, shape)`` by einsum: on BatchNorm's channel-major activations
    3× faster than NumPy's pairwise sum (μ, dl/dβ), with einsum's accuracy, the
    same as ``sum_product_to``'s (about 1e-6 relative over 10⁵ float32 values,
    against 1e-7 pairwise)."""
    return _einsum_to(shape, a)


def _einsum_to(shape, *arrays):
    """The einsum that sums the product of ``arrays`` (all of one shape) to ``shape``."""
    a = arrays[0]
    letters = "abcdefghijklmnopqrstuvwxyz"[:a.ndim]
    lead = a.ndim - len(shape)
    kept = "".join(c for i, c in enumerate(letters)
                   if i >= lead and (shape[i - lead] != 1 or a.shape[i] == 1))
    spec = ",".join([letters] * len(arrays)) + "->" + kept
    return get_array_module(a).einsum(spec, *arrays).reshape(shape)


def _broadcast_shape(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise InputError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast "
                         "(trailing axes must be equal or 1)") from None


class Add(Function):
    def forward(self, a, b):
        _broadcast_shape("add", a, b)
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        _broadcast_shape("mul", a, b)
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return sum_to(gy * self.b, self.a.shape), sum_to(gy * self.a, self.b.shape)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """x ** c for a constant exponent c."""

    def __init__(self, c):
        if not np.isscalar(c):
            raise TypeError(f"pow: the exponent must be a Python number, got {type(c).__name__}; "
                            "for a tensor exponent write exp(b * log(a))")
        self.c = c.item() if isinstance(c, np.generic) else c  # a NumPy scalar would promote float32
        # x ** 2 of an integer stays an integer; x ** 0.5 or x ** -1 does not
        self.float_result = not (isinstance(self.c, int) and self.c >= 0)

    def forward(self, x):
        self.x = x
        return x ** self.c

    def backward(self, gy):
        if self.c == 0:                      # x**0 is constant: 0, not 0·x⁻¹ (NaN at x = 0)
            return self.xp.zeros_like(gy)
        return gy * self.c * self.x ** (self.c - 1)


class Exp(Function):
    float_result = True

    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    float_result = True

    def forward(self, x):
        self.x = x
        return self.xp.log(x)

    def backward(self, gy):
        return gy / self.x


class Abs(Function):
    def forward(self, x):
        self.x = x
        return self.xp.abs(x)

    def backward(self, gy):
        return gy * self.xp.sign(self.x)


class Clip(Function):
    """min(max(x, lo), hi), PyTorch's clamp: with lo > hi every value is hi (and
    the gradient 0). Either bound may be None."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        self.x = x
        y = x if self.lo is None else self.xp.maximum(x, self.lo)
        return y if self.hi is None else self.xp.minimum(y, self.hi)

    def backward(self, gy):
        inside = self.xp.ones_like(self.x, dtype=bool)
        if self.lo is not None:
            inside &= self.x >= self.lo
        if self.hi is not None:
            inside &= self.x <= self.hi
        return gy * inside


class Maximum(Function):
    """Elementwise max of two tensors; on a tie each side gets half."""

    def forward(self, a, b):
        _broadcast_shape("maximum", a, b)
        self.a, self.b = a, b
        return self.xp.maximum(a, b)

    def backward(self, gy):
        a, b = self.a, self.b
        wa = ((a > b) + 0.5 * (a == b)).astype(gy.dtype)
        return sum_to(gy * wa, a.shape), sum_to(gy * (1 - wa), b.shape)


class Where(Function):
    """where(cond, a, b): a where cond holds, else b."""

    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        out = _broadcast_shape("where", a, b)
        try:
            np.broadcast_shapes(np.shape(self.cond), out)
        except ValueError:
            raise InputError(f"where: condition of shape {np.shape(self.cond)} does not broadcast "
                             f"with values of shape {out}") from None
        self.shapes = a.shape, b.shape
        return self.xp.where(self.cond, a, b)

    def backward(self, gy):
        zero = self.xp.zeros((), dtype=gy.dtype)
        return (sum_to(self.xp.where(self.cond, gy, zero), self.shapes[0]),
                sum_to(self.xp.where(self.cond, zero, gy), self.shapes[1]))


class ReLU(Function):
    """On the thread pool, one piece of the activation a thread (``backend.outer_pieces``)."""

    def forward(self, x):
        xp = self.xp
        self.y = xp.empty_like(x)

        def piece(c):
            xp.maximum(x[c], 0, out=self.y[c])
        backend.parallel(piece, backend.outer_pieces(x), xp)
        return self.y

    def backward(self, gy):
        xp = self.xp
        gx = xp.empty_like(self.y, dtype=gy.dtype)

        def piece(c):
            xp.multiply(gy[c], self.y[c] > 0, out=gx[c])
        backend.parallel(piece, backend.outer_pieces(self.y), xp)
        return gx


class Sigmoid(Function):
    float_result = True

    def forward(self, x):
        # 1/(1 + e^−x) for x ≥ 0 and e^x/(1 + e^x) for x < 0: e^(−|x|) never
        # overflows, and the negative tail keeps full relative precision
        # (0.5·tanh(x/2) + 0.5 cancels to 0 there: 1.7e-4 relative error at x = −30)
        e = self.xp.exp(-self.xp.abs(x))
        self.y = self.xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self.y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class Tanh(Function):
    float_result = True

    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


class LeakyReLU(Function):
    def __init__(self, negative_slope=0.01):
        self.slope = negative_slope

    def forward(self, x):
        self.positive = x > 0
        return self.xp.where(self.positive, x, x * self.slope)

    def backward(self, gy):
        return gy * self.xp.where(self.positive, 1.0, self.slope).astype(gy.dtype)


class ELU(Function):
    """x for x > 0, α(eˣ − 1) below: smooth at 0 when α = 1."""
    float_result = True

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def forward(self, x):
        self.positive = x > 0
        self.below = self.alpha * (self.xp.exp(self.xp.minimum(x, 0)) - 1)   # exp of x ≤ 0 never overflows
        return self.xp.where(self.positive, x, self.below)

    def backward(self, gy):
        # d/dx α(eˣ − 1) = α·eˣ = below + α
        return gy * self.xp.where(self.positive, 1.0, self.below + self.alpha).astype(gy.dtype)


def erf(a):
    """The error function of an array, to about 1e-15, from any array module:
    its Taylor series below |x| = 3, its continued fraction for erfc above."""
    xp = get_array_module(a)
    x = xp.abs(a.astype(np.float64))
    s = xp.minimum(x, 3.0)
    term, total = s.copy(), s.copy()
    for n in range(1, 90):               # erf(s) = 2/√π Σ (−1)ⁿ s^(2n+1) / (n!·(2n + 1))
        term = term * (-s * s) / n
        total += term / (2 * n + 1)
    z = xp.maximum(x, 3.0)
    f = z.copy()                          # erfc(z) = e^(−z²)/√π / (z + ½/(z + 1/(z + 3/2/(z + ...))))
    for k in range(80, 0, -1):
        f = z + (k / 2) / f
    value = xp.where(x < 3.0, total * (2 / math.sqrt(math.pi)), 1 - xp.exp(-z * z) / (math.sqrt(math.pi) * f))
    return (xp.sign(a) * value).astype(a.dtype)


class GELU(Function):
    """x·Φ(x), Φ the standard normal CDF (PyTorch's default, approximate="none"),
    or with ``approximate="tanh"`` 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))."""
    float_result = True

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        self.x = x
        if self.approximate == "tanh":
            self.t = self.xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + erf(x / math.sqrt(2)))                               # Φ(x)
        return x * self.cdf

    def backward(self, gy):
        x = self.x
        if self.approximate == "tanh":
            dt = (1 - self.t ** 2) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x ** 2)
            return gy * (0.5 * (1 + self.t) + 0.5 * x * dt)
        pdf = self.xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)                        # φ(x)
        return gy * (self.cdf + x * pdf)                                           # Φ + x·φ


class Softplus(Function):
    """log(1 + e^(βx))/β, linear above ``threshold`` (βx > threshold) as PyTorch."""
    float_result = True

    def __init__(self, beta=1.0, threshold=20.0):
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        self.bx = self.beta * x
        # log(1 + e^t) = max(t, 0) + log(1 + e^(−|t|)): no overflow
        soft = (self.xp.maximum(self.bx, 0) + self.xp.log1p(self.xp.exp(-self.xp.abs(self.bx)))) / self.beta
        return self.xp.where(self.bx > self.threshold, x, soft)

    def backward(self, gy):
        sig = 1 / (1 + self.xp.exp(-self.bx))                # d/dx softplus = σ(βx)
        return gy * self.xp.where(self.bx > self.threshold, 1.0, sig).astype(gy.dtype)


def add(a, b): return Add()(a, b)
def mul(a, b): return Mul()(a, b)
def neg(x): return Neg()(x)
def _negate(x):
    # a number is negated as a number: it then takes the tensor's dtype in add,
    # as every scalar operand does (neg() would first make it a float32 tensor)
    return -x if isinstance(x, (int, float, np.number)) else neg(x)


def sub(a, b): return add(a, _negate(b))             # a - b  ==  a + (-b)
def rsub(a, b): return add(b, _negate(a))            # b - a
def pow(x, c):  # noqa: A001  (the op's name)
    if isinstance(x, Tensor) and x.dtype.kind in "biu" and isinstance(c, (int, np.integer)) and c < 0:
        raise InputError(f"pow: an integer tensor ({x.dtype}, shape {x.shape}) to a negative integer power "
                         f"({c}) is refused, as in PyTorch; cast first: x.astype('float32') ** {c}")
    return Pow(c)(x)


def div(a, b):
    # a / b  ==  a * b**-1  (of an integer b too: true division is float, as int32 / int32)
    if np.isscalar(b):
        return mul(a, 1.0 / b)
    if isinstance(a, Tensor) and a.dtype.kind == "f" and isinstance(b, Tensor) and b.dtype.kind in "biu":
        b = Tensor._wrap(b.data.astype(a.dtype))      # an integer meets a float: it takes the float's dtype
    return mul(a, Pow(-1)(b))


def rdiv(a, b): return div(b, a)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return pow(x, 0.5)                      # sqrt(x)  ==  x ** 0.5
def abs(x): return Abs()(x)                          # noqa: A001
def clip(x, lo=None, hi=None): return Clip(lo, hi)(x)
def maximum(a, b): return Maximum()(a, b)
def minimum(a, b): return neg(maximum(_negate(a), _negate(b)))   # min(a, b)  ==  −max(−a, −b)
def leaky_relu(x, negative_slope=0.01): return LeakyReLU(negative_slope)(x)
def elu(x, alpha=1.0): return ELU(alpha)(x)
def gelu(x, approximate="none"): return GELU(approximate)(x)
def softplus(x, beta=1.0, threshold=20.0): return Softplus(beta, threshold)(x)
def relu(x): return ReLU()(x)
def sigmoid(x): return Sigmoid()(x)
def tanh(x): return Tanh()(x)
def silu(x): return mul(x, sigmoid(x))                # silu(x)  ==  x·σ(x)


def where(cond, a, b):
    """a where cond holds, else b; a and b tensors or Python numbers. Two Python
    ints give an int64 tensor and two floats a float32 one, as in PyTorch; the
    values live where cond does."""
    cond = cond.data if isinstance(cond, Tensor) else cond
    values = [v for v in (a, b) if isinstance(v, Tensor)]
    device = values[0].device if values else backend.device_of(cond) if hasattr(cond, "dtype") else None
    if device is not None and hasattr(cond, "dtype") and backend.device_of(cond) != device:
        cond = backend.to_device(cond, device)              # a host mask for GPU values
    if not values and device is not None:
        xp = backend.module_for(device)
        ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (a, b))
        a, b = (Tensor._wrap(xp.full((), v, dtype=np.int64 if ints else np.float32)) for v in (a, b))
    return Where(cond)(a, b)


def check_dropout_p(op, p):
    if not 0 <= p < 1:
        raise ValueError(f"{op}: p must be in [0, 1), got {p}")


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each value with probability p, scale the rest by
    1/(1-p) so the expectation is unchanged; identity when not training."""
    from .. import backend
    check_dropout_p("dropout", p)
    if not training or p == 0:
        return x
    # drawn where x lives (no host-to-device copy per call); both generators follow manual_seed
    draw = backend.rng() if x.device == "cpu" else backend.device_rng()
    keep = draw.random(x.shape, dtype=np.float32) >= p
    return mul(x, (keep / (1 - p)).astype(x.dtype))


# ---- comparisons: boolean tensors, outside the graph (they have no gradient) ----
def _compare(op, how, a, b):
    a, b = _as_tensors(op, (a, b))
    _broadcast_shape(op, a.data, b.data)
    return Tensor._wrap(how(a.data, b.data))


def gt(a, b): return _compare("gt", lambda x, y: x > y, a, b)
def ge(a, b): return _compare("ge", lambda x, y: x >= y, a, b)
def lt(a, b): return _compare("lt", lambda x, y: x < y, a, b)
def le(a, b): return _compare("le", lambda x, y: x <= y, a, b)
def eq(a, b): return _compare("eq", lambda x, y: x == y, a, b)
def ne(a, b): return _compare("ne", lambda x, y: x != y, a, b)


def clamp(x, min=None, max=None):  # noqa: A002  (PyTorch's argument names)
    """PyTorch's clamp: min(max(x, min), max); a bound is a number (clip) or a
    tensor, which then gets the gradient where it is the value."""
    if not isinstance(min, Tensor) and not isinstance(max, Tensor):
        return clip(x, min, max)
    # clamp  ==  where(x < lo, lo, x), then where(that > hi, hi, that)
    y = x if min is None else where(_values(x) < _values(min), min, x)
    return y if max is None else where(_values(y) > _values(max), max, y)


def _values(v):
    return v.data if isinstance(v, Tensor) else v


def masked_fill(x, mask, value):
    """``value`` where the boolean ``mask`` (broadcast to x) holds, x elsewhere; x's
    dtype kept, as PyTorch's. The gradient reaches x where the mask is False."""
    m = mask.data if isinstance(mask, Tensor) else mask
    if getattr(m, "dtype", None) != np.bool_:
        raise TypeError(f"masked_fill: the mask must be a boolean tensor (e.g. x > 0), got "
                        f"{getattr(m, 'dtype', type(m).__name__)}")
    if _broadcast_shape("masked_fill", m, x.data) != x.shape:
        raise InputError(f"masked_fill: a mask of shape {m.shape} does not broadcast to the tensor's "
                         f"shape {x.shape}")
    if isinstance(value, Tensor):
        if value.size != 1:
            raise InputError(f"masked_fill: the value must be a number or a one-value tensor, got shape "
                             f"{value.shape}")
        value = value.item()
    fill = Tensor._wrap(get_array_module(x.data).full((), value, dtype=x.dtype))
    return where(mask, fill, x)
