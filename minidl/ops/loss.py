"""softmax, log_softmax and the losses built on them."""
import numpy as np

from .. import backend
from ..tensor import Function, Tensor
from .elementwise import neg, pow, sub
from .reduce import mean, normalize_axis
from .shape import getitem


class Softmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.axis = normalize_axis("softmax", self.axis, x.ndim)
        e = self.xp.exp(x - x.max(axis=self.axis, keepdims=True))  # shift: no overflow
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        y = self.y
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """x - logsumexp(x), computed after subtracting the max: stable for logits of 1e4."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.axis = normalize_axis("log_softmax", self.axis, x.ndim)
        s = x - x.max(axis=self.axis, keepdims=True)
        self.y = s - self.xp.log(self.xp.exp(s).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy):
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=-1):
    return Softmax(axis)(x)


def log_softmax(x, axis=-1):
    return LogSoftmax(axis)(x)


def _check_finite(op, loss):
    backend.defer_check(~backend.get_array_module(loss.data).isfinite(loss.data).all(),
                        FloatingPointError, f"{op}: the loss is NaN or inf; check the inputs for "
                        "NaN and the learning rate for divergence")
    return loss


def cross_entropy(logits, targets):
    """Mean negative log-likelihood of integer class ``targets`` (N,) under
    ``logits`` (N, C)."""
    t = targets.data if isinstance(targets, Tensor) else targets
    t = np.asarray(t) if isinstance(t, (list, tuple, int, np.integer)) else t
    if backend.device_of(t) != logits.device:
        t = backend.to_device(t, logits.device)      # host targets for GPU logits: one copy
    xp = backend.get_array_module(logits.data)
    if logits.ndim != 2 or t.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: expected logits (N, C) and targets (N,), got "
                         f"{logits.shape} and {t.shape}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype "
                        f"{t.dtype}")
    if t.size:
        backend.defer_check(((t < 0) | (t >= logits.shape[1])).any(), ValueError,
                            f"cross_entropy: targets must be class indices in [0, {logits.shape[1]}) "
                            f"for logits of shape {logits.shape}; some are outside")
    # -mean_i log softmax(logits_i)[t_i]
    picked = getitem(log_softmax(logits, axis=1), (xp.arange(len(t)), t))
    return _check_finite("cross_entropy", neg(mean(picked)))


def mse_loss(pred, target):
    """Mean of (pred - target)²; shapes must match exactly (no silent broadcast)."""
    target_shape = target.shape if hasattr(target, "shape") else np.shape(target)
    if tuple(pred.shape) != tuple(target_shape):
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape "
                         f"{tuple(target_shape)}; they must match (an (N, 1) against (N,) "
                         "would silently broadcast to (N, N))")
    if not isinstance(target, Tensor) and backend.device_of(target) != pred.device:
        target = backend.to_device(np.asarray(target, dtype=pred.dtype), pred.device)   # host target
    return _check_finite("mse_loss", mean(pow(sub(pred, target), 2)))


