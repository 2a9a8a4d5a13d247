"""Layers with PyTorch's argument names and weight layouts, so weights copy across."""
import numpy as np

from .. import functional as F
from ..errors import InputError
from ..ops.elementwise import check_dropout_p
from . import init
from .module import Module, Parameter, check_input


def _empty(*shape):
    return Parameter(np.zeros(shape, dtype=np.float32))


class Linear(Module):
    """y = x Wᵀ + b, weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.bias = _empty(out_features) if bias else None
        init.default_(self.weight, self.bias)

    def forward(self, x):
        check_input("Linear", x, self.weight.dtype)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Conv2d(Module):
    """weight (out_channels, in_channels, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = _empty(out_channels, in_channels, kh, kw)
        self.bias = _empty(out_channels) if bias else None
        init.default_(self.weight, self.bias)

    def forward(self, x):
        check_input("Conv2d", x, self.weight.dtype)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"Conv2d: expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class _Pool2d(Module):
    """What the pools share: a window (``kernel_size``), its ``stride`` (the
    window by default) and ``padding``; each says only which reduction it is."""
    pool = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        # stride=None means the window; stride=0 is refused by the op, as F.max_pool2d refuses it
        self.kernel_size, self.stride, self.padding = kernel_size, kernel_size if stride is None else stride, padding

    def forward(self, x):
        return type(self).pool(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    pool = staticmethod(F.max_pool2d)


class AvgPool2d(_Pool2d):
    pool = staticmethod(F.avg_pool2d)


class GlobalAvgPool2d(Module):
    """The course's GAP: a_GAP = 1/(WH) Σ_w Σ_h a, (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool2d: expected (N, C, H, W), got {x.shape}")
        return x.mean(axis=(2, 3))


class Flatten(Module):
    """(N, ...) -> (N, everything else): the batch axis stays."""

    def forward(self, x):
        return F.flatten(x, 1)


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        check_dropout_p("Dropout", p)              # at construction, not at the first forward
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x):
        return x.relu()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()
