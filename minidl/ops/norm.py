r"""Normalization: one formula, the axes decide which normalizer it is.

    x̂ = (x − μ) / σ,   σ = √(σ² + ε),   y = γ·x̂ + β

μ and σ² are either the batch statistics, mean and *biased* variance over
``axes`` (training), or given (running statistics in eval mode, the mixtures
of Switchable Norm):

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
collapses the three terms of dl/dx into one line:

    dl/dx  = 1/(m·σ) · (m·dl/dx̂ − Σ dl/dx̂ − x̂ · Σ dl/dx̂·x̂)

which, for BatchNorm where γ is constant over the reduced axes, is the
well-known  dx = γ/(m·σ) · (m·dy − Σdy − x̂·Σ(dy·x̂)).

With *given* statistics μ and σ² are inputs, not functions of x: dl/dx is the
first term alone, dl/dx̂/σ, and dl/dμ, dl/dσ² (their first terms) flow back to
whatever computed them (nothing, for running statistics: then the layer is an
affine map of x).

Three versions of the batch-statistics backward live here, side by side:
``backward_staged`` (the first block, term by term), ``backward_compact`` (the
last line, used by the layers: fewer passes over the data) and
``batch_norm_reference`` (the forward composed from basic ops, differentiated
by the engine). The tests and ``lessons.batchnorm_backward`` show they agree to
1e-10 in float64.
"""
from typing import NamedTuple

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Config, Function, Tensor
from .elementwise import add, mul, pow, sub, sum_product_to, sum_to
from .reduce import mean, normalize_axis, var
from .shape import astype, reshape


def _count(shape, axes):
    m = 1
    for a in axes:
        m *= shape[a]
    return m


class StagedTerms(NamedTuple):
    """Every intermediate of the course's chain rule, by its name in the derivation."""
    mu: object       # μ
    var: object      # σ² (biased)
    sigma: object    # σ = √(σ² + ε)
    x_hat: object    # x̂
    g_beta: object   # dl/dβ
    g_gamma: object  # dl/dγ
    g_xhat: object   # dl/dx̂
    g_var: object    # dl/dσ²
    g_mu: object     # dl/dμ
    g_x: object      # dl/dx


def backward_staged(gy, x, gamma, eps, axes):
    """dl/dx, dl/dγ, dl/dβ by the chain rule exactly as the course derives it, one
    term a line, returned with the forward's intermediates as ``StagedTerms``.
    ``gamma`` broadcasts against x; dl/dγ and dl/dβ have its shape. Shapes are
    BatchNorm's on (N, C, H, W)."""
    m = _count(x.shape, axes)
    mu = x.mean(axis=axes, keepdims=True)                                  # (1, C, 1, 1)
    x_mu = x - mu                                                          # (N, C, H, W)
    var = (x_mu * x_mu).mean(axis=axes, keepdims=True)                     # (1, C, 1, 1)
    sigma = (var + eps) ** 0.5                                             # (1, C, 1, 1)
    x_hat = x_mu / sigma                                                   # (N, C, H, W)
    g_beta = sum_to(gy, gamma.shape)                                       # γ's shape
    g_gamma = sum_to(gy * x_hat, gamma.shape)                              # γ's shape
    g_xhat = gy * gamma                                                    # (N, C, H, W)
    g_var = (g_xhat * x_mu).sum(axis=axes, keepdims=True) * -0.5 * sigma ** -3   # (1, C, 1, 1)
    g_mu = ((-g_xhat / sigma).sum(axis=axes, keepdims=True)
            + g_var * (-2 * x_mu).sum(axis=axes, keepdims=True) / m)       # (1, C, 1, 1)
    g_x = g_xhat / sigma + g_var * 2 * x_mu / m + g_mu / m                 # (N, C, H, W)
    return StagedTerms(mu, var, sigma, x_hat, g_beta, g_gamma, g_xhat, g_var, g_mu, g_x)


