"""Normalization layers. ``_NormBase`` holds what they share (eps, γ/β, running
buffers); each subclass says only which axes it reduces over (see
``minidl/ops/norm.py`` for the formula and its hand-derived backward)."""
import numpy as np

from .. import functional as F
from ..tensor import Config
from .layers import Module
from .module import Parameter

_MOMENTUM_HELP = (
    "{layer}: there is no momentum= here, because two conventions collide under that name. "
    "minidl uses the course's decay: running = decay·running + (1 − decay)·batch. PyTorch's "
    "momentum m is the weight of the *new* batch, i.e. decay = 1 − m (PyTorch's default "
    "momentum=0.1 is decay=0.9). The course homework's \"momentum=0.9\" is the weight of the "
    "*old* value, i.e. decay = 0.9. Pass decay= instead.")


class _NormBase(Module):
    """γ (``gamma``, init 1) and β (``beta``, init 0) of ``param_shape`` when
    affine, and, when tracking, ``running_mean`` (init 0) and ``running_var``
    (init 1) updated as v ← decay·v + (1 − decay)·y."""

    def __init__(self, num_features, param_shape, eps=1e-5, affine=True,
                 track_running_stats=False, decay=0.9, momentum=None):
        super().__init__()
        if momentum is not None:
            raise TypeError(_MOMENTUM_HELP.format(layer=type(self).__name__))
        if not 0 <= decay < 1:
            raise ValueError(f"{type(self).__name__}: decay must be in [0, 1), got {decay}")
        self.num_features, self.eps, self.decay = num_features, eps, decay
        self.affine, self.track_running_stats = affine, track_running_stats
        self.gamma = Parameter(np.ones(param_shape, dtype=np.float32)) if affine else None
        self.beta = Parameter(np.zeros(param_shape, dtype=np.float32)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def _check_per_sample_image(self, x):
        """(N, C, H, W) with H·W > 1: statistics per sample and channel need >1 value."""
        name = type(self).__name__
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected input of shape (N, {self.num_features}, H, W), "
                             f"got {x.shape}")
        if x.shape[2] * x.shape[3] < 2:
            raise ValueError(f"{name}: expected more than 1 spatial value per channel, got input "
                             f"of shape {x.shape}")

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, decay={self.decay}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    expected_dims = ()

    def __init__(self, num_features, eps=1e-5, decay=0.9, affine=True, track_running_stats=True,
                 *, momentum=None):
        super().__init__(num_features, (num_features,), eps, affine, track_running_stats, decay,
                         momentum)

    def forward(self, x):
        if x.ndim not in self.expected_dims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input of shape "
                             f"{self.shape_doc.format(C=self.num_features)}, got {x.shape}")
        use_batch = self.training or not self.track_running_stats
        running = (self.running_mean.data, self.running_var.data) if self.track_running_stats \
            else (None, None)
        if use_batch and x.size // x.shape[1] < 2:
            raise ValueError(
                f"{type(self).__name__}: expected more than 1 value per channel when training, "
                f"got input of shape {x.shape}. With one value per channel the batch mean is "
                "that value and every output would be 0: use a batch of at least 2, or "
                "call .eval() to use the running statistics")
        return F.batch_norm(x, *running, self.gamma, self.beta, training=use_batch,
                            decay=self.decay, eps=self.eps)


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) (one value per neuron, as after a Linear) or (N, C, L)."""
    expected_dims, shape_doc = (2, 3), "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W): one μ and σ² per channel, across batch and space."""
    expected_dims, shape_doc = (4,), "(N, {C}, H, W)"


def BatchNorm(num_features, num_dims, eps=1e-5, decay=0.9, *, momentum=None):  # noqa: N802
    """The homework's signature: num_dims 2 gives BatchNorm1d, 4 gives BatchNorm2d."""
    if momentum is not None:
        raise TypeError(_MOMENTUM_HELP.format(layer="BatchNorm"))
    if num_dims not in (2, 4):
        raise ValueError(f"BatchNorm: num_dims must be 2 (fully connected) or 4 (convolution), "
                         f"got {num_dims}")
    return (BatchNorm1d if num_dims == 2 else BatchNorm2d)(num_features, eps, decay)


