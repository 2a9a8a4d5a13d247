r"""Normalization: one formula, the axes decide which normalizer it is.

    x̂ = (x − μ) / σ,   σ = √(σ² + ε),   y = γ·x̂ + β

μ and σ² are either the batch statistics, mean and *biased* variance over
``axes`` (training), or given (running statistics in eval mode, the mixtures
of Switchable Norm):

    BatchNorm     (N, C, H, W) over (0, 2, 3)   one μ per channel, across the batch
    LayerNorm     (N, C, H, W) over (1, 2, 3)   one μ per sample
    InstanceNorm  (N, C, H, W) over (2, 3)      one μ per sample and channel
    GroupNorm     (N, G, C/G, H, W) over (2, 3, 4)   one μ per sample and group

The backward, derived by hand (the course's slides, deck 003). Let m be the number of
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
``backward_staged`` (the first block, term by term; the op ``NormalizeStaged``),
``backward_compact`` (the last line, used by the layers: fewer passes over the
data; the op ``Normalize``) and ``batch_norm_reference`` (the forward composed
from basic ops, differentiated by the engine).

The ops are stateless: ``normalize_batch`` returns the output with the batch
statistics, and ``update_running_stats`` is the one running-statistics update
(skipped while gradcheck probes), shared by ``batch_norm`` and the layers. The tests and ``lessons.batchnorm_backward`` show they agree to
1e-10 in float64.
"""
from typing import NamedTuple

import numpy as np

from .. import backend
from ..backend import get_array_module, module_name
from ..errors import InputError
from ..tensor import Config, Function, Tensor
from .elementwise import add, einsum_sum_to, mul, pow, sub, sum_product_to, sum_to
from .reduce import count, mean, normalize_axis, var
from .shape import astype, reshape
from .conv import CACHE_BYTES, ranges


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
    m = count(x.shape, axes)
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


def backward_compact(gy, x_hat, sigma, gamma, axes, out=None, total=None, m=None):
    """dl/dx, dl/dγ, dl/dβ by the closed form, from the forward's x̂ and σ:

        dl/dx = (dl/dx̂ − mean(dl/dx̂) − x̂ · mean(dl/dx̂ · x̂)) / σ

    (the last line of the derivation, divided through by m): the upstream
    gradient loses its mean and its component along x̂, then is scaled by 1/σ.
    Every term is its own array and keeps its value; only dl/dx, the result, is
    built up in place (fewer passes over the data), in ``out`` where given.

    ``total`` sums a piece's sums with the other pieces' (``nn.SplitBatch``: x̂
    is a piece of the batch, ``m`` the values of the whole batch each statistic
    averages); dl/dγ and dl/dβ are returned as this piece's share, which
    SplitBatch adds up."""
    m = count(x_hat.shape, axes) if m is None else m
    g_beta = einsum_sum_to(gy, gamma.shape)                                # dl/dβ, γ's shape
    g_gamma = sum_product_to(gy, x_hat, gamma.shape)                       # dl/dγ, γ's shape
    g_xhat = gy * gamma                                                    # dl/dx̂, (N, C, H, W)
    xp = get_array_module(x_hat)
    if gamma.shape == sigma.shape:
        # BatchNorm: γ is constant over the reduced axes, so Σ dl/dx̂ and Σ dl/dx̂·x̂
        # are γ·dl/dβ and γ·dl/dγ, already summed above
        sums = gamma * xp.stack([g_beta, g_gamma])                         # (2, 1, C, 1, 1)
    else:
        sums = xp.stack([sum_to(g_xhat, sigma.shape), sum_product_to(g_xhat, x_hat, sigma.shape)])
    if total:
        sums = total(sums)                                                 # every piece's share
    mean_g_xhat, mean_g_xhat_xhat = sums[0] / m, sums[1] / m               # σ's shape
    g_x = xp.multiply(x_hat, -mean_g_xhat_xhat, out=out)                  # − x̂·mean(dl/dx̂·x̂)
    g_x += g_xhat                                                          # + dl/dx̂
    g_x -= mean_g_xhat                                                     # − mean(dl/dx̂)
    g_x /= sigma                                                           # dl/dx, (N, C, H, W)
    return g_x, g_gamma, g_beta