def backward_compact(gy, x_hat, sigma, gamma, axes):
    """dl/dx, dl/dγ, dl/dβ by the closed form, from the forward's x̂ and σ:

        dl/dx = (dl/dx̂ − mean(dl/dx̂) − x̂ · mean(dl/dx̂ · x̂)) / σ

    (the last line of the derivation, divided through by m): the upstream
    gradient loses its mean and its component along x̂, then is scaled by 1/σ.

    Written for speed: every full-size array is made once and then updated in
    place, and the sums of products come from einsum with no product array.
    Six passes over (N, C, H, W) for BatchNorm, against ten for the line above
    written out (LeNet-5's first BN layer, batch 128: 1.3 ms against 2.3 ms)."""
    m = _count(x_hat.shape, axes)
    g_beta = sum_to(gy, gamma.shape)                                       # γ's shape
    g_gamma = sum_product_to(gy, x_hat, gamma.shape)                       # γ's shape
    if gamma.shape == sigma.shape:
        # γ is one number per reduced group, like σ (BatchNorm): the two means
        # are γ·dl/dβ/m and γ·dl/dγ/m, already summed; dl/dx̂/σ is dl/dy·(γ/σ)
        mean_g_xhat, mean_g_xhat_xhat = gamma * g_beta / m, gamma * g_gamma / m
        g_x = gy * (gamma / sigma)                                         # (N, C, H, W)
    else:
        g_xhat = gy * gamma                                                # (N, C, H, W)
        mean_g_xhat = g_xhat.mean(axis=axes, keepdims=True)                # (1, C, 1, 1)
        mean_g_xhat_xhat = sum_product_to(g_xhat, x_hat, sigma.shape) / m
        g_x = g_xhat
        g_x /= sigma                                                       # dl/dx̂ / σ
    # ... − (x̂·mean(dl/dx̂·x̂) + mean(dl/dx̂)) / σ, the bracket built in one array
    correction = x_hat * (mean_g_xhat_xhat / sigma)                        # (N, C, H, W)
    correction += mean_g_xhat / sigma
    g_x -= correction
    return g_x, g_gamma, g_beta


