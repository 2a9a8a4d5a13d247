"""Convolution and pooling: fast kernels, and beside each a slow reference built
from basic ops that the tests compare it with.

Every kernel walks the kh·kw offsets of the window: for offset (i, j) the input
pixels it touches form one strided slice, ``x[:, :, i::s, j::s]`` cut to the
output size. The fast conv gathers those slices into one matrix (im2col) and
does one matrix product per piece of the batch; the pools take a running max
or sum over them.
"""
import numpy as np

from .. import backend
from ..backend import module_name
from ..errors import InputError
from ..tensor import Function
from . import row_blocking
from .elementwise import add
from .matmul import matmul
from .reduce import max as reduce_max
from .shape import getitem, pad, reshape, stack, transpose

# im2col is built in pieces of whole samples, so no step ever holds a 200+ MB
# matrix; forward and dl/dW multiply each piece as soon as it is built, while it
# is still in the L2 cache. dl/dx scatters back with kh·kw slice additions per
# piece, so there fewer, bigger pieces win: LeNet-5's is one piece (in 2 or 4
# pieces the step took 3 ms more on one thread); on a GPU big pieces keep it
# busy. The pieces depend on the shapes alone, never on the number of threads,
# so results do not either. (What each size measured: docs/performance.md.)
CACHE_BYTES = {"numpy": 512 * 2**10, "cupy": 64 * 2**20}
COL_BYTES = {"numpy": 64 * 2**20, "cupy": 64 * 2**20}
# The forward's pieces are also cut to at most SMALL_GEMM multiply-adds, the size
# below which OpenBLAS multiplies without packing its operands.
SMALL_GEMM = {"numpy": 10**6, "cupy": None}


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


