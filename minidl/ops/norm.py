r"""Normalization: one formula, the axes decide which normalizer it is.

    x̂ = (x − μ) / √(σ² + ε),   y = γ·x̂ + β,   μ, σ² = mean, biased variance over `axes`

    BatchNorm     (N, C, H, W) over (0, 2, 3)   one μ per channel, across the batch
    LayerNorm     (N, C, H, W) over (1, 2, 3)   one μ per sample
    InstanceNorm  (N, C, H, W) over (2, 3)      one μ per sample and channel
    GroupNorm     (N, G, C/G, H, W) over (2, 3, 4)   one μ per sample and group

The backward, derived by hand (the course's seed 003). Let m be the number of
values each μ averages, and dl/dy the upstream gradient.

    dl/dβ  = Σ dl/dy                       (β is added to every y)
    dl/dγ  = Σ dl/dy · x̂                   (γ multiplies x̂)
    dl/dx̂  = dl/dy · γ
    σ² depends on x directly and through μ; x̂ depends on x, μ and σ²:
    dl/dσ² = Σ dl/dx̂ · (x − μ) · (−½)(σ² + ε)^(−3/2)
    dl/dμ  = Σ dl/dx̂ · (−1/√(σ² + ε))  +  dl/dσ² · Σ −2(x − μ) / m
    dl/dx  = dl/dx̂ / √(σ² + ε)  +  dl/dσ² · 2(x − μ)/m  +  dl/dμ / m

The second term of dl/dμ is zero (Σ(x − μ) = 0). Substituting dl/dσ² and dl/dμ
and writing σ for √(σ² + ε) collapses the three terms into one line:

    dl/dx  = 1/(m·σ) · (m·dl/dx̂ − Σ dl/dx̂ − x̂ · Σ dl/dx̂·x̂)

which, for BatchNorm where γ is constant over the reduced axes, is the
well-known  dx = γ/(m·σ) · (m·dy − Σdy − x̂·Σ(dy·x̂)).

Three versions of the backward live here, side by side: ``backward_staged``
(the first block, term by term), ``backward_compact`` (the last line, used by
the layers: fewer passes over the data) and ``batch_norm_autograd`` (the
forward composed from basic ops, differentiated by the engine). The tests and
``lessons.batchnorm_backward`` show they agree to 1e-10 in float64.
"""
from ..tensor import Function
from .elementwise import add, mul, pow, sub, sum_to
from .reduce import mean, normalize_axis, var
from .shape import reshape


def _count(shape, axes):
    m = 1
    for a in axes:
        m *= shape[a]
    return m


def staged_terms(dy, x, gamma, eps, axes):
    """Every intermediate of the course's chain rule, by name (the lesson prints them)."""
    m = _count(x.shape, axes)
    t = {}
    t["mu"] = x.mean(axis=axes, keepdims=True)                              # (1, C, 1, 1) for BN
    t["var"] = x.var(axis=axes, keepdims=True)
    x_mu = x - t["mu"]                                                       # (N, C, H, W)
    t["x_hat"] = x_mu / (t["var"] + eps) ** 0.5
    t["g_beta"] = sum_to(dy, gamma.shape)                                    # dl/dβ
    t["g_gamma"] = sum_to(dy * t["x_hat"], gamma.shape)                      # dl/dγ
    t["g_xhat"] = dy * gamma                                                 # dl/dx̂
    t["g_var"] = ((t["g_xhat"] * x_mu).sum(axis=axes, keepdims=True)
                  * -0.5 * (t["var"] + eps) ** -1.5)                         # dl/dσ²
    t["g_mu"] = ((t["g_xhat"] * -(t["var"] + eps) ** -0.5).sum(axis=axes, keepdims=True)
                 + t["g_var"] * (-2 * x_mu).sum(axis=axes, keepdims=True) / m)   # dl/dμ
    t["g_x"] = (t["g_xhat"] * (t["var"] + eps) ** -0.5
                + t["g_var"] * 2 * x_mu / m + t["g_mu"] / m)                 # dl/dx
    return t