class Normalize(Function):
    """y = γ·x̂ + β over ``axes``, with the hand-derived backward (``backward``
    is "compact" or "staged"). Inputs: x, then γ and β where ``affine`` says
    they are given, then μ and σ² where ``given_stats``; all broadcast against x."""

    def __init__(self, axes, eps=1e-5, backward="compact", affine=(True, True), given_stats=False):
        if backward not in ("compact", "staged"):
            raise ValueError(f"normalize: backward must be 'compact' or 'staged', got {backward!r}")
        self.axes, self.eps, self.backward_form = axes, eps, backward
        self.affine, self.given_stats = affine, given_stats

    def forward(self, x, *rest):
        rest = list(rest)
        gamma = rest.pop(0) if self.affine[0] else None
        beta = rest.pop(0) if self.affine[1] else None
        self.axes = normalize_axis("normalize", self.axes, x.ndim)
        if self.given_stats:
            self.mu, self.var = rest
            self.sigma = self.xp.sqrt(self.var + self.eps)
            if not any(self.needs_grad):
                # nothing to differentiate (inference): y = x·(γ/σ) + (β − μ·γ/σ),
                # two passes over x instead of four
                scale = 1 / self.sigma if gamma is None else gamma / self.sigma
                shift = -self.mu * scale if beta is None else beta - self.mu * scale
                y = x * scale
                y += shift
                return y
            x_mu = x - self.mu
            # dl/dσ² needs x − μ: kept only when something asks for that gradient
            self.x_mu = x_mu if self.needs_grad[-1] else None
        else:
            self.x, self.mu = x, x.mean(axis=self.axes, keepdims=True)
            x_mu = x - self.mu
            # Σ(x − μ)² by einsum, with no (x − μ)² array: biased
            self.var = sum_product_to(x_mu, x_mu, self.mu.shape) / _count(x.shape, self.axes)
            self.sigma = self.xp.sqrt(self.var + self.eps)
        # x̂ and y are each made once and then updated in place, two fresh arrays
        # fewer (x − μ is not kept: x̂ replaces it). With the einsum above, LeNet-5's
        # first BN layer at batch 128 runs forward in 1.4 ms against 2.1 ms
        self.x_hat = x_mu.copy() if self.given_stats and self.x_mu is not None else x_mu
        self.x_hat /= self.sigma
        self.gamma = gamma if gamma is not None else self.xp.ones((), dtype=x.dtype)
        self.beta_shape = None if beta is None else beta.shape
        if gamma is None:
            return self.x_hat if beta is None else self.x_hat + beta
        y = self.x_hat * gamma
        if beta is not None:
            y += beta
        return y

    def backward(self, gy):
        if self.given_stats:
            g_beta = None if self.beta_shape is None else sum_to(gy, self.beta_shape)
            g_gamma = sum_to(gy * self.x_hat, self.gamma.shape)
            g_xhat = gy * self.gamma
            g_x = g_xhat / self.sigma
            g_mu = sum_to(-g_x, self.mu.shape) if self.needs_grad[-2] else None
            g_var = (sum_to(g_xhat * self.x_mu, self.var.shape) * -0.5 * self.sigma ** -3
                     if self.needs_grad[-1] else None)
            stats = (g_mu, g_var)
        elif self.backward_form == "staged":
            t = backward_staged(gy, self.x, self.gamma, self.eps, self.axes)
            g_x, g_gamma, g_beta, stats = t.g_x, t.g_gamma, t.g_beta, ()
        else:
            g_x, g_gamma, g_beta = backward_compact(gy, self.x_hat, self.sigma, self.gamma, self.axes)
            stats = ()
        affine = [g for g, present in zip((g_gamma, g_beta), self.affine) if present]
        return (g_x, *affine, *stats)


def normalize(x, axes, gamma=None, beta=None, eps=1e-5, mean=None, var=None, backward="compact"):
    """The one normalization formula; every normalizer below only chooses ``axes``
    (and, for given statistics, ``mean`` and ``var``, which broadcast against x)."""
    if (mean is None) != (var is None):
        raise ValueError("normalize: give both mean and var, or neither (batch statistics)")
    f = Normalize(axes, eps, backward, (gamma is not None, beta is not None), mean is not None)
    return f(x, *[a for a in (gamma, beta, mean, var) if a is not None])


def batch_norm_reference(x, gamma, beta, eps=1e-5, axes=(0,)):
    """The same forward built from basic ops, so the engine derives the backward."""
    mu = mean(x, axes, keepdims=True)
    x_hat = mul(sub(x, mu), pow(add(var(x, axes, keepdims=True), eps), -0.5))
    return add(mul(x_hat, gamma), beta)


