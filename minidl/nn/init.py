"""Weight initialization, in place, drawing from the generator that
``md.manual_seed`` seeds. fan_in = in_features (Linear) or in·kh·kw (Conv2d)."""
import math

import numpy as np

from .. import backend


def fans(t):
    if t.ndim < 2:
        raise ValueError(f"init: fan in/out need a weight with >= 2 dims, got shape {t.shape}")
    receptive = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def gain(nonlinearity, a=0.0):
    """The factor that keeps activations' variance through the nonlinearity."""
    if nonlinearity in ("linear", "sigmoid", "conv2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a ** 2))
    raise ValueError(f"gain: unknown nonlinearity {nonlinearity!r}")


def _fill(t, values):
    t.data[...] = backend.to_device(values.astype(t.dtype), t.device)
    return t


def uniform_(t, low=0.0, high=1.0):
    return _fill(t, backend.rng().uniform(low, high, t.shape))


def normal_(t, mean=0.0, std=1.0):
    return _fill(t, backend.rng().normal(mean, std, t.shape))


def zeros_(t):
    return _fill(t, np.zeros(t.shape))


def ones_(t):
    return _fill(t, np.ones(t.shape))


def xavier_uniform_(t, gain=1.0):
    """U(-a, a), a = gain·sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = fans(t)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -a, a)


def xavier_normal_(t, gain=1.0):
    """N(0, gain²·2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _fan(t, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fans(t)[0 if mode == "fan_in" else 1]


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="relu"):
    """U(-b, b), b = gain·sqrt(3 / fan): the same variance as kaiming_normal_."""
    b = gain(nonlinearity, a) * math.sqrt(3.0 / _fan(t, mode))
    return uniform_(t, -b, b)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="relu"):
    """N(0, gain²/fan); for ReLU and fan_in that is the course's N(0, 2/fan_in) (He et al.)."""
    return normal_(t, 0.0, gain(nonlinearity, a) / math.sqrt(_fan(t, mode)))


def default_(weight, bias=None):
    """PyTorch's default for Linear and Conv2d: kaiming_uniform_ with a = sqrt(5),
    i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias from the same range."""
    kaiming_uniform_(weight, a=math.sqrt(5), nonlinearity="leaky_relu")
    if bias is not None:
        bound = 1 / math.sqrt(fans(weight)[0])
        uniform_(bias, -bound, bound)