class Conv2d(Function):
    """y = W ⋆ x + b via im2col, as DeZero's conv: gather every window into the
    columns of one matrix, multiply by W as a matrix, add b. The backward is
    three products of the same matrices: dl/dW = dl/dy · colᵀ, dl/dcol = Wᵀ ·
    dl/dy, scattered back onto the input (col2im) as dl/dx, and dl/db = Σ dl/dy.

    The fast path beside that reading, each part in its own method:

    - Pieces. im2col is built and multiplied in pieces of whole samples
      (``_pieces``), and the pieces run on the backend's thread pool
      (``backend.parallel``). What crosses pieces, dl/dW, is summed in the
      pieces' order: the same result on any number of threads.
    - Channel-major. Work is done as (C, N, H, W): a sample range is then one
      slice, and the output comes out as (O, N, OH, OW), returned as an
      (N, O, OH, OW) view. The layers after it (ReLU, BN, pooling) keep that
      memory order, so the next conv finds its input channel-major already.
    - Wide rows. With stride 1 the windows run over all Wv = Wp columns of the
      padded input (Hp × Wp), not just the OW that fit: image rows then follow
      each other as one long row, and each im2col row copies as one run per
      sample (about 2.4× faster than OH runs of OW). The last kw − 1 outputs of
      each row straddle two image rows; they are computed, dropped from y, and
      get zero gradient. A spare zero row below the image keeps the last row's
      windows inside the array. With another stride, Wv = OW.
    - Row blocking (``row_blocking``): B neighbouring output rows computed as
      B·O channels of a conv of x′, the input's rows dealt into B phases, with
      the blocked weight W′. ``self.plan`` says which B; B = 1 is the plain conv.
      An inf or NaN upstream gradient goes to dl/dx unblocked (0·inf, see there)."""

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = _pair(stride, "conv2d stride"), _pair(padding, "conv2d padding")

    def forward(self, x, W, b=None):
        _check_nchw("conv2d", x)
        if W.ndim != 4 or W.shape[1] != x.shape[1]:
            raise InputError(f"conv2d: weight of shape {W.shape} (out, in, kh, kw) does not fit "
                             f"input of shape {x.shape}: expected in = {x.shape[1]} channels")
        if b is not None and b.shape != (W.shape[0],):
            raise InputError(f"conv2d: bias has shape {b.shape}, expected ({W.shape[0]},)")
        xp, (N, O) = self.xp, (x.shape[0], W.shape[0])
        self.out = OH, OW = out_size("conv2d", x.shape, W.shape[2:], self.stride, self.padding)
        self.x_shape, self.W = x.shape, W
        B = row_blocking.choose_block(xp, x, O, W.shape[2:], OH, self.stride, self.padding)
        self.plan = plan = row_blocking.plan(W.shape[2:], OH, B)
        self.Wm = Wm = row_blocking.blocked_weight(xp, W, plan)   # W′, (O·B, C·B·kh′·kw)
        shape = self._padded_shape(plan)
        dealt = xp.zeros((shape[0] // B, B) + shape[1:], dtype=x.dtype)   # (C, B, N, Hp′, Wp)
        self.xc = dealt.reshape(shape)                            # x′, (C·B, N, Hp′, Wp)
        windows = self._windows(self.xc, plan)                    # (C·B, kh′, kw, N, OH′, Wv)
        (ph, pw), x_c = self.padding, x.transpose(1, 0, 2, 3)     # (C, N, H, W)

        def deal(n):                                              # x → x′, samples n
            row_blocking.deal(xp, dealt[:, :, n, :, pw:pw + x.shape[3]], x_c[:, n], ph, B)
        backend.parallel(deal, backend.shares(N, x.nbytes), xp)       # the copies: one piece a thread
        # each piece's product goes straight into its slice of one wide output
        y_wide = xp.empty((O * B,) + windows.shape[3:], dtype=x.dtype)   # (O·B, N, OH′, Wv)

        def product(n):
            col = windows[:, :, :, n].reshape(Wm.shape[1], -1)   # im2col: (C·B·kh′·kw, n·OH′·Wv)
            xp.matmul(Wm, col, out=y_wide[:, n].reshape(O * B, -1))
        backend.parallel(product, self._pieces(windows, CACHE_BYTES, SMALL_GEMM, O * B), xp,
                         windows.nbytes)                  # a view's nbytes: the im2col its pieces build
        y_wide = y_wide.reshape((O, B) + y_wide.shape[1:])        # (O, B, N, OH′, Wv)
        if B == 1 and b is None:
            return y_wide[:, 0, :, :, :OW].transpose(1, 0, 2, 3)
        y = xp.empty((O, N, OH, OW), dtype=x.dtype)

        def finish(n):           # the bias added to the wide rows, then cropped and put in order
            if b is not None:
                y_wide[:, :, n] += b.reshape(O, 1, 1, 1, 1)
            row_blocking.undeal(xp, y[:, n], y_wide[:, :, n, :, :OW], 0, B)   # channels o·B + r → rows B·p + r
        backend.parallel(finish, backend.shares(N, y.nbytes), xp)
        return y.transpose(1, 0, 2, 3)                            # (N, O, OH, OW)

    def backward(self, gy):
        plan = self.plan
        windows = self._windows(self.xc, plan)                    # (C·B, kh′, kw, N, OH′, Wv)
        gyc = self._wide_gradient(gy, plan, windows.shape[3:])    # (O·B, N, OH′, Wv)
        gW = self._weight_gradient(gyc, windows)
        gx = None
        if self.needs_grad[0]:                  # not for the first layer: its input needs none
            gx = self._input_gradient(gyc, plan) if plan.block == 1 or _finite(self.xp, gy) else \
                self._input_gradient(None, row_blocking.plan(self.W.shape[2:], self.out[0], 1), gy)
        grads = (gx, gW)
        if len(self.needs_grad) == 3:   # dl/db = Σ dl/dy over (N, OH, OW): einsum, 2× NumPy's pairwise sum
            O = self.W.shape[0]
            grads += (self.xp.einsum("omhw->o", gyc.reshape((O, -1) + gyc.shape[2:])),)   # m = B·N
        return grads

    def _weight_gradient(self, gyc, windows):
        """dl/dW′ = dl/dy · colᵀ, one product per piece, then summed in the
        pieces' order; then dl/dW from dl/dW′."""
        Wm = self.Wm

        def piece(n):
            col = windows[:, :, :, n].reshape(Wm.shape[1], -1)   # im2col again, in cache
            return col @ gyc[:, n].reshape(Wm.shape[0], -1).T    # kept transposed: faster
        parts = backend.parallel(piece, self._pieces(windows, CACHE_BYTES), self.xp, windows.nbytes)
        gWm = parts[0]                                            # (C·B·kh′·kw, O·B)
        for part in parts[1:]:
            gWm += part
        return row_blocking.weight_gradient(self.xp, gWm.T, self.W.shape, self.plan)

    def _input_gradient(self, gyc, plan, gy=None):
        """dl/dx by the conv run with ``plan``: dl/dcol = W′ᵀ · dl/dy, then
        col2im, which scatters it back, adding where windows overlap; each piece
        of samples on its own. dl/dy comes as ``gyc``, else from ``gy``."""
        xp, (N, C, H, W), (ph, pw), B = self.xp, self.x_shape, self.padding, plan.block
        Wm = self.Wm if plan is self.plan else row_blocking.blocked_weight(xp, self.W, plan)
        shape = self._padded_shape(plan)
        g_dealt = xp.zeros((C, B) + shape[1:], dtype=(gy if gyc is None else gyc).dtype)
        gxc = g_dealt.reshape(shape)                              # dl/dx′, (C·B, N, Hp′, Wp)
        g_windows = self._windows(gxc, plan)    # the same windows, over the gradient
        if gyc is None:
            gyc = self._wide_gradient(gy, plan, g_windows.shape[3:])

        def piece(n):
            gcol = Wm.T @ gyc[:, n].reshape(Wm.shape[0], -1)     # dl/dcol
            gcol = gcol.reshape(g_windows.shape[:3] + (-1,) + g_windows.shape[-2:])
            for i in range(plan.kernel[0]):
                for j in range(plan.kernel[1]):
                    g_windows[:, i, j, n] += gcol[:, i, j]
        backend.parallel(piece, self._pieces(g_windows, COL_BYTES), xp, g_windows.nbytes)
        if B == 1:
            return gxc[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3)
        gx = xp.empty((C, N, H, W), dtype=gxc.dtype)

        def undeal(n):                                            # the phases put back in order
            row_blocking.undeal(xp, gx[:, n], g_dealt[:, :, n, :, pw:pw + W], ph, B)
        backend.parallel(undeal, backend.shares(N, gx.nbytes), xp)
        return gx.transpose(1, 0, 2, 3)                           # (N, C, H, W)

    def _wide_gradient(self, gy, plan, wide):
        """dl/dy laid out as the product's output, (O·B, N, OH′, Wv): rows dealt
        into blocks, the dropped columns and rows zero."""
        O, B, OW = gy.shape[1], plan.block, self.out[1]
        gyc = self.xp.zeros((O, B) + tuple(wide), dtype=gy.dtype)
        gy_c = gy.transpose(1, 0, 2, 3)                           # (O, N, OH, OW)

        def piece(n):
            row_blocking.deal(self.xp, gyc[:, :, n, :, :OW], gy_c[:, n], 0, B)
        backend.parallel(piece, backend.shares(gy.shape[0], gyc.nbytes), self.xp)
        return gyc.reshape((O * B,) + tuple(wide))

    def _padded_shape(self, plan):
        """(C·B, N, Hp′, Wp): x′ holds the padded input's rows, zero rows for a
        short last block's dropped outputs, and with stride 1 the spare row."""
        N, C, H, W = self.x_shape
        (ph, pw), B = self.padding, plan.block
        spare = 1 if self.stride == (1, 1) else 0
        height = max(-(-(H + 2 * ph) // B), plan.out_rows + plan.kernel[0] - 1) + spare
        return C * B, N, height, W + 2 * pw

    def _windows(self, xc, plan):
        """A view of x′ (C·B, N, Hp′, Wp) whose element (c, i, j, n, oh, ow) is
        xc[c, n, oh·sh + i, ow·sw + j]: the input each offset (i, j) of W′'s
        kernel meets, for every output. ow runs to Wv. im2col of samples n is
        ``windows[:, :, :, n].reshape(C·B·kh′·kw, -1)``, one copy."""
        kh, kw = plan.kernel
        C, N, _, Wp = xc.shape
        sC, sN, sH, sW = xc.strides
        wide = Wp if self.stride == (1, 1) else self.out[1]
        return self.xp.lib.stride_tricks.as_strided(
            xc, (C, kh, kw, N, plan.out_rows, wide), (sC, sH, sW, sN, sH * self.stride[0], sW * self.stride[1]))

    def _pieces(self, windows, limit, max_macs=None, rows=None):
        """Sample ranges whose im2col fits in ``limit[backend]`` bytes and, given
        ``max_macs``, whose product with ``rows`` rows has at most that many multiply-adds."""
        name = module_name(self.xp)
        C, kh, kw, N, OH, Wv = windows.shape
        col_size = C * kh * kw * OH * Wv                          # per sample
        step = max(1, limit[name] // (col_size * windows.itemsize))
        if max_macs and max_macs[name]:
            step = max(1, min(step, max_macs[name] // (col_size * rows)))
        return [slice(n0, min(n0 + step, N)) for n0 in range(0, N, step)]


def ranges(n, bytes_each, limit):
    """Ranges of n items of ``bytes_each`` bytes, about ``limit`` bytes each (at least one item)."""
    step = max(1, limit // max(1, bytes_each))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _finite(xp, a):
    return bool(xp.isfinite(a).all())


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


def _max_along(xp, x, axis, k, s, n, label=None, dtype=None, out=None, arg_out=None):
    """1-D max pool of x along ``axis`` (window k, stride s, n outputs) and,
    given ``label``, label(j) of each window's offset j of its first maximum:
    the last offset to raise the running max strictly. Labels grow with j, so
    that is a running max of label(j)·[x_j > max], in ``dtype``. Written into
    ``out`` and ``arg_out`` where given."""
    m = x[_along(axis, 0, s, n)]
    arg = None
    if label is not None:
        arg = xp.empty_like(m, dtype=dtype) if arg_out is None else arg_out
        arg[...] = label(0)
    for j in range(1, k):
        x_j = x[_along(axis, j, s, n)]
        if label is not None:
            xp.maximum(arg, (x_j > m) * label(j), out=arg)
        # the first maximum makes the output array (in x's memory order), the rest update it
        m = xp.maximum(m, x_j, out=out) if j == 1 else xp.maximum(m, x_j, out=m)
    if k == 1 and out is not None:
        out[...] = m
        m = out
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


class MaxPool2d(_Pool):
    """A 2-D max is a max along W, then a max of those along H (separable, like
    a box blur): kw + kh slices instead of kh·kw. Each pass finds its offset of
    the first maximum; together they give the window offset i·kw + j that gets
    the gradient, the first maximum in row-major order as in PyTorch: the first
    row holding the maximum, and in it the first column."""
    name = "max_pool2d"

    def forward(self, x):
        self.x = x = self._pad(x, _lowest(x.dtype))
        xp, (kh, kw), (sh, sw), (OH, OW) = self.xp, self.kernel, self.stride, self.out
        y = xp.empty_like(x[:, :, :OH, :OW])                              # in x's memory order
        if not self.needs_grad[0]:      # inference: the maxima alone
            def piece(c):
                m, _ = _max_along(xp, x[c], 3, kw, sw, OW)                # (N, C, Hp, OW)
                _max_along(xp, m, 2, kh, sh, OH, out=y[c])                # (N, C, OH, OW)
            backend.parallel(piece, self._pieces(x), xp)
            return y
        # argmax, the window offset i·kw + j of each first maximum: along W the
        # offsets j label themselves; along H row i is labelled i·kw plus the
        # label its column got. Only argmax is kept (arg_w would double the memory)
        t = np.min_scalar_type(kh * kw - 1).type
        self.argmax = xp.empty_like(y, dtype=t)

        def piece(c):
            m, arg_w = _max_along(xp, x[c], 3, kw, sw, OW, label=t, dtype=t)
            _max_along(xp, m, 2, kh, sh, OH, dtype=t, label=lambda i: arg_w[_along(2, i, sh, OH)] + t(i * kw),
                       out=y[c], arg_out=self.argmax[c])
        backend.parallel(piece, self._pieces(x), xp)
        return y

    def backward(self, gy):
        xp, argmax = self.xp, self.argmax
        dense = _dense_like(gy, argmax)
        gy_dense = gy if dense else xp.empty_like(argmax, dtype=gy.dtype)   # in argmax's memory order
        overlap = self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]
        tiled = self.stride == self.kernel and \
            (self.out[0] * self.stride[0], self.out[1] * self.stride[1]) == self.x.shape[2:]
        # in x's memory order, for the layers below; when the windows tile x, every
        # pixel is written below and the zeros would be wasted
        gx = xp.empty_like(self.x) if tiled else xp.zeros_like(self.x)

        def piece(c):
            if not dense:            # a gappy upstream gradient: copied first, the loop below is faster
                gy_dense[c] = gy[c]
            gx_c, gy_c, argmax_c = gx[c], gy_dense[c], argmax[c]
            for k in range(self.kernel[0] * self.kernel[1]):
                idx = window(*divmod(k, self.kernel[1]), self.stride, self.out)
                if overlap:       # a pixel can win in two windows: add
                    gx_c[idx] += gy_c * (argmax_c == k)
                else:             # every pixel is in one window at most: write in place
                    xp.multiply(gy_c, argmax_c == k, out=gx_c[idx])
        backend.parallel(piece, self._pieces(self.x), xp)
        return self._crop(gx)

    def _pieces(self, x):
        return backend.outer_pieces(x, axes=(0, 1))


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