def backward_staged(dy, x, gamma, eps, axes):
    """dl/dx, dl/dγ, dl/dβ by the chain rule exactly as the course derives it.
    ``gamma`` broadcasts against x; the returned dl/dγ, dl/dβ have its shape."""
    t = staged_terms(dy, x, gamma, eps, axes)
    return t["g_x"], t["g_gamma"], t["g_beta"]


def backward_compact(dy, x_hat, std, gamma, axes):
    """dl/dx, dl/dγ, dl/dβ by the closed form, from the forward's x̂ and σ:

        dl/dx = (dl/dx̂ − mean(dl/dx̂) − x̂ · mean(dl/dx̂ · x̂)) / σ

    (the last line of the derivation, divided through by m): the upstream
    gradient loses its mean and its component along x̂, then is scaled by 1/σ."""
    m = _count(x_hat.shape, axes)
    g_beta = sum_to(dy, gamma.shape)                                       # dl/dβ
    g_gamma = sum_to(dy * x_hat, gamma.shape)                              # dl/dγ
    g_xhat = dy * gamma                                                    # dl/dx̂
    if gamma.shape == std.shape:
        # γ is one number per reduced group, like σ (BatchNorm): the two sums
        # are γ·dl/dβ and γ·dl/dγ, already computed
        mean_g_xhat, mean_g_xhat_xhat = gamma * g_beta / m, gamma * g_gamma / m
    else:
        mean_g_xhat = g_xhat.mean(axis=axes, keepdims=True)
        mean_g_xhat_xhat = (g_xhat * x_hat).mean(axis=axes, keepdims=True)
    g_x = (g_xhat - mean_g_xhat - x_hat * mean_g_xhat_xhat) / std          # dl/dx
    return g_x, g_gamma, g_beta


class Normalize(Function):
    """y = γ·x̂ + β over ``axes`` with the hand-derived backward (``backward`` is
    "compact" or "staged"). γ and β are optional and broadcast against x."""

    def __init__(self, axes, eps=1e-5, backward="compact"):
        if backward not in ("compact", "staged"):
            raise ValueError(f"normalize: backward must be 'compact' or 'staged', got {backward!r}")
        self.axes, self.eps, self.form = axes, eps, backward

    def forward(self, x, gamma=None, beta=None):
        self.axes = normalize_axis("normalize", self.axes, x.ndim)
        self.x = x
        self.mu = x.mean(axis=self.axes, keepdims=True)
        x_mu = x - self.mu
        self.var = (x_mu * x_mu).mean(axis=self.axes, keepdims=True)        # biased, as BN's paper
        self.std = self.xp.sqrt(self.var + self.eps)
        self.x_hat = x_mu / self.std
        self.gamma = gamma if gamma is not None else self.xp.ones((), dtype=x.dtype)
        y = self.x_hat if gamma is None else self.x_hat * gamma
        return y if beta is None else y + beta

    def backward(self, gy):
        if self.form == "staged":
            g_x, g_gamma, g_beta = backward_staged(gy, self.x, self.gamma, self.eps, self.axes)
        else:
            g_x, g_gamma, g_beta = backward_compact(gy, self.x_hat, self.std, self.gamma, self.axes)
        return g_x, g_gamma, g_beta   # extra entries beyond the inputs given are ignored


def normalize(x, axes, gamma=None, beta=None, eps=1e-5, backward="compact"):
    """The one normalization formula; every normalizer below only chooses ``axes``."""
    f = Normalize(axes, eps, backward)
    args = (x,) if gamma is None else (x, gamma) if beta is None else (x, gamma, beta)
    return f(*args), f


def batch_norm_autograd(x, gamma, beta, eps=1e-5, axes=(0,)):
    """The same forward built from basic ops, so the engine derives the backward."""
    mu = mean(x, axes, keepdims=True)
    x_hat = mul(sub(x, mu), pow(add(var(x, axes, keepdims=True), eps), -0.5))
    return add(mul(x_hat, gamma), beta)