def channel_shape(x):
    """Shape that broadcasts a per-channel vector against x (N, C, ...): (1, C, 1, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def update_running_stats(running_mean, running_var, mu, var, m, decay, unbiased=True, op="batch_norm"):
    """The one running-statistics update, for every layer that keeps them:

        running ← decay·running + (1 − decay)·batch value

    ``var`` is the biased batch variance over m values; stored as is
    (``unbiased=False``: the course's homework, CS231n) or times m/(m − 1)
    (``unbiased=True``: PyTorch). Refuses NaN/inf batch statistics rather than
    poisoning the running ones. Skipped while gradcheck probes."""
    if running_mean is None or Config.freeze_state:
        return
    mu, var = (s.data if isinstance(s, Tensor) else s for s in (mu, var))
    xp = get_array_module(mu)
    finite = xp.isfinite(mu).all() & xp.isfinite(var).all()
    backend.defer_check(~finite, FloatingPointError,
                        f"{op}: the batch statistics hold NaN or inf; running statistics were not "
                        "updated (check the layer's input and the learning rate)")
    if unbiased:
        var = var * (m / (m - 1))
    for running, batch in ((running_mean, mu), (running_var, var)):
        new = decay * running.data + (1 - decay) * batch.reshape(running.shape).astype(running.dtype)
        # on the GPU the check above is read later: keep the old values where it fails
        running.data = new if xp is np else xp.where(finite, new, running.data)


def _channel(t, cs):
    """A per-channel tensor (γ, β) shaped to broadcast against x."""
    return None if t is None else reshape(t, cs)


def _running(t, x, cs):
    """A running statistic, shaped like a channel and in x's dtype: statistics are
    kept in float32 buffers whatever the input (gradcheck probes in float64)."""
    return reshape(astype(t, x.dtype) if t.dtype != x.dtype else t, cs)


def batch_norm(x, running_mean=None, running_var=None, gamma=None, beta=None, training=True,
               decay=0.9, eps=1e-5, unbiased_running_var=True, backward="compact"):
    """BatchNorm over (N, C) or (N, C, ...), per channel.

    Training: batch statistics, and the running ones (Tensors of shape (C,))
    updated by ``update_running_stats``. Not training: the running statistics
    are given to the same formula, which makes the layer an affine map of x."""
    cs = channel_shape(x)
    g, b = _channel(gamma, cs), _channel(beta, cs)
    axes = batch_axes(x)
    if not training:
        if running_mean is None:
            raise ValueError("batch_norm: eval mode needs running_mean and running_var")
        return normalize(x, axes, g, b, eps, _running(running_mean, x, cs), _running(running_var, x, cs))
    m = _count(x.shape, axes)
    if m < 2:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input of "
            f"shape {x.shape}: the batch mean would equal the input and every output would "
            "be 0. Use a batch of at least 2, or eval() mode")
    f = Normalize(axes, eps, backward, (g is not None, b is not None))
    y = f(x, *[a for a in (g, b) if a is not None])
    update_running_stats(running_mean, running_var, f.mu, f.var, m, decay, unbiased_running_var)
    return y


def _per_sample_values(op, shape, axes):
    if _count(shape, axes) < 2:
        raise ValueError(f"{op}: expected more than 1 value per statistic, got input of shape "
                         f"{tuple(shape)} (1 value over axes {axes}): every output would be 0")


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """Normalize over the last len(normalized_shape) axes; γ, β have that shape."""
    normalized_shape = tuple(normalized_shape) if not isinstance(normalized_shape, int) \
        else (normalized_shape,)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end in the normalized "
                         f"shape {normalized_shape}")
    return normalize(x, tuple(range(x.ndim - k, x.ndim)), gamma, beta, eps)


def instance_norm(x, gamma=None, beta=None, eps=1e-5):
    """Normalize each sample's each channel over its spatial axes."""
    if x.ndim < 3:
        raise ValueError(f"instance_norm: expected (N, C, H, W) or (N, C, L), got {x.shape}")
    axes = tuple(range(2, x.ndim))
    _per_sample_values("instance_norm", x.shape, axes)
    cs = channel_shape(x)
    return normalize(x, axes, _channel(gamma, cs), _channel(beta, cs), eps)


def group_norm(x, num_groups, gamma=None, beta=None, eps=1e-5):
    """Split the C channels into groups; normalize each sample's group."""
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"group_norm: {C} channels cannot be split into {num_groups} groups "
                         "(the channel count must be divisible by num_groups)")
    grouped = (N, num_groups, C // num_groups) + tuple(x.shape[2:])     # (N, G, C/G, H, W)
    axes = tuple(range(2, len(grouped)))
    _per_sample_values("group_norm", grouped, axes)
    gs = (1, num_groups, C // num_groups) + (1,) * (x.ndim - 2)
    y = normalize(reshape(x, grouped), axes, _channel(gamma, gs), _channel(beta, gs), eps)
    return reshape(y, x.shape)
