"""Matrix product with NumPy's and PyTorch's rules: 2-D or batched matrices
(leading axes broadcast), and vectors. A 1-D operand is promoted to a matrix, a
row (1, n) on the left and a column (n, 1) on the right, and the axis it gained
is removed from the result:

    (n,) @ (n, p) -> (p,)      (m, n) @ (n,) -> (m,)      (n,) @ (n,) -> ()
    (n,) @ (B, n, p) -> (B, p)      (B, m, n) @ (n,) -> (B, m)"""
import numpy as np

from .. import backend
from ..errors import InputError
from ..tensor import Function
from .elementwise import sum_to
from .shape import transpose

# Products run on the backend's thread pool, BLAS on one thread (see
# backend.parallel); a 2-D product with many rows in pieces of ROWS rows.
ROWS = 256


def _product(xp, a, b):
    """a @ b: the rows of a 2-D ``a`` in pieces, each piece's product on its own."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 * ROWS:
        return backend.parallel(lambda _: a @ b, [None], xp)[0]
    y = xp.empty((a.shape[0], b.shape[1]), dtype=xp.result_type(a, b))
    pieces = [slice(i, i + ROWS) for i in range(0, a.shape[0], ROWS)]
    backend.parallel(lambda rows: xp.matmul(a[rows], b, out=y[rows]), pieces, xp, a.nbytes + y.nbytes)
    return y


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise InputError(f"matmul: both operands need at least 1 dim, got shapes {a.shape} and "
                             f"{b.shape}; multiply by a number with *")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise InputError(f"matmul: shapes {a.shape} and {b.shape} do not fit: "
                             f"{a.shape[-1]} columns against {b.shape[-2 if b.ndim > 1 else 0]} rows")
        self.a_shape, self.b_shape = a.shape, b.shape
        self.a = a[None, :] if a.ndim == 1 else a         # a row vector (1, n)
        self.b = b[:, None] if b.ndim == 1 else b         # a column vector (n, 1)
        y = _product(self.xp, self.a, self.b)
        self.y_shape = y.shape                            # (..., m, p), with a vector's 1 kept
        drop = ({y.ndim - 2} if a.ndim == 1 else set()) | ({y.ndim - 1} if b.ndim == 1 else set())
        return y.reshape([n for i, n in enumerate(y.shape) if i not in drop])

    def backward(self, gy):
        a, b = self.a, self.b
        gy = gy.reshape(self.y_shape)     # the axes a vector gained, back as length 1
        ga = _product(self.xp, gy, b.swapaxes(-1, -2))     # dl/da = dl/dy · bᵀ
        gb = _product(self.xp, a.swapaxes(-1, -2), gy)     # dl/db = aᵀ · dl/dy
        return sum_to(ga, a.shape).reshape(self.a_shape), sum_to(gb, b.shape).reshape(self.b_shape)


def matmul(a, b):
    return MatMul()(a, b)


def linear(x, W, b=None):
    """x @ Wᵀ + b with PyTorch's weight layout W (out_features, in_features). x is
    (..., in_features): a batch, or one sample (in_features,) as in PyTorch."""
    if x.ndim == 0 or x.shape[-1] != W.shape[1]:
        raise InputError(f"linear: input has {x.shape[-1] if x.ndim else 'no'} features (shape {x.shape}) "
                         f"but the weight of shape {W.shape} expects {W.shape[1]}{_flatten_hint(x, W)}")
    y = matmul(x, transpose(W))
    return y if b is None else y + b


def _flatten_hint(x, W):
    """What to do with a conv output (N, C, H, W) given to a Linear: flatten it."""
    if x.ndim <= 2:
        return ""
    features = int(np.prod(x.shape[1:]))
    fits = ("as the weight expects" if features == W.shape[1] else
            f"so the layer needs in_features={features}")
    return (f"; flatten first (nn.Flatten() before the Linear, or x.flatten(1)): that gives "
            f"{features} features per sample, {fits}")
