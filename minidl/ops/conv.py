"""Convolution and pooling: fast kernels, and beside each a slow reference built
from basic ops that the tests compare it with.

Every kernel walks the kh·kw offsets of the window: for offset (i, j) the input
pixels it touches form one strided slice, ``x[:, :, i::s, j::s]`` cut to the
output size. The fast conv gathers those slices into one matrix (im2col) and
does a single matrix product; the pools take a running max or sum over them.
"""
import numpy as np

from ..tensor import Function
from .elementwise import add
from .matmul import matmul
from .reduce import max as reduce_max
from .shape import getitem, pad, reshape, stack, transpose

# Largest im2col buffer built at once; bigger batches are processed in chunks
# so a batch-1000 step never allocates a 200+ MB matrix.
COL_BYTES = 64 * 2**20


def _pair(v, name):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or any(not isinstance(n, (int, np.integer)) or n < 0 for n in v):
        raise ValueError(f"{name} must be an int or a pair of non-negative ints, got {v}")
    return v


def out_size(op, x_shape, kernel, stride, padding):
    """Output (OH, OW), with a clear error when the window does not fit."""
    H, W = x_shape[-2] + 2 * padding[0], x_shape[-1] + 2 * padding[1]
    if stride[0] < 1 or stride[1] < 1:
        raise ValueError(f"{op}: stride must be >= 1, got {stride}")
    if kernel[0] > H or kernel[1] > W:
        raise ValueError(f"{op}: kernel {kernel} is larger than the padded input "
                         f"{(H, W)} (input shape {tuple(x_shape)}, padding {padding})")
    return (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1


def window(i, j, stride, out):
    """Index of the input pixels that kernel offset (i, j) touches, for every output."""
    return (Ellipsis, slice(i, i + stride[0] * (out[0] - 1) + 1, stride[0]),
            slice(j, j + stride[1] * (out[1] - 1) + 1, stride[1]))


def _check_nchw(op, x):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected input of shape (N, C, H, W), got {x.shape}")


class Conv2d(Function):
    """y = W ⋆ x + b via im2col: one (O, C·kh·kw) @ (C·kh·kw, N·OH·OW) product.
    Work is done channel-major, (C, N, H, W), so each gather copies whole rows."""

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = _pair(stride, "conv2d stride"), _pair(padding, "conv2d padding")

    def forward(self, x, W, b=None):
        _check_nchw("conv2d", x)
        if W.ndim != 4 or W.shape[1] != x.shape[1]:
            raise ValueError(f"conv2d: weight of shape {W.shape} (out, in, kh, kw) does not fit "
                             f"input of shape {x.shape}: expected in = {x.shape[1]} channels")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"conv2d: bias has shape {b.shape}, expected ({W.shape[0]},)")
        N, C, H, Wd = x.shape
        O, _, kh, kw = W.shape
        self.out = out_size("conv2d", x.shape, (kh, kw), self.stride, self.padding)
        self.x_shape, self.W, self.has_bias = x.shape, W, b is not None
        self.xc = self._pad_channel_major(x)                      # (C, N, Hp, Wp)
        Wm = W.reshape(O, -1)                                     # (O, C·kh·kw)
        y = self.xp.empty((O, N) + self.out, dtype=x.dtype)      # (O, N, OH, OW)
        chunks = self._chunks()
        for n0, n1 in chunks:
            col = self._im2col(self.xc[:, n0:n1])                 # (C·kh·kw, n·OH·OW)
            y[:, n0:n1] = (Wm @ col).reshape((O, n1 - n0) + self.out)
        self.col = col if len(chunks) == 1 else None              # reused by backward
        if b is not None:
            y += b.reshape(O, 1, 1, 1)
        return y.transpose(1, 0, 2, 3)                            # (N, O, OH, OW)

    def backward(self, gy):
        O, C, kh, kw = self.W.shape
        Wm = self.W.reshape(O, -1)
        gyc = gy.transpose(1, 0, 2, 3)                            # (O, N, OH, OW)
        gW = self.xp.zeros((Wm.shape[1], O), dtype=gy.dtype)     # (C·kh·kw, O)
        gxc = self.xp.zeros_like(self.xc) if self.needs_grad[0] else None   # (C, N, Hp, Wp)
        for n0, n1 in self._chunks():
            gy_m = gyc[:, n0:n1].reshape(O, -1)                   # (O, n·OH·OW)
            col = self.col if self.col is not None else self._im2col(self.xc[:, n0:n1])
            gW += col @ gy_m.T                    # dl/dW = dl/dy · colᵀ, kept transposed: faster
            if gxc is None:                       # the input needs no gradient (the first layer)
                continue
            gcol = (Wm.T @ gy_m).reshape((C, kh, kw, n1 - n0) + self.out)
            for i in range(kh):                                  # col2im: scatter back, adding overlaps
                for j in range(kw):
                    gxc[:, n0:n1][window(i, j, self.stride, self.out)] += gcol[:, i, j]
        ph, pw = self.padding
        gx = None if gxc is None else \
            gxc[:, :, ph:ph + self.x_shape[2], pw:pw + self.x_shape[3]].transpose(1, 0, 2, 3)
        grads = (gx, gW.T.reshape(self.W.shape))
        return grads + ((gyc.sum(axis=(1, 2, 3)),) if self.has_bias else ())

    def _pad_channel_major(self, x):
        N, C, H, W = x.shape
        ph, pw = self.padding
        xc = self.xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
        xc[:, :, ph:ph + H, pw:pw + W] = x.transpose(1, 0, 2, 3)
        return xc

    def _im2col(self, xc):
        """(C, n, Hp, Wp) -> (C·kh·kw, n·OH·OW): row (c, i, j) holds offset (i, j) of channel c."""
        _, _, kh, kw = self.W.shape
        C, n = xc.shape[:2]
        sC, sN, sH, sW = xc.strides
        # a view whose element (c, i, j, n, oh, ow) is xc[c, n, oh·s + i, ow·s + j]: the
        # slices window(i, j) for every offset at once, copied by a single reshape
        view = self.xp.lib.stride_tricks.as_strided(
            xc, (C, kh, kw, n) + self.out, (sC, sH, sW, sN, sH * self.stride[0], sW * self.stride[1]))
        return view.reshape(C * kh * kw, -1)

    def _chunks(self):
        C, N = self.xc.shape[:2]
        _, _, kh, kw = self.W.shape
        per_sample = C * kh * kw * self.out[0] * self.out[1] * self.xc.itemsize
        step = max(1, COL_BYTES // per_sample)
        return [(n0, min(n0 + step, N)) for n0 in range(0, N, step)]


def conv2d(x, W, b=None, stride=1, padding=0):
    """2-D cross-correlation, PyTorch's layout: x (N, C, H, W), W (O, C, kh, kw)."""
    return Conv2d(stride, padding)(x, W, b) if b is not None else Conv2d(stride, padding)(x, W)


def conv2d_reference(x, W, b=None, stride=1, padding=0):
    """The slow, obviously correct conv: for each kernel offset (i, j), the slice of
    the input it touches times W[:, :, i, j], summed. Basic ops only; autograd
    differentiates it."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    out = out_size("conv2d_reference", x.shape, W.shape[2:], stride, padding)
    xp_ = pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    y = None
    for i in range(W.shape[2]):
        for j in range(W.shape[3]):
            patch = transpose(getitem(xp_, window(i, j, stride, out)), (0, 2, 3, 1))  # (N, OH, OW, C)
            term = matmul(patch, transpose(getitem(W, (slice(None), slice(None), i, j))))
            y = term if y is None else add(y, term)                                   # (N, OH, OW, O)
    y = transpose(y, (0, 3, 1, 2))
    return y if b is None else add(y, reshape(b, (1, -1, 1, 1)))


class MaxPool2d(Function):
    """Running max over the kh·kw window offsets; the first maximum gets the
    gradient, as in PyTorch."""

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = _pair(kernel_size, "max_pool2d kernel_size")
        self.stride = _pair(stride if stride is not None else kernel_size, "max_pool2d stride")
        self.padding = _pair(padding, "max_pool2d padding")

    def forward(self, x):
        _check_nchw("max_pool2d", x)
        self.out = out_size("max_pool2d", x.shape, self.kernel, self.stride, self.padding)
        ph, pw = self.padding
        self.x_shape = x.shape
        if ph or pw:
            x = self.xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
        self.padded_shape = x.shape
        self.x = x
        self.y = x[window(0, 0, self.stride, self.out)].copy()
        for k in range(1, self.kernel[0] * self.kernel[1]):
            self.xp.maximum(self.y, x[window(*divmod(k, self.kernel[1]), self.stride, self.out)],
                            out=self.y)
        return self.y

    def backward(self, gy):
        gx = self.xp.zeros(self.padded_shape, dtype=gy.dtype)
        taken = self.xp.zeros(self.y.shape, dtype=bool)     # window already gave its gradient
        for k in range(self.kernel[0] * self.kernel[1]):
            idx = window(*divmod(k, self.kernel[1]), self.stride, self.out)
            first = (self.x[idx] == self.y) & ~taken          # the first offset holding the max
            gx[idx] += gy * first
            taken |= first
        ph, pw = self.padding
        return gx[:, :, ph:ph + self.x_shape[2], pw:pw + self.x_shape[3]]


class AvgPool2d(Function):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = _pair(kernel_size, "avg_pool2d kernel_size")
        self.stride = _pair(stride if stride is not None else kernel_size, "avg_pool2d stride")
        self.padding = _pair(padding, "avg_pool2d padding")

    def forward(self, x):
        _check_nchw("avg_pool2d", x)
        self.out = out_size("avg_pool2d", x.shape, self.kernel, self.stride, self.padding)
        ph, pw = self.padding
        self.x_shape = x.shape
        x = self.xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        self.padded_shape = x.shape
        y = self.xp.zeros(x.shape[:2] + self.out, dtype=x.dtype)
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                y += x[window(i, j, self.stride, self.out)]
        return y / (self.kernel[0] * self.kernel[1])

    def backward(self, gy):
        gx = self.xp.zeros(self.padded_shape, dtype=gy.dtype)
        g = gy / (self.kernel[0] * self.kernel[1])
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                gx[window(i, j, self.stride, self.out)] += g
        ph, pw = self.padding
        return gx[:, :, ph:ph + self.x_shape[2], pw:pw + self.x_shape[3]]


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d(kernel_size, stride, padding)(x)


def _pool_reference(x, kernel_size, stride, padding, reduce):
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else kernel_size, "stride")
    p = _pair(padding, "padding")
    out = out_size("pool_reference", x.shape, k, s, p)
    xp_ = pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2),
              value=-np.inf if reduce == "max" else 0.0)
    slices = stack([getitem(xp_, window(i, j, s, out)) for i in range(k[0]) for j in range(k[1])])
    return reduce_max(slices, axis=0) if reduce == "max" else slices.mean(axis=0)


def max_pool2d_reference(x, kernel_size, stride=None, padding=0):
    """Slow max pool: stack every window offset's slice, max over them (basic ops)."""
    return _pool_reference(x, kernel_size, stride, padding, "max")


def avg_pool2d_reference(x, kernel_size, stride=None, padding=0):
    """Slow average pool: stack every window offset's slice, mean over them."""
    return _pool_reference(x, kernel_size, stride, padding, "mean")