class LayerNorm(_NormBase):
    """Normalize each sample over its last axes (``normalized_shape``)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        super().__init__(shape, shape, eps, elementwise_affine)
        self.normalized_shape = shape

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.gamma, self.beta, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.affine}"


class InstanceNorm2d(_NormBase):
    """Normalize each sample's each channel over (H, W)."""

    def __init__(self, num_features, eps=1e-5, affine=False):
        super().__init__(num_features, (num_features,), eps, affine)

    def forward(self, x):
        self._check_per_sample_image(x)
        return F.instance_norm(x, self.gamma, self.beta, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class GroupNorm(_NormBase):
    """Normalize each sample over groups of num_channels/num_groups channels."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels cannot be split into "
                             f"{num_groups} groups (num_channels must be divisible by num_groups)")
        super().__init__(num_channels, (num_channels,), eps, affine)
        self.num_groups = num_groups

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"GroupNorm: expected input (N, {self.num_features}, ...), got {x.shape}")
        return F.group_norm(x, self.num_groups, self.gamma, self.beta, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_features}, eps={self.eps}, affine={self.affine}"


class SwitchNorm2d(_NormBase):
    """Switchable Normalization (Luo et al., the course's seed 001): μ and σ² are
    softmax-weighted mixtures of the IN, LN and BN statistics,

        μ = w₁·μ_IN + w₂·μ_LN + w₃·μ_BN,  w = softmax(mean_weight)
        σ² = v₁·σ²_IN + v₂·σ²_LN + v₃·σ²_BN,  v = softmax(var_weight)

    with LN and BN statistics computed from the IN ones (σ²_LN = E[σ²_IN + μ_IN²] − μ_LN²).
    Eval mode uses the BN running statistics for the BN part. Autograd derives
    the backward (the tests gradcheck it in both modes)."""

    def __init__(self, num_features, eps=1e-5, decay=0.9, *, momentum=None):
        super().__init__(num_features, (num_features,), eps, True, True, decay, momentum)
        self.mean_weight = Parameter(np.ones(3, dtype=np.float32))   # logits for IN, LN, BN
        self.var_weight = Parameter(np.ones(3, dtype=np.float32))

    def forward(self, x):
        self._check_per_sample_image(x)
        mean_in = x.mean(axis=(2, 3), keepdims=True)                    # (N, C, 1, 1)
        var_in = x.var(axis=(2, 3), keepdims=True)
        second = var_in + mean_in * mean_in                            # E[x²] per (n, c)
        mean_ln = mean_in.mean(axis=1, keepdims=True)                   # (N, 1, 1, 1)
        var_ln = second.mean(axis=1, keepdims=True) - mean_ln * mean_ln
        if self.training:
            mean_bn = mean_in.mean(axis=0, keepdims=True)               # (1, C, 1, 1)
            var_bn = second.mean(axis=0, keepdims=True) - mean_bn * mean_bn
            if not Config.freeze_state:
                m = x.shape[0] * x.shape[2] * x.shape[3]
                d = self.decay
                self.running_mean.data = d * self.running_mean.data + \
                    (1 - d) * mean_bn.data.reshape(-1).astype(self.running_mean.dtype)
                self.running_var.data = d * self.running_var.data + \
                    (1 - d) * (var_bn.data * m / (m - 1)).reshape(-1).astype(self.running_var.dtype)
        else:
            cs = (1, self.num_features, 1, 1)
            mean_bn = self.running_mean.data.reshape(cs).astype(x.dtype)
            var_bn = self.running_var.data.reshape(cs).astype(x.dtype)
        w, v = self.mean_weight.softmax(), self.var_weight.softmax()
        mu = w[0] * mean_in + w[1] * mean_ln + w[2] * mean_bn
        sigma2 = v[0] * var_in + v[1] * var_ln + v[2] * var_bn
        x_hat = (x - mu) * (sigma2 + self.eps) ** -0.5
        cs = (1, self.num_features, 1, 1)
        return x_hat * self.gamma.reshape(cs) + self.beta.reshape(cs)


def norm_factory(norm, decay=0.9):
    """A ``make(num_features, num_dims) -> Module`` for a model's norm= argument:
    None, "batch", "group", "layer", "instance", "switch", or a callable.
    After Linear layers (num_dims 2), "instance" inserts nothing (one value per
    sample and channel has no statistics) and "switch" inserts BatchNorm1d."""
    if norm is None or callable(norm):
        return norm
    makers = {
        "batch": lambda c, d: BatchNorm(c, d, decay=decay),
        "group": lambda c, d: GroupNorm(next(g for g in (4, 3, 2, 1) if c % g == 0), c),
        "layer": lambda c, d: GroupNorm(1, c) if d == 4 else LayerNorm(c),
        "instance": lambda c, d: InstanceNorm2d(c, affine=True) if d == 4 else Identity(),
        "switch": lambda c, d: SwitchNorm2d(c, decay=decay) if d == 4 else BatchNorm1d(c, decay=decay),
    }
    if norm not in makers:
        raise ValueError(f"norm must be None, a callable or one of {sorted(makers)}, got {norm!r}")
    return makers[norm]


class Identity(Module):
    def forward(self, x):
        return x
