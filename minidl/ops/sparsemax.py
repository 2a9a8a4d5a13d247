r"""SparsestMax: the weights of Sparse Switchable Normalization (Shao et al. 2019).

Softmax never gives a weight of exactly 0, so Switchable Norm always mixes all
its normalizers. SparsestMax replaces it, for a vector z of K logits:

1. **sparsemax** (Martins & Astudillo 2016): the Euclidean projection of z onto
   the simplex Δ = {p ≥ 0, Σp = 1},  p = max(z − τ, 0), with τ chosen so Σp = 1.
   It is exactly 0 outside a support S. Its Jacobian on S is
       ∂p/∂z = diag(s) − s·sᵀ/|S|      (s: the indicator of S)
   that is, the gradient is centred over the support and zero elsewhere.
2. **the circle constraint**: with u = (1/K, …, 1/K) the uniform point, while p
   lies inside the circle ‖p − u‖ < r it is pushed out radially onto it,
       p ← u + r·(p − u)/‖p − u‖,     Jacobian (r/‖p − u‖)·(I − d̂d̂ᵀ), d̂ = (p − u)/‖p − u‖
3. **back into the simplex, recursively**: if that point leaves Δ (a coordinate
   < 0), those coordinates are dropped to 0 and the point moves, within the face
   of the remaining support S, to where the same circle ‖p − u‖ = r crosses it:
       p_S ← c_S + δ·ê,   c_S the face's centre (1/|S| each), δ² = r² − ‖c_S − u‖²,
       ê = e/‖e‖,  e = P_S·p_S (the point's offset within the face)
   with Jacobian (δ/‖e‖)·(P_S − êêᵀ), P_S = I − 11ᵀ/|S| the centring on S.
   A face of one coordinate is a vertex: p is one-hot.

Then p is clamped to [0, 1]. r grows from 0 (sparsemax alone) to 1 over
training; the circle of radius 1 reaches past every edge's midpoint, so in the
end p is one-hot, and a one-hot p has zero gradient: the choice is frozen.
Every Jacobian above is symmetric, so the backward applies them in reverse
order to the upstream gradient as they are. The facts follow the official code
(switchablenorms/Sparse_SwitchNorm, utils/ssn_utils.py), which writes step 3 out
for K = 3; this one handles any K.
"""
import numpy as np

from .. import backend
from ..tensor import Function


def sparsemax_numpy(z):
    """Projection of the vector z onto the simplex; (p, support mask)."""
    zs = np.sort(z)[::-1]
    cumulative = np.cumsum(zs) - 1
    k = np.arange(1, len(z) + 1)
    rho = k[zs - cumulative / k > 0][-1]             # the support's size
    tau = cumulative[rho - 1] / rho
    p = np.maximum(z - tau, 0)
    return p, p > 0


class SparsestMax(Function):
    def __init__(self, radius):
        if not 0 <= radius <= 1:
            raise ValueError(f"sparsestmax: radius must be in [0, 1], got {radius}")
        self.radius = radius

    def forward(self, z):
        if z.ndim != 1:
            raise ValueError(f"sparsestmax: expected a vector of logits, got shape {z.shape}")
        # K is 2 or 3 here: a few scalar steps with data-dependent branches,
        # clearer on the host than as device kernels
        zh = backend.as_numpy(z).astype(np.float64)
        K, r = len(zh), self.radius
        u = np.full(K, 1.0 / K)
        p, support = sparsemax_numpy(zh)
        self.stages = [("sparsemax", support)]                        # Jacobians, in order
        d = p - u
        dist = np.linalg.norm(d)
        if dist < r and dist > 1e-12:
            self.stages.append(("circle", r / dist, d / dist))
            p = u + r * d / dist
            while (p < 0).any():
                support = p > 0
                if support.sum() == 1:                                # a vertex: one-hot
                    self.stages.append(("vertex", support))
                    p = support.astype(np.float64)
                    break
                c = np.where(support, 1.0 / support.sum(), 0.0)
                e = np.where(support, p - p[support].mean(), 0.0)   # centred within the face
                delta = np.sqrt(max(r * r - np.sum((c - u) ** 2), 0.0))
                self.stages.append(("face", support, delta / np.linalg.norm(e), e / np.linalg.norm(e)))
                p = c + delta * e / np.linalg.norm(e)
        self.clamped = (p < 0) | (p > 1)
        p = np.clip(p, 0, 1)
        return backend.to_device(p.astype(z.dtype), backend.device_of(z))

    def backward(self, gy):
        g = backend.as_numpy(gy).astype(np.float64)
        g = np.where(self.clamped, 0.0, g)
        for stage in reversed(self.stages):
            if stage[0] == "sparsemax":                               # diag(s) − ssᵀ/|S|
                s = stage[1]
                g = np.where(s, g - g[s].mean(), 0.0)
            elif stage[0] == "circle":                                # (r/‖d‖)(I − d̂d̂ᵀ)
                _, scale, d_hat = stage
                g = scale * (g - d_hat * (d_hat @ g))
            elif stage[0] == "face":                                  # (δ/‖e‖)(P_S − êêᵀ)
                _, s, scale, e_hat = stage
                centred = np.where(s, g - g[s].mean(), 0.0)
                g = scale * (centred - e_hat * (e_hat @ g))
            else:                                                     # a vertex is constant
                g = np.zeros_like(g)
        return backend.to_device(g.astype(gy.dtype), backend.device_of(gy))


def sparsestmax(z, radius):
    """Weights on the simplex that are sparse (sparsemax) and, as ``radius`` grows
    to 1, pushed to a single 1 (see the module docstring)."""
    return SparsestMax(radius)(z)


def sparsemax(z):
    """sparsestmax with radius 0: the Euclidean projection onto the simplex."""
    return SparsestMax(0.0)(z)