class Normalize(Function):
    """y = γ·x̂ + β, x̂ = (x − μ)/σ, with μ and σ² the input's own statistics over
    ``axes`` (training BatchNorm, LayerNorm, InstanceNorm, GroupNorm). Inputs: x,
    γ, β (γ and β broadcast against x; the numbers 1 and 0 for a layer without
    them). Output: y. Stateless: it changes nothing outside itself; the batch
    statistics it normalized with are returned beside y by ``normalize_batch``.
    The backward is ``backward_compact``; ``NormalizeStaged`` is the same op with
    the course's term-by-term backward."""

    def __init__(self, axes, eps=1e-5):
        self.axes, self.eps = axes, eps

    def forward(self, x, gamma, beta):
        # inside nn.SplitBatch, statistics over the batch sum every piece's share, count included
        self.piece = backend.batch_piece() if 0 in self.axes else None
        total = (lambda s: s) if self.piece is None else (lambda s: self.piece[0].all_sum(self.piece[1], s))
        xp, self.m = self.xp, int(total(count(x.shape, self.axes)))        # values each μ averages
        m = self.m
        stat_shape = tuple(1 if i in self.axes else n for i, n in enumerate(x.shape))
        self.mu = xp.empty(stat_shape, dtype=x.dtype)                      # μ, (1, C, 1, 1)
        self.var = xp.empty(stat_shape, dtype=x.dtype)                     # σ², biased, (1, C, 1, 1)
        self.x_hat = xp.empty_like(x)                                      # x̂, (N, C, H, W)
        y = xp.empty_like(x)
        self.gamma, self.beta_shape = gamma, beta.shape

        def piece(c):            # the statistics c and the values of x they average, on their own
            mu, var = self.mu[c], self.var[c]
            mu[...] = total(einsum_sum_to(x[c], mu.shape)) / m             # μ
            x_mu = xp.subtract(x[c], mu, out=self.x_hat[c])                # x − μ, in x̂'s memory
            var[...] = total(sum_product_to(x_mu, x_mu, mu.shape)) / m     # σ², biased
            x_mu /= xp.sqrt(var + self.eps)                                # x̂ = (x − μ)/σ
            xp.multiply(x_mu, _part(gamma, c), out=y[c])                   # y = γ·x̂ + β
            y[c] += _part(beta, c)
        # a batch piece's channels in one piece: every cut of them would wait for the other pieces' sums
        pieces = [(Ellipsis,)] if self.piece else self._pieces(x, gamma.shape, beta.shape)
        backend.parallel(piece, pieces, xp, x.nbytes)
        self.sigma = xp.sqrt(self.var + self.eps)                          # σ = √(σ² + ε)
        return y

    def backward(self, gy):
        xp = self.xp
        pieces = self._pieces(gy, self.gamma.shape, self.beta_shape)
        if self.piece or len(pieces) == 1:
            piece = self.piece and backend.batch_piece()        # the backward's pieces, not the forward's
            total = piece and (lambda s: piece[0].all_sum(piece[1], s))
            g_x, g_gamma, g_beta = backward_compact(gy, self.x_hat, self.sigma, self.gamma, self.axes,
                                                    total=total, m=self.m)
            return g_x, g_gamma, self._beta_gradient(gy, g_beta)
        g_x, g_gamma, g_beta = xp.empty_like(self.x_hat), xp.empty_like(self.gamma), xp.empty_like(self.gamma)

        def piece(c):
            _, g_gamma[c], g_beta[c] = backward_compact(gy[c], self.x_hat[c], self.sigma[c], self.gamma[c],
                                                        self.axes, out=g_x[c])
        backend.parallel(piece, pieces, xp, gy.nbytes)
        return g_x, g_gamma, g_beta

    def _pieces(self, x, gamma_shape, beta_shape):
        """Index ranges along the first axis the statistics do not average over
        (BatchNorm's channels), about CACHE_BYTES of x each; one piece, all of x,
        unless γ and β hold one value per statistic (BatchNorm with its γ and β)."""
        stat_shape = tuple(1 if i in self.axes else n for i, n in enumerate(x.shape))
        if gamma_shape != stat_shape or beta_shape != stat_shape:
            return [(Ellipsis,)]
        cut = next(i for i in range(x.ndim) if i not in self.axes)
        n = x.shape[cut]
        return [(slice(None),) * cut + (part,) for part in ranges(n, x.nbytes // n, CACHE_BYTES[module_name(self.xp)])]

    def _beta_gradient(self, gy, g_beta):
        """dl/dβ in β's shape: γ's, unless one of them is a constant number."""
        return g_beta if self.beta_shape == self.gamma.shape else sum_to(gy, self.beta_shape)


def _part(a, c):
    """a[c] where a holds one value per statistic, a itself where it is one number."""
    return a[c] if getattr(a, "ndim", 0) else a


class NormalizeStaged(Normalize):
    """``Normalize`` with the backward as the course derives it, term by term
    (``backward_staged``: dl/dx̂, dl/dσ², dl/dμ, then dl/dx), for reading and for
    checking the compact one; it keeps x for that."""

    def forward(self, x, gamma, beta):
        if 0 in self.axes and backend.batch_piece() is not None:
            raise ValueError("normalize: the staged backward takes its means over x itself; inside "
                             "nn.SplitBatch x is a piece of the batch: use the compact backward")
        self.x = x
        return super().forward(x, gamma, beta)

    def backward(self, gy):
        t = backward_staged(gy, self.x, self.gamma, self.eps, self.axes)
        return t.g_x, t.g_gamma, self._beta_gradient(gy, t.g_beta)


class NormalizeWithStats(Function):
    """y = γ·(x − μ)/σ + β with μ and σ² given: BatchNorm in eval mode (the
    running statistics), Switchable Norm (its mixtures). Inputs: x, γ, β, μ, σ²,
    all broadcasting against x. Output: y. Since μ and σ² are inputs, not
    functions of x, dl/dx is the first term of the derivation alone, dl/dx̂/σ;
    dl/dμ and dl/dσ² flow back to whatever computed them (nothing, for running
    statistics: then the layer is an affine map of x)."""

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, gamma, beta, mu, var):
        sigma = self.xp.sqrt(var + self.eps)                               # σ = √(σ² + ε)
        if not any(self.needs_grad):
            # inference: y = x·(γ/σ) + (β − μ·γ/σ), two passes over x instead of four
            scale = gamma / sigma
            y = x * scale
            y += beta - mu * scale
            return y
        x_mu = x - mu                                                      # x − μ, (N, C, H, W)
        self.x_mu = x_mu if self.needs_grad[4] else None                   # only dl/dσ² needs it
        self.x_hat = x_mu / sigma                                          # x̂, (N, C, H, W)
        self.sigma, self.gamma = sigma, gamma
        self.shapes = beta.shape, mu.shape, var.shape
        y = self.x_hat * gamma
        y += beta
        return y

    def backward(self, gy):
        beta_shape, mu_shape, var_shape = self.shapes
        g_beta = einsum_sum_to(gy, beta_shape)                             # dl/dβ
        g_gamma = sum_product_to(gy, self.x_hat, self.gamma.shape)         # dl/dγ
        g_xhat = gy * self.gamma                                           # dl/dx̂, (N, C, H, W)
        g_x = g_xhat / self.sigma                                          # dl/dx, (N, C, H, W)
        g_mu = -sum_to(g_x, mu_shape) if self.needs_grad[3] else None      # dl/dμ
        g_var = (sum_product_to(g_xhat, self.x_mu, var_shape) * -0.5 * self.sigma ** -3
                 if self.needs_grad[4] else None)                          # dl/dσ²
        return g_x, g_gamma, g_beta, g_mu, g_var


BACKWARDS = {"compact": Normalize, "staged": NormalizeStaged}     # normalize's backward= choices


class BatchStats(NamedTuple):
    """What ``normalize_batch`` returns: the output and the statistics it used."""
    y: Tensor        # γ·x̂ + β
    mean: object     # μ, the batch mean, an array of shape (1, C, 1, 1), outside the graph
    var: object      # σ², the biased batch variance, likewise
    count: int       # m, the values each statistic averages (the whole batch's inside nn.SplitBatch)


def normalize(x, axes, gamma=None, beta=None, eps=1e-5, mean=None, var=None, backward="compact"):
    """The one normalization formula; every normalizer below only chooses ``axes``
    (or gives ``mean`` and ``var``, which broadcast against x). γ and β default
    to 1 and 0. ``backward="staged"`` differentiates batch statistics term by
    term (``NormalizeStaged``) instead of by the compact form."""
    if (mean is None) != (var is None):
        raise ValueError("normalize: give both mean and var, or neither (batch statistics)")
    if mean is not None:
        return NormalizeWithStats(eps)(x, 1.0 if gamma is None else gamma, 0.0 if beta is None else beta,
                                       mean, var)
    return normalize_batch(x, axes, gamma, beta, eps, backward).y


def normalize_batch(x, axes, gamma=None, beta=None, eps=1e-5, backward="compact"):
    """y normalized by its own statistics over ``axes``, returned with them:
    ``BatchStats(y, mean, var, count)``. Stateless: nothing is updated (BatchNorm's
    running statistics are ``update_running_stats``'s job)."""
    if backward not in BACKWARDS:
        raise ValueError(f"normalize: backward must be one of {sorted(BACKWARDS)}, got {backward!r}")
    f = BACKWARDS[backward](normalize_axis("normalize", axes, x.ndim), eps)
    y = f(x, 1.0 if gamma is None else gamma, 0.0 if beta is None else beta)
    return BatchStats(y, f.mu, f.var, f.m)


def moments(x, axes):
    """μ and the biased σ² of x over ``axes`` (kept as size-1 axes), by basic ops
    the engine differentiates: the statistics every normalizer uses, at the level
    of Tensors (``Normalize`` computes the same two on arrays, for its
    hand-derived backward). Switchable Norm mixes them for IN, LN and BN."""
    mu = mean(x, axes, keepdims=True)
    return mu, var(x, axes, keepdims=True)


def batch_norm_reference(x, gamma, beta, eps=1e-5, axes=(0,)):
    """The same forward built from basic ops, so the engine derives the backward."""
    mu = mean(x, axes, keepdims=True)
    x_hat = mul(sub(x, mu), pow(add(var(x, axes, keepdims=True), eps), -0.5))
    return add(mul(x_hat, gamma), beta)


def channel_shape(shape):
    """The shape that broadcasts one value per channel against an input of
    ``shape`` (N, C, ...): (1, C, 1, ...)."""
    return (1, shape[1]) + (1,) * (len(shape) - 2)


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


def check_batch_values(op, shape, axes):
    """Training BatchNorm needs more than one value per channel: with one, the
    batch mean is that value and every output 0."""
    if count(shape, axes) < 2:
        raise ValueError(
            f"{op}: expected more than 1 value per channel when training, got input of shape "
            f"{tuple(shape)}. With one value per channel the batch mean is that value and every "
            "output would be 0: use a batch of at least 2, or the running statistics (a layer's "
            ".eval(), or training=False)")


def batch_norm(x, running_mean=None, running_var=None, gamma=None, beta=None, training=True,
               decay=0.9, eps=1e-5, unbiased_running_var=True, backward="compact", *, op="batch_norm"):
    """BatchNorm over (N, C) or (N, C, ...), per channel. Its input checks are
    made here, once, in the name of ``op`` (a layer passes its own name).

    Training: the batch statistics (``normalize_batch``, which changes nothing),
    then the running ones, when given (Tensors of shape (C,)), updated in place
    by ``update_running_stats``, as PyTorch's F.batch_norm updates the buffers
    it is given. Not training: the running statistics are given to the same
    formula, which makes the layer an affine map of x."""
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, which it updates in place (a layer's "
                            f"buffer), got {type(t).__name__}; wrap it once: md.Tensor(array)")
    if x.ndim < 2:
        raise ValueError(f"{op}: expected input (N, C) or (N, C, ...), got shape {tuple(x.shape)}")
    cs = channel_shape(x.shape)
    g, b = _channel(gamma, cs), _channel(beta, cs)
    axes = batch_axes(x)
    if not training:
        if running_mean is None:
            raise ValueError(f"{op}: eval mode needs running_mean and running_var")
        return normalize(x, axes, g, b, eps, _running(running_mean, x, cs), _running(running_var, x, cs))
    if backend.batch_piece() is not None and backward != "compact":
        raise ValueError(f"{op}: inside nn.SplitBatch the batch statistics' backward is the compact one "
                         f"(its sums are added over the pieces), got backward={backward!r}")
    y, mu, var, m = normalize_batch(x, axes, g, b, eps, backward)
    if m < 2:      # m: every piece's values inside nn.SplitBatch, so checked once they are counted
        check_batch_values(op, x.shape, axes)
    update_running_stats(running_mean, running_var, mu, var, m, decay, unbiased_running_var, op)
    return y


def _per_sample_values(op, shape, axes):
    if count(shape, axes) < 2:
        raise ValueError(f"{op}: expected more than 1 value per statistic, got input of shape "
                         f"{tuple(shape)} (1 value over axes {axes}): every output would be 0")


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """Normalize over the last len(normalized_shape) axes; γ, β have that shape."""
    normalized_shape = tuple(normalized_shape) if not isinstance(normalized_shape, int) \
        else (normalized_shape,)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise InputError(f"layer_norm: input of shape {x.shape} does not end in the normalized "
                         f"shape {normalized_shape}")
    return normalize(x, tuple(range(x.ndim - k, x.ndim)), gamma, beta, eps)


def instance_norm(x, gamma=None, beta=None, eps=1e-5):
    """Normalize each sample's each channel over its spatial axes."""
    if x.ndim < 3:
        raise ValueError(f"instance_norm: expected (N, C, H, W) or (N, C, L), got {x.shape}")
    axes = tuple(range(2, x.ndim))
    _per_sample_values("instance_norm", x.shape, axes)
    cs = channel_shape(x.shape)
    return normalize(x, axes, _channel(gamma, cs), _channel(beta, cs), eps)


def group_norm(x, num_groups, gamma=None, beta=None, eps=1e-5):
    """Split the C channels into groups; normalize each sample's group."""
    N, C = x.shape[:2]
    if C % num_groups:
        raise InputError(f"group_norm: {C} channels cannot be split into {num_groups} groups "
                         "(the channel count must be divisible by num_groups)")
    grouped = (N, num_groups, C // num_groups) + tuple(x.shape[2:])     # (N, G, C/G, H, W)
    axes = tuple(range(2, len(grouped)))
    _per_sample_values("group_norm", grouped, axes)
    gs = (1, num_groups, C // num_groups) + (1,) * (x.ndim - 2)
    y = normalize(reshape(x, grouped), axes, _channel(gamma, gs), _channel(beta, gs), eps)
    return reshape(y, x.shape)
