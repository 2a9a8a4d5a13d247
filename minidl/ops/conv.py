"""Convolution and pooling: fast kernels, and beside each a slow reference built
from basic ops that the tests compare it with.

Every kernel walks the kh·kw offsets of the window: for offset (i, j) the input
pixels it touches form one strided slice, ``x[:, :, i::s, j::s]`` cut to the
output size. The fast conv gathers those slices into one matrix (im2col) and
does one matrix product per piece of the batch; the pools take a running max
or sum over them.
"""
from typing import NamedTuple

import numpy as np

from ..backend import module_name
from ..errors import InputError
from ..tensor import Function
from .elementwise import add
from .matmul import matmul
from .reduce import max as reduce_max
from .shape import getitem, pad, reshape, stack, transpose

# im2col is built in pieces of whole samples, so no step ever holds a 200+ MB
# matrix; forward and dl/dW multiply each piece as soon as it is built, while it
# is still in the L2 cache. dl/dx scatters back with kh·kw slice additions per
# piece, so there fewer, bigger pieces win; on a GPU big pieces keep it busy.
# (What each size measured: docs/performance.md.)
CACHE_BYTES = {"numpy": 512 * 2**10, "cupy": 64 * 2**20}
COL_BYTES = 64 * 2**20
# The forward's pieces are also cut to at most SMALL_GEMM multiply-adds, the size
# below which OpenBLAS multiplies without packing its operands.
SMALL_GEMM = {"numpy": 10**6, "cupy": None}
# OpenBLAS runs a product with few rows (O = 6 in LeNet-5's first conv) at a
# fraction of its speed, so a stride-1 conv computes B neighbouring output rows
# together as B·O channels (row blocking, see Conv2d): B is the smallest power
# of two with B·O >= BLOCK_ROWS, at most OH and MAX_BLOCK (the blocked weight
# has B·kh' rows for W's kh, so a large B multiplies mostly zeros). A GPU does
# not need it.
BLOCK_ROWS = {"numpy": 24, "cupy": None}
MAX_BLOCK = 8
# Only a product of at least BLOCK_MACS multiply-adds is blocked: below it the
# deal's Python work outweighs what the product gains (LeNet-5 on 1×28×28 at
# batch 2: the training step 13 % slower blocked; at batch 8 even).
BLOCK_MACS = 2 * 10**6


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
        raise InputError(f"{op}: kernel {kernel} is larger than the padded input "
                         f"{(H, W)} (input shape {tuple(x_shape)}, padding {padding})")
    return (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1


def window(i, j, stride, out):
    """Index of the input pixels that kernel offset (i, j) touches, for every output."""
    return (Ellipsis, slice(i, i + stride[0] * (out[0] - 1) + 1, stride[0]),
            slice(j, j + stride[1] * (out[1] - 1) + 1, stride[1]))


def _check_nchw(op, x):
    if x.ndim != 4:
        raise InputError(f"{op}: expected input of shape (N, C, H, W), got {x.shape}")


def _copy_rows(xp, dst, src):
    """dst[...] = src. NumPy copies short rows element by element; viewed as one
    opaque element each, a row is one memcpy (LeNet-5's rows of 28 floats: 40 %
    less time). That needs one dtype and contiguous rows; otherwise (an upstream
    gradient that is a broadcast view, CuPy, which has no such dtype) a plain copy."""
    if module_name(xp) != "numpy" or dst.dtype != src.dtype or \
            dst.strides[-1] != dst.itemsize or src.strides[-1] != src.itemsize:
        dst[...] = src
        return
    row = np.dtype((np.void, dst.shape[-1] * dst.itemsize))
    dst.view(row)[..., 0] = src.view(row)[..., 0]


def _finite(xp, a):
    return bool(xp.isfinite(a).all())


def _phases(size, pad, block):
    """Where the rows of an image go when dealt into ``block`` phases: (s, h, p)
    with h + pad = block·p + s, for the rows h (a slice with step B) of phase s
    and their places p (a slice). With pad = 0 it also puts a blocked output
    back in order: row p of channel o·B + r is row B·p + r of y's channel o."""
    out = []
    for s in range(block):
        h0 = (s - pad) % block
        if h0 < size:
            p0, n = (h0 + pad) // block, len(range(h0, size, block))
            out.append((s, slice(h0, None, block), slice(p0, p0 + n)))
    return out


def _taps(kh, block):
    """Where W's rows sit in the blocked weight: (r, s, a, i) with
    W′[o·B + r, c·B + s, a] = W[o, c, i] for i = B·a + s − r (a a slice, i a
    slice with step B); W′'s other rows are zero. Returns (kh′, taps)."""
    height = -(-(kh + block - 1) // block)
    out = []
    for r in range(block):
        for s in range(block):
            a = [a for a in range(height) if 0 <= block * a + s - r < kh]
            if a:
                i0 = block * a[0] + s - r
                out.append((r, s, slice(a[0], a[-1] + 1), slice(i0, i0 + block * (len(a) - 1) + 1, block)))
    return height, out


class Blocking(NamedTuple):
    """The conv that Conv2d runs: B, W′'s kernel (kh′, kw), its output's OH′ =
    ⌈OH/B⌉ rows, and where W's rows sit in W′ (``_taps``). B = 1: the plain conv."""
    block: int
    kernel: tuple
    rows: int
    taps: list


def _blocking(kernel, OH, block):
    height, taps = _taps(kernel[0], block)
    return Blocking(block, (height, kernel[1]), -(-OH // block), taps)


class Conv2d(Function):
    """y = W ⋆ x + b via im2col: one (O, C·kh·kw) @ (C·kh·kw, n·OH·Wv) product
    per piece of n samples.

    Work is done channel-major, (C, N, H, W): a sample range is then one slice,
    and the output comes out as (O, N, OH, OW), returned as an (N, O, OH, OW)
    view. The layers after it (ReLU, BN, pooling) keep that memory order, so
    the next conv finds its input channel-major already.

    Hp and Wp are the padded input's height and width. With stride 1 the windows
    run over all Wv = Wp columns, not just the OW that fit: image rows then
    follow each other as one long row, and each im2col row copies as one run
    per sample (about 2.4x faster than OH runs of OW). The last kw − 1 outputs
    of each row straddle two image rows; they are computed, dropped from y, and
    get zero gradient. A spare zero row below the image keeps the last row's
    windows inside the array. With another stride, Wv = OW.

    Row blocking (stride 1, B > 1; ``Blocking``): B neighbouring output rows are
    computed together, so that the product has B·O rows. The padded input's
    rows are dealt into B phases, x′[c·B + s, p] = x[c, B·p + s] (space-to-depth
    along H; x′ has Hp′ rows), and the output rows y[o, B·p + r] are the
    channels o·B + r of a plain stride-1 conv of x′, OH′ = ⌈OH/B⌉ rows, with the
    weight W′[o·B + r, c·B + s, a] = W[o, c, B·a + s − r] of kh′ = ⌈(kh+B−1)/B⌉
    rows, zero where B·a + s − r is outside W. dl/dW gathers back along the
    same taps, dl/dx along the same phases. Whole rows move, so the deal costs
    about one copy of x and of y. The zero taps still read x′: the rows below
    the image must be zeros (no NaN bytes), and an inf or NaN in x would make
    0·inf = NaN where the plain conv has a number. So a non-finite x is
    convolved unblocked, and so is a non-finite dl/dy on its way to dl/dx."""

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = _pair(stride, "conv2d stride"), _pair(padding, "conv2d padding")

    def forward(self, x, W, b=None):
        _check_nchw("conv2d", x)
        if W.ndim != 4 or W.shape[1] != x.shape[1]:
            raise InputError(f"conv2d: weight of shape {W.shape} (out, in, kh, kw) does not fit "
                             f"input of shape {x.shape}: expected in = {x.shape[1]} channels")
        if b is not None and b.shape != (W.shape[0],):
            raise InputError(f"conv2d: bias has shape {b.shape}, expected ({W.shape[0]},)")
        N, O = x.shape[0], W.shape[0]
        self.out = OH, OW = out_size("conv2d", x.shape, W.shape[2:], self.stride, self.padding)
        self.x_shape, self.W = x.shape, W
        self.blocking = g = _blocking(W.shape[2:], OH, self._block(x, W, OH))
        B = g.block
        self.Wm = Wm = self._blocked_weight(g)                    # (O·B, C·B·kh′·kw)
        self.xc = self._pad_channel_major(x, g)                   # (C·B, N, Hp′, Wp)
        windows = self._windows(self.xc, g)                       # (C·B, kh′, kw, N, OH′, Wv)
        # each piece's product goes straight into its slice of one wide output
        # (matmul's out=); the bias is added there, then the rows are cropped to
        # OW columns and put in order, one copy
        y_wide = self.xp.empty((O * B,) + windows.shape[3:], dtype=x.dtype)   # (O·B, N, OH′, Wv)
        for n in self._pieces(windows, CACHE_BYTES[module_name(self.xp)], SMALL_GEMM[module_name(self.xp)], O * B):
            col = windows[:, :, :, n].reshape(Wm.shape[1], -1)   # im2col: (C·B·kh′·kw, n·OH′·Wv)
            self.xp.matmul(Wm, col, out=y_wide[:, n].reshape(O * B, -1))
        y_wide = y_wide.reshape((O, B) + y_wide.shape[1:])
        if B == 1 and b is None:
            return y_wide[:, 0, :, :, :OW].transpose(1, 0, 2, 3)
        y = self.xp.empty((O, N, OH, OW), dtype=x.dtype)
        if b is not None:
            y_wide += b.reshape(O, 1, 1, 1, 1)
        for r, h, p in _phases(OH, 0, B):                         # channels o·B + r → rows B·p + r
            _copy_rows(self.xp, y[:, :, h], y_wide[:, r, :, p, :OW])
        return y.transpose(1, 0, 2, 3)                            # (N, O, OH, OW)

    def backward(self, gy):
        O, C = self.W.shape[:2]
        g, Wm = self.blocking, self.Wm
        windows = self._windows(self.xc, g)                       # (C·B, kh′, kw, N, OH′, Wv)
        gyc = self._wide_gradient(gy, g, windows.shape[3:])       # (O·B, N, OH′, Wv)
        gWm = self.xp.zeros((Wm.shape[1], Wm.shape[0]), dtype=gy.dtype)   # (C·B·kh′·kw, O·B)
        for n in self._pieces(windows, CACHE_BYTES[module_name(self.xp)]):
            col = windows[:, :, :, n].reshape(Wm.shape[1], -1)   # im2col again, in cache
            gWm += col @ gyc[:, n].reshape(Wm.shape[0], -1).T  # dl/dW′ = dl/dy · colᵀ, kept transposed: faster
        gWb = gWm.T.reshape((O, g.block, C, g.block) + g.kernel)
        gW = self.xp.zeros_like(self.W)
        for r, s, a, i in g.taps:                                 # W′ holds each row of W B times: add them up
            gW[:, :, i] += gWb[:, r, :, s, a]
        gx = None
        if self.needs_grad[0]:                  # not for the first layer: its input needs none
            gx = self._input_gradient(gy, g, gyc) if g.block == 1 or _finite(self.xp, gy) else \
                self._input_gradient(gy, _blocking(self.W.shape[2:], self.out[0], 1))   # 0·inf: see the class
        grads = (gx, gW)
        if len(self.needs_grad) == 3:   # dl/db = Σ dl/dy over (N, OH, OW): einsum, 2× NumPy's pairwise sum
            grads += (self.xp.einsum("omhw->o", gyc.reshape((O, -1) + gyc.shape[2:])),)   # m = B·N
        return grads

    def _input_gradient(self, gy, g, gyc=None):
        """dl/dx by the conv run with blocking g: dl/dcol = W′ᵀ · dl/dy, then
        col2im, which scatters it back, adding where windows overlap."""
        Wm = self.Wm if g is self.blocking else self._blocked_weight(g)
        gxc = self.xp.zeros(self._padded_shape(g), dtype=gy.dtype)   # (C·B, N, Hp′, Wp)
        g_windows = self._windows(gxc, g)      # the same windows, over the gradient
        if gyc is None:
            gyc = self._wide_gradient(gy, g, g_windows.shape[3:])
        for n in self._pieces(g_windows, COL_BYTES):
            gcol = Wm.T @ gyc[:, n].reshape(Wm.shape[0], -1)
            gcol = gcol.reshape(g_windows.shape[:3] + (-1,) + g_windows.shape[-2:])
            for i in range(g.kernel[0]):
                for j in range(g.kernel[1]):
                    g_windows[:, i, j, n] += gcol[:, i, j]
        return self._unpad(gxc, g)

    def _block(self, x, W, OH):
        (N, C, _, Wd), O = x.shape, W.shape[0]
        macs = O * C * W.shape[2] * W.shape[3] * N * OH * (Wd + 2 * self.padding[1])
        rows, B = BLOCK_ROWS[module_name(self.xp)], 1
        if self.stride == (1, 1) and rows and macs >= BLOCK_MACS:
            while B * O < rows and 2 * B <= min(OH, MAX_BLOCK):
                B *= 2
        return B if B == 1 or _finite(self.xp, x) else 1          # 0·inf: see the class

    def _blocked_weight(self, g):
        """W′ as a matrix, (O·B, C·B·kh′·kw)."""
        O, C = self.W.shape[:2]
        Wb = self.xp.zeros((O, g.block, C, g.block) + g.kernel, dtype=self.W.dtype)
        for r, s, a, i in g.taps:
            Wb[:, r, :, s, a] = self.W[:, :, i]
        return Wb.reshape(O * g.block, -1)

    def _wide_gradient(self, gy, g, wide):
        """dl/dy laid out as the product's output, (O·B, N, OH′, Wv): rows dealt
        into blocks, the dropped columns and rows zero."""
        O, B, OW = gy.shape[1], g.block, self.out[1]
        gyc = self.xp.zeros((O, B) + tuple(wide), dtype=gy.dtype)
        for r, h, p in _phases(self.out[0], 0, B):
            _copy_rows(self.xp, gyc[:, r, :, p, :OW], gy.transpose(1, 0, 2, 3)[:, :, h])
        return gyc.reshape((O * B,) + tuple(wide))

    def _padded_shape(self, g):
        """(C·B, N, Hp′, Wp): x′ holds the padded input's rows, zero rows for a
        short last block's dropped outputs, and with stride 1 the spare row."""
        N, C, H, W = self.x_shape
        (ph, pw), B = self.padding, g.block
        spare = 1 if self.stride == (1, 1) else 0
        height = max(-(-(H + 2 * ph) // B), g.rows + g.kernel[0] - 1) + spare
        return C * B, N, height, W + 2 * pw

    def _pad_channel_major(self, x, g):
        """x padded, channel-major, its rows dealt into B phases: x′, (C·B, N, Hp′, Wp)."""
        N, C, H, W = x.shape
        (ph, pw), B = self.padding, g.block
        shape = self._padded_shape(g)
        xc = self.xp.zeros((C, B) + shape[1:], dtype=x.dtype)
        for s, h, p in _phases(H, ph, B):
            _copy_rows(self.xp, xc[:, s, :, p, pw:pw + W], x.transpose(1, 0, 2, 3)[:, :, h])
        return xc.reshape(shape)

    def _unpad(self, gxc, g):
        """dl/dx from dl/dx′ (C·B, N, Hp′, Wp): the phases put back, the padding cropped."""
        N, C, H, W = self.x_shape
        (ph, pw), B = self.padding, g.block
        if B == 1:
            return gxc[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3)
        gxc = gxc.reshape((C, B) + gxc.shape[1:])
        gx = self.xp.empty((C, N, H, W), dtype=gxc.dtype)
        for s, h, p in _phases(H, ph, B):
            gx[:, :, h] = gxc[:, s, :, p, pw:pw + W]
        return gx.transpose(1, 0, 2, 3)

    def _windows(self, xc, g):
        """A view of x′ (C·B, N, Hp′, Wp) whose element (c, i, j, n, oh, ow) is
        xc[c, n, oh·sh + i, ow·sw + j]: the input each offset (i, j) of W′'s
        kernel meets, for every output. ow runs to Wv. im2col of samples n is
        ``windows[:, :, :, n].reshape(C·B·kh′·kw, -1)``, one copy."""
        kh, kw = g.kernel
        C, N, _, Wp = xc.shape
        sC, sN, sH, sW = xc.strides
        wide = Wp if self.stride == (1, 1) else self.out[1]
        return self.xp.lib.stride_tricks.as_strided(
            xc, (C, kh, kw, N, g.rows, wide), (sC, sH, sW, sN, sH * self.stride[0], sW * self.stride[1]))

    @staticmethod
    def _pieces(windows, limit, max_macs=None, rows=None):
        """Sample ranges whose im2col fits in ``limit`` bytes and, given
        ``max_macs``, whose product with ``rows`` rows has at most that many multiply-adds."""
        C, kh, kw, N, OH, Wv = windows.shape
        col_size = C * kh * kw * OH * Wv                          # per sample
        step = max(1, limit // (col_size * windows.itemsize))
        if max_macs:
            step = max(1, min(step, max_macs // (col_size * rows)))
        return [slice(n0, min(n0 + step, N)) for n0 in range(0, N, step)]


def conv2d(x, W, b=None, stride=1, padding=0):
    """2-D cross-correlation, PyTorch's layout: x (N, C, H, W), W (O, C, kh, kw)."""
    return Conv2d(stride, padding)(x, W, b) if b is not None else Conv2d(stride, padding)(x, W)


def conv2d_reference(x, W, b=None, stride=1, padding=0):
    """The slow, obviously correct conv: for each kernel offset (i, j), the slice of
    the input it touches times W[:, :, i, j], summed. Basic ops only; autograd
    differentiates it."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    out = out_size("conv2d_reference", x.shape, W.shape[2:], stride, padding)
    padded = pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    y = None
    for i in range(W.shape[2]):
        for j in range(W.shape[3]):
            patch = transpose(getitem(padded, window(i, j, stride, out)), (0, 2, 3, 1))  # (N, OH, OW, C)
            term = matmul(patch, transpose(getitem(W, (slice(None), slice(None), i, j))))
            y = term if y is None else add(y, term)                                   # (N, OH, OW, O)
    y = transpose(y, (0, 3, 1, 2))
    return y if b is None else add(y, reshape(b, (1, -1, 1, 1)))


class _Pool(Function):
    """What the pools share: the window geometry, padding the input, and
    cropping the padding off the gradient."""
    name = "pool"

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = _pair(kernel_size, f"{self.name} kernel_size")
        self.stride = _pair(stride if stride is not None else kernel_size, f"{self.name} stride")
        self.padding = _pair(padding, f"{self.name} padding")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            # a window could then lie wholly in the padding: −inf (max) or 0 (avg) from nowhere
            raise ValueError(f"{self.name}: padding {self.padding} is more than half the kernel "
                             f"{self.kernel}; pad at most kernel_size // 2")

    def _pad(self, x, value):
        """Check x, set the output size, and pad x by ``padding`` with ``value``."""
        _check_nchw(self.name, x)
        self.out = out_size(self.name, x.shape, self.kernel, self.stride, self.padding)
        self.x_shape = x.shape
        ph, pw = self.padding
        if not (ph or pw):
            return x
        return self.xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)

    def _crop(self, gx):
        ph, pw = self.padding
        return gx[:, :, ph:ph + self.x_shape[2], pw:pw + self.x_shape[3]]


def _along(axis, start, step, n):
    """Index of n elements along ``axis``, from ``start``, every ``step``."""
    return (slice(None),) * axis + (slice(start, start + step * (n - 1) + 1, step),)


def _max_along(xp, x, axis, k, s, n, label=None, dtype=None):
    """1-D max pool of x along ``axis`` (window k, stride s, n outputs) and,
    given ``label``, label(j) of each window's offset j of its first maximum:
    the last offset to raise the running max strictly. Labels grow with j, so
    that is a running max of label(j)·[x_j > max], in ``dtype``."""
    m = x[_along(axis, 0, s, n)]
    arg = None
    if label is not None:
        arg = xp.empty_like(m, dtype=dtype)
        arg[...] = label(0)
    for j in range(1, k):
        x_j = x[_along(axis, j, s, n)]
        if label is not None:
            xp.maximum(arg, (x_j > m) * label(j), out=arg)
        # the first maximum makes the output array (in x's memory order), the rest update it
        m = xp.maximum(m, x_j) if j == 1 else xp.maximum(m, x_j, out=m)
    return m, arg


def _memory_order(a):
    """The axes from the largest stride to the smallest."""
    return tuple(sorted(range(a.ndim), key=lambda i: -a.strides[i]))


def _dense_like(a, like):
    """Whether a fills one block of memory with no gaps, in the memory order of ``like``."""
    order = _memory_order(like)
    step = a.itemsize
    for axis in reversed(order):
        if a.shape[axis] != 1 and a.strides[axis] != step:
            return False
        step *= a.shape[axis]
    return True


def _copy_like(xp, a, like):
    """a, copied into the memory order of ``like``."""
    out = xp.empty_like(like, dtype=a.dtype)
    out[...] = a
    return out


class MaxPool2d(_Pool):
    """A 2-D max is a max along W, then a max of those along H (separable, like
    a box blur): kw + kh slices instead of kh·kw. Each pass finds its offset of
    the first maximum; together they give the window offset i·kw + j that gets
    the gradient, the first maximum in row-major order as in PyTorch: the first
    row holding the maximum, and in it the first column."""
    name = "max_pool2d"

    def forward(self, x):
        self.x = x = self._pad(x, _lowest(x.dtype))
        (kh, kw), (sh, sw), (OH, OW) = self.kernel, self.stride, self.out
        if not self.needs_grad[0]:      # inference: the maxima alone
            m, _ = _max_along(self.xp, x, 3, kw, sw, OW)                  # (N, C, Hp, OW)
            return _max_along(self.xp, m, 2, kh, sh, OH)[0]               # (N, C, OH, OW)
        # argmax, the window offset i·kw + j of each first maximum: along W the
        # offsets j label themselves; along H row i is labelled i·kw plus the
        # label its column got. Only argmax is kept (arg_w would double the memory)
        t = np.min_scalar_type(kh * kw - 1).type
        m, arg_w = _max_along(self.xp, x, 3, kw, sw, OW, label=t, dtype=t)
        y, self.argmax = _max_along(self.xp, m, 2, kh, sh, OH, dtype=t,
                                    label=lambda i: arg_w[_along(2, i, sh, OH)] + t(i * kw))
        return y

    def backward(self, gy):
        if not _dense_like(gy, self.argmax):
            gy = _copy_like(self.xp, gy, self.argmax)
        overlap = self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]
        tiled = self.stride == self.kernel and \
            (self.out[0] * self.stride[0], self.out[1] * self.stride[1]) == self.x.shape[2:]
        # in x's memory order, for the layers below; when the windows tile x, every
        # pixel is written below and the zeros would be wasted
        gx = self.xp.empty_like(self.x) if tiled else self.xp.zeros_like(self.x)
        for k in range(self.kernel[0] * self.kernel[1]):
            idx = window(*divmod(k, self.kernel[1]), self.stride, self.out)
            if overlap:       # a pixel can win in two windows: add
                gx[idx] += gy * (self.argmax == k)
            else:             # every pixel is in one window at most: write in place
                self.xp.multiply(gy, self.argmax == k, out=gx[idx])
        return self._crop(gx)


class AvgPool2d(_Pool):
    name = "avg_pool2d"

    def forward(self, x):
        x = self._pad(x, 0.0)
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
        return self._crop(gx)


def _lowest(dtype):
    """What max pooling pads with: −inf for floats, the smallest value for integers
    (a padded cell must never win a window)."""
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d(kernel_size, stride, padding)(x)


def _pool_reference(x, kernel_size, stride, padding, reduce):
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else kernel_size, "stride")
    p = _pair(padding, "padding")
    out = out_size("pool_reference", x.shape, k, s, p)
    padded = pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2), value=_lowest(x.dtype) if reduce == "max" else 0)
    slices = stack([getitem(padded, window(i, j, s, out)) for i in range(k[0]) for j in range(k[1])])
    return reduce_max(slices, axis=0) if reduce == "max" else slices.mean(axis=0)


def max_pool2d_reference(x, kernel_size, stride=None, padding=0):
    """Slow max pool: stack every window offset's slice, max over them (basic ops)."""
    return _pool_reference(x, kernel_size, stride, padding, "max")


def avg_pool2d_reference(x, kernel_size, stride=None, padding=0):
    """Slow average pool: stack every window offset's slice, mean over them."""
    return _pool_reference(x, kernel_size, stride, padding, "mean")
