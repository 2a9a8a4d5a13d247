"""Matrix product, 2-D or batched (leading axes broadcast)."""
from ..tensor import Function
from .elementwise import sum_to
from .shape import transpose


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: expected 2-D or batched matrices, got shapes {a.shape} "
                             f"and {b.shape}; reshape a vector to (n, 1) or (1, n)")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: "
                             f"{a.shape[-1]} columns against {b.shape[-2]} rows")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gy @ b.swapaxes(-1, -2)      # dl/da = dl/dy · bᵀ
        gb = a.swapaxes(-1, -2) @ gy      # dl/db = aᵀ · dl/dy
        return sum_to(ga, a.shape), sum_to(gb, b.shape)


def matmul(a, b):
    return MatMul()(a, b)


def linear(x, W, b=None):
    """x @ Wᵀ + b with PyTorch's weight layout W (out_features, in_features)."""
    if x.shape[-1] != W.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                         f"weight of shape {W.shape} expects {W.shape[1]}")
    y = matmul(x, transpose(W))
    return y if b is None else y + b
