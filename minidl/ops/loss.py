"""softmax, log_softmax and the losses built on them."""
import numpy as np

from .. import backend
from ..errors import InputError, OutOfRangeError
from ..tensor import Function, Tensor
from .elementwise import add, clip, log, mul, neg, pow, rsub, sub
from .reduce import mean, normalize_axis, pytorch_names
from .shape import getitem


class Softmax(Function):
    def __init__(self, axes):
        self.axis = axes

    def forward(self, x):
        e = self.xp.exp(x - x.max(axis=self.axis, keepdims=True))  # shift: no overflow
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        y = self.y
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """x - logsumexp(x), computed after subtracting the max: stable for logits of 1e4."""

    def __init__(self, axes):
        self.axis = axes

    def forward(self, x):
        s = x - x.max(axis=self.axis, keepdims=True)
        self.y = s - self.xp.log(self.xp.exp(s).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy):
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=None, *, dim=None):
    """Along ``axis`` (NumPy's name) or ``dim`` (PyTorch's), the last by default."""
    axis = pytorch_names("softmax", axis, dim, None, None)[0]
    return Softmax(normalize_axis("softmax", -1 if axis is None else axis, x.ndim))(x)


def log_softmax(x, axis=None, *, dim=None):
    """Along ``axis`` (NumPy's name) or ``dim`` (PyTorch's), the last by default."""
    axis = pytorch_names("log_softmax", axis, dim, None, None)[0]
    return LogSoftmax(normalize_axis("log_softmax", -1 if axis is None else axis, x.ndim))(x)


def _check_finite(op, loss):
    backend.defer_check(~backend.get_array_module(loss.data).isfinite(loss.data).all(),
                        FloatingPointError, f"{op}: the loss is NaN or inf; check the inputs for "
                        "NaN and the learning rate for divergence")
    return loss


def _class_targets(op, scores, targets, what):
    """Integer class targets (N,) for ``scores`` (N, C), called ``what`` in messages,
    on the scores' device, checked."""
    t = targets.data if isinstance(targets, Tensor) else targets
    t = np.asarray(t) if isinstance(t, (list, tuple, int, np.integer)) else t
    if backend.device_of(t) != scores.device:
        t = backend.to_device(t, scores.device)      # host targets for GPU scores: one copy
    if scores.ndim == 2 and t.shape == scores.shape:
        # PyTorch's cross_entropy also reads (N, C) targets as class probabilities; minidl does not
        raise InputError(f"{op}: targets of shape {t.shape}, the shape of the {what}, look one-hot; "
                         f"{op} takes class indices (N,): pass targets.argmax(axis=1)")
    if scores.ndim != 2 or t.shape != (scores.shape[0],):
        raise ValueError(f"{op}: expected {what} (N, C) and targets (N,), got {scores.shape} and {t.shape}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integer class indices, got dtype {t.dtype}")
    if t.size:
        backend.defer_check(((t < 0) | (t >= scores.shape[1])).any(), OutOfRangeError,
                            f"{op}: targets must be class indices in [0, {scores.shape[1]}) "
                            f"for {what} of shape {scores.shape}; some are outside")
    return t


def nll_loss(log_probs, targets):
    """Mean negative log-likelihood: −mean_i log_probs[i, t_i], for log-probabilities
    (N, C) (log_softmax's output) and integer targets (N,)."""
    t = _class_targets("nll_loss", log_probs, targets, "log_probs")
    xp = backend.get_array_module(log_probs.data)
    # −mean_i log_probs[i, t_i]
    return _check_finite("nll_loss", neg(mean(getitem(log_probs, (xp.arange(len(t)), t)))))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood of integer class ``targets`` (N,) under
    ``logits`` (N, C)."""
    # cross_entropy  ==  nll_loss(log_softmax(logits))
    _class_targets("cross_entropy", logits, targets, "logits")
    return nll_loss(log_softmax(logits, axis=1), targets)


def one_hot(targets, num_classes):
    """(N,) integer classes as an (N, num_classes) int64 tensor of 0s and 1s
    (outside the graph)."""
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    xp = backend.get_array_module(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer classes, got dtype {t.dtype}")
    if t.size and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise InputError(f"one_hot: classes must lie in [0, {num_classes}), got values from {int(t.min())} "
                         f"to {int(t.max())}")
    return Tensor._wrap((t[..., None] == xp.arange(num_classes)).astype(np.int64))


class BCEWithLogits(Function):
    """mean(max(z, 0) − z·t + log(1 + e^(−|z|))): the binary cross-entropy of
    σ(z) against t, written so no exp overflows. Its gradient, (σ(z) − t)/n."""
    float_result = True

    def forward(self, z, t):
        self.z, self.t = z, t
        xp = self.xp
        return (xp.maximum(z, 0) - z * t + xp.log1p(xp.exp(-xp.abs(z)))).mean()

    def backward(self, gy):
        xp, z, t = self.xp, self.z, self.t
        sig = xp.where(z >= 0, 1 / (1 + xp.exp(-xp.abs(z))), xp.exp(-xp.abs(z)) / (1 + xp.exp(-xp.abs(z))))
        g = gy / z.size
        return g * (sig - t), g * -z


def _same_shape(op, pred, target):
    shape = target.shape if hasattr(target, "shape") else np.shape(target)
    if tuple(pred.shape) != tuple(shape):
        raise ValueError(f"{op}: pred has shape {pred.shape} but target has shape {tuple(shape)}; "
                         "they must match (an (N, 1) against (N,) would silently broadcast to (N, N))")
    if not isinstance(target, Tensor) and backend.device_of(target) != pred.device:
        target = backend.to_device(np.asarray(target, dtype=pred.dtype), pred.device)   # host target
    return target


def binary_cross_entropy_with_logits(logits, target):
    """Mean binary cross-entropy of σ(logits) against targets in [0, 1]: stable for any logit."""
    target = _same_shape("binary_cross_entropy_with_logits", logits, target)
    return _check_finite("binary_cross_entropy_with_logits", BCEWithLogits()(logits, target))


def binary_cross_entropy(probs, target):
    """−mean(t·log p + (1 − t)·log(1 − p)) for probabilities p; each log is kept
    ≥ −100, as PyTorch does, so p = 0 or 1 gives a large loss, not inf."""
    target = _same_shape("binary_cross_entropy", probs, target)
    with np.errstate(divide="ignore"):          # log 0 = −inf, then clamped: p = 0 or 1 is no error here
        log_p, log_1mp = clip(log(probs), -100, None), clip(log(rsub(probs, 1.0)), -100, None)
    # −mean(t·log p + (1 − t)·log(1 − p))
    return _check_finite("binary_cross_entropy", neg(mean(add(mul(target, log_p), mul(rsub(target, 1.0), log_1mp)))))


def mse_loss(pred, target):
    """Mean of (pred - target)²; shapes must match exactly (no silent broadcast)."""
    target = _same_shape("mse_loss", pred, target)
    return _check_finite("mse_loss", mean(pow(sub(pred, target), 2)))