def channel_shape(x):
    """Shape that broadcasts a per-channel vector against x (N, C, ...): (1, C, 1, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def batch_norm(x, running_mean=None, running_var=None, gamma=None, beta=None, training=True,
               decay=0.9, eps=1e-5, backward="compact"):
    """BatchNorm over (N, C) or (N, C, ...), per channel.

    Training: batch statistics; running_mean/var (arrays, updated in place unless
    gradcheck is probing) follow v ← decay·v + (1 − decay)·batch value, with the
    unbiased variance stored, as PyTorch does. Not training: the running
    statistics, which makes the layer an affine map."""
    from ..tensor import Config, Tensor
    cs = channel_shape(x)
    g = None if gamma is None else reshape(gamma, cs)
    b = None if beta is None else reshape(beta, cs)
    if not training:
        # y = (x − running_mean)/√(running_var + ε)·γ + β: an affine map of x,
        # y = x·scale + shift, so two passes over x
        scale = Tensor._wrap(((running_var + eps) ** -0.5).reshape(cs).astype(x.dtype))
        scale = scale if g is None else mul(scale, g)
        shift = mul(Tensor._wrap(-running_mean.reshape(cs).astype(x.dtype)), scale)
        shift = shift if b is None else add(shift, b)
        return add(mul(x, scale), shift)
    axes = batch_axes(x)
    m = _count(x.shape, axes)
    if m < 2:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input of "
            f"shape {x.shape}: the batch mean would equal the input and every output would "
            "be 0. Use a batch of at least 2, or eval() mode")
    y, f = normalize(x, axes, g, b, eps, backward)
    if running_mean is not None and not Config.freeze_state:
        xp = f.xp
        if not bool(xp.isfinite(f.mu).all()) or not bool(xp.isfinite(f.var).all()):
            raise FloatingPointError(f"batch_norm: the batch statistics of input {x.shape} hold "
                                     "NaN or inf; running statistics were not updated")
        running_mean *= decay
        running_mean += (1 - decay) * f.mu.reshape(running_mean.shape)
        running_var *= decay
        running_var += (1 - decay) * (f.var * m / (m - 1)).reshape(running_var.shape)
    return y


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """Normalize over the last len(normalized_shape) axes; γ, β have that shape."""
    normalized_shape = tuple(normalized_shape) if not isinstance(normalized_shape, int) \
        else (normalized_shape,)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end in the normalized "
                         f"shape {normalized_shape}")
    return normalize(x, tuple(range(x.ndim - k, x.ndim)), gamma, beta, eps)[0]


def instance_norm(x, gamma=None, beta=None, eps=1e-5):
    """Normalize each sample's each channel over its spatial axes."""
    if x.ndim < 3:
        raise ValueError(f"instance_norm: expected (N, C, H, W) or (N, C, L), got {x.shape}")
    cs = channel_shape(x)
    return normalize(x, tuple(range(2, x.ndim)),
                     None if gamma is None else reshape(gamma, cs),
                     None if beta is None else reshape(beta, cs), eps)[0]


def group_norm(x, num_groups, gamma=None, beta=None, eps=1e-5):
    """Split the C channels into groups; normalize each sample's group."""
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"group_norm: {C} channels cannot be split into {num_groups} groups "
                         "(the channel count must be divisible by num_groups)")
    grouped = (N, num_groups, C // num_groups) + tuple(x.shape[2:])     # (N, G, C/G, H, W)
    gs = (1, num_groups, C // num_groups) + (1,) * (x.ndim - 2)
    y = normalize(reshape(x, grouped), tuple(range(2, len(grouped))),
                  None if gamma is None else reshape(gamma, gs),
                  None if beta is None else reshape(beta, gs), eps)[0]
    return reshape(y, x.shape)
