r"""Normalization layers. Every one computes the same formula (``minidl/ops/norm.py``)

    y = γ·(x − μ)/√(σ² + ε) + β

and differs only in where μ and σ² come from:

    BatchNorm1d/2d   per channel, over the batch (and space); running statistics in eval
    LayerNorm        per sample, over its last axes
    InstanceNorm2d   per sample and channel, over (H, W)
    GroupNorm        per sample and group of channels
    SwitchNorm1d/2d  a learned softmax mixture of the IN, LN and BN statistics
    SparseSwitchNorm1d/2d   the same mixture with SparsestMax weights (one-hot in the end)

``_NormBase`` holds what they share (eps, γ/β, running buffers and their one
update, ``update_running_stats``).

**The running variance.** Training normalizes with the *biased* batch variance
(divide by m). What the running average stores differs between conventions:
PyTorch stores the unbiased one (× m/(m − 1)); the course's homework (deck 002's
``moving_var``) and CS231n store the biased one. minidl follows PyTorch by
default; ``unbiased_running_var=False`` gives the homework's. The difference is
the factor m/(m − 1) in running_var (1.6 % for m = 64), so eval-mode outputs
differ by up to that factor's square root, about 0.8 %.
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..ops.norm import batch_axes, channel_shape, check_batch_values, moments, update_running_stats
from ..ops.sparsemax import sparsestmax
from ..tensor import Config, Tensor
from .module import Module, Parameter, check_input

_MOMENTUM_HELP = (
    "{layer}: there is no momentum= here, because two conventions collide under that name. "
    "minidl uses the course's decay: running = decay·running + (1 − decay)·batch. PyTorch's "
    "momentum m is the weight of the *new* batch, i.e. decay = 1 − m (PyTorch's default "
    "momentum=0.1 is decay=0.9). The course homework's \"momentum=0.9\" is the weight of the "
    "*old* value, i.e. decay = 0.9. Pass decay= instead.")


class _NormBase(Module):
    """γ (``gamma``, init 1) and β (``beta``, init 0) of ``param_shape`` when
    affine, and, when tracking, ``running_mean`` (init 0) and ``running_var``
    (init 1), updated as v ← decay·v + (1 − decay)·batch value."""

    def __init__(self, num_features, param_shape, eps=1e-5, affine=True,
                 track_running_stats=False, decay=0.9, momentum=None, unbiased_running_var=True):
        super().__init__()
        name = type(self).__name__
        if momentum is not None:
            raise TypeError(_MOMENTUM_HELP.format(layer=name))
        if not 0 <= decay < 1:
            raise ValueError(f"{name}: decay must be in [0, 1), got {decay}")
        if not eps > 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps}")
        self.num_features, self.eps, self.decay = num_features, eps, decay
        self.affine, self.track_running_stats = affine, track_running_stats
        self.unbiased_running_var = unbiased_running_var
        self.gamma = Parameter(np.ones(param_shape, dtype=np.float32)) if affine else None
        self.beta = Parameter(np.zeros(param_shape, dtype=np.float32)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def __call__(self, x):
        check_input(type(self).__name__, x, None if self.gamma is None else self.gamma.dtype)
        return self.forward(x)

    def _check_shape(self, x, dims, doc):
        if x.ndim not in dims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input of shape "
                             f"{doc.format(C=self.num_features)}, got {tuple(x.shape)}")

    def _check_per_sample_image(self, x):
        """(N, C, H, W) with H·W > 1: statistics per sample and channel need >1 value."""
        self._check_shape(x, (4,), "(N, {C}, H, W)")
        if x.shape[2] * x.shape[3] < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 spatial value per "
                             f"channel, got input of shape {tuple(x.shape)}")

    def _update_running(self, mu, var, m):
        update_running_stats(self.running_mean, self.running_var, mu, var, m, self.decay,
                             self.unbiased_running_var, op=type(self).__name__)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, decay={self.decay}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    dims, shape_doc = (), ""

    def __init__(self, num_features, eps=1e-5, decay=0.9, affine=True, track_running_stats=True,
                 *, unbiased_running_var=True, momentum=None):
        super().__init__(num_features, (num_features,), eps, affine, track_running_stats, decay,
                         momentum, unbiased_running_var)

    def forward(self, x):
        self._check_shape(x, self.dims, self.shape_doc)
        use_batch = self.training or not self.track_running_stats
        running = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return F.batch_norm(x, *running, self.gamma, self.beta, training=use_batch,
                            decay=self.decay, eps=self.eps,
                            unbiased_running_var=self.unbiased_running_var, op=type(self).__name__)


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) (one value per neuron, as after a Linear) or (N, C, L)."""
    dims, shape_doc = (2, 3), "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W): one μ and σ² per channel, across batch and space."""
    dims, shape_doc = (4,), "(N, {C}, H, W)"


class BatchNorm(_BatchNorm):
    """The homework's signature, ``BatchNorm(num_features, num_dims)``: num_dims 2
    for after a Linear layer (N, C), 4 for after a convolution (N, C, H, W)."""

    def __init__(self, num_features, num_dims, eps=1e-5, decay=0.9, *, unbiased_running_var=True,
                 momentum=None):
        if num_dims not in (2, 4):
            raise ValueError(f"BatchNorm: num_dims must be 2 (fully connected) or 4 (convolution), "
                             f"got {num_dims}")
        super().__init__(num_features, eps, decay, unbiased_running_var=unbiased_running_var,
                         momentum=momentum)
        self.dims, self.shape_doc = (num_dims,), ("(N, {C})" if num_dims == 2 else "(N, {C}, H, W)")


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
        self._check_shape(x, (4,), "(N, {C}, H, W)")        # one value per statistic: instance_norm says
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


class _SwitchNorm(_NormBase):
    r"""Switchable Normalization (Luo et al. 2019; the course's slides, deck 001): μ and σ²
    are learned mixtures of the normalizers' statistics,

        μ = Σ_k w_k·μ_k,   σ² = Σ_k v_k·σ²_k,   w = softmax(mean_weight), v = softmax(var_weight)

    over k ∈ (IN, LN, BN) for images, (LN, BN) for (N, C) inputs, where IN does
    not exist. Each normalizer's statistics are ``moments(x, axes)`` over its own
    axes, the helper every normalizer shares. (The authors' code,
    switchablenorms/Switchable-Normalization, derives LN's and BN's from IN's
    through the second moment E[x²] = σ² + μ²; the values are the same, and the
    normalizers lesson shows both.)

    The logits start equal. Only the BN part keeps running statistics (the one
    update every BN layer uses); in eval mode they replace μ_BN and σ²_BN while
    IN and LN stay per sample. The mixture is given to the one normalization
    formula as its statistics, and autograd carries dl/dμ and dl/dσ² back
    through the mixture. One difference from the authors' code: variances are
    the biased ones throughout (theirs take PyTorch's unbiased x.var() per
    instance), so pinning the weights to one normalizer gives exactly that
    normalizer."""

    normalizers, dims, shape_doc = (), (), ""

    def __init__(self, num_features, eps=1e-5, decay=0.9, *, unbiased_running_var=True,
                 momentum=None):
        super().__init__(num_features, (num_features,), eps, True, True, decay, momentum,
                         unbiased_running_var)
        k = len(self.normalizers)
        self.mean_weight = Parameter(np.ones(k, dtype=np.float32))   # logits, one per normalizer
        self.var_weight = Parameter(np.ones(k, dtype=np.float32))

    def mixture_weights(self):
        """(w, v): the weights over ``normalizers`` for the means and the variances."""
        return self.mean_weight.softmax(), self.var_weight.softmax()

    AXES = {"IN": (2, 3), "LN": (1, 2, 3), "BN": (0, 2, 3)}          # for (N, C, H, W)
    AXES_1D = {"LN": (1,), "BN": (0,)}                               # for (N, C)

    def normalizer_statistics(self, x):
        """{normalizer: (μ, σ²)} of x, each over its own axes (broadcastable against x)."""
        axes = self.AXES if x.ndim == 4 else self.AXES_1D
        return {name: moments(x, axes[name]) for name in self.normalizers}

    def forward(self, x):
        if x.ndim == 4:
            self._check_per_sample_image(x)
        else:
            self._check_shape(x, self.dims, self.shape_doc)
        if self.training:
            check_batch_values(type(self).__name__, x.shape, batch_axes(x))
        stats = self.normalizer_statistics(x)
        cs = channel_shape(x.shape)
        if self.training:
            self._update_running(*stats["BN"], x.size // x.shape[1])
        else:                   # eval: the running statistics stand in for the batch's
            stats["BN"] = tuple(F.reshape(F.astype(r, x.dtype), cs) for r in (self.running_mean, self.running_var))
        w, v = self.mixture_weights()
        self.record_choice(w, v)
        mu = sum(w[k] * stats[name][0] for k, name in enumerate(self.normalizers))
        var = sum(v[k] * stats[name][1] for k, name in enumerate(self.normalizers))
        return F.normalize(x, (), self.gamma.reshape(cs), self.beta.reshape(cs), self.eps, mean=mu, var=var)

    def record_choice(self, w, v):
        """Switchable Norm keeps no choice; Sparse Switchable Norm records its one-hot weights."""

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, decay={self.decay}"


class SwitchNorm2d(_SwitchNorm):
    __doc__ = _SwitchNorm.__doc__
    normalizers, dims, shape_doc = ("IN", "LN", "BN"), (4,), "(N, {C}, H, W)"


class SwitchNorm1d(_SwitchNorm):
    """Switchable Normalization for (N, C) inputs (after a Linear layer): a mixture
    of LN and BN only, since one value per sample and channel has no IN."""
    normalizers, dims, shape_doc = ("LN", "BN"), (2,), "(N, {C})"


class _SparseSwitchNorm(_SwitchNorm):
    """Sparse Switchable Normalization (Shao et al. 2019; the course's slides, deck 001):
    Switchable Norm with the softmax replaced by SparsestMax
    (``minidl/ops/sparsemax.py``), whose weights turn one-hot as ``radius``
    grows from 0 to 1: in the end each layer uses one normalizer alone.

    The caller sets the radius: ``layer.set_radius(r)``, or for a whole model
    ``RadiusSchedule(model, total_steps).step()`` once per training step (r
    grows linearly from 0 to 1). Once a layer's weights are one-hot their
    gradient is zero; the choice is recorded in the buffers ``mean_choice`` and
    ``var_choice`` (−1 until chosen) and kept from then on, so weight decay
    shrinking the logits cannot undo it."""

    def __init__(self, num_features, **kwargs):    # Switchable Norm's arguments
        super().__init__(num_features, **kwargs)
        self.radius = 0.0
        self.register_buffer("mean_choice", np.array(-1, dtype=np.int64))
        self.register_buffer("var_choice", np.array(-1, dtype=np.int64))

    def set_radius(self, radius):
        if not 0 <= radius <= 1:
            raise ValueError(f"{type(self).__name__}: radius must be in [0, 1], got {radius}")
        self.radius = float(radius)

    def mixture_weights(self):
        """(w, v) by SparsestMax at the current radius; a recorded choice is a constant one-hot."""
        out = []
        for logits, choice in ((self.mean_weight, self.mean_choice), (self.var_weight, self.var_choice)):
            k = int(choice.item())
            if k >= 0:                                   # frozen: a constant one-hot
                one_hot = np.eye(len(self.normalizers), dtype=logits.dtype)[k]
                out.append(Tensor._wrap(backend.to_device(one_hot, logits.device)))
            else:
                out.append(sparsestmax(logits, self.radius))
        return tuple(out)

    def record_choice(self, w, v):
        """Writes the buffers mean_choice and var_choice once the weights (w, v)
        of a training step are one-hot, freezing that normalizer from then on."""
        if not self.training or Config.freeze_state:
            return
        for p, choice in ((w, self.mean_choice), (v, self.var_choice)):
            if int(choice.item()) < 0 and float(p.max().item()) == 1.0:
                choice.data[...] = int(p.numpy().argmax())

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, decay={self.decay}, radius={self.radius}"


class SparseSwitchNorm2d(_SparseSwitchNorm):
    __doc__ = _SparseSwitchNorm.__doc__
    normalizers, dims, shape_doc = ("IN", "LN", "BN"), (4,), "(N, {C}, H, W)"


class SparseSwitchNorm1d(_SparseSwitchNorm):
    """Sparse Switchable Normalization for (N, C) inputs: LN and BN only."""
    normalizers, dims, shape_doc = ("LN", "BN"), (2,), "(N, {C})"


class RadiusSchedule:
    """SparsestMax's radius for every Sparse Switchable Norm layer of ``model``,
    growing linearly from 0 to 1 over ``total_steps`` calls of ``step()``."""

    def __init__(self, model, total_steps):
        if total_steps < 1:
            raise ValueError(f"RadiusSchedule: total_steps must be >= 1, got {total_steps}")
        self.layers = [m for m in model.modules() if isinstance(m, _SparseSwitchNorm)]
        if not self.layers:
            raise ValueError(f"RadiusSchedule: {type(model).__name__} has no Sparse Switchable Norm "
                             "layer whose radius it could set (norm=\"sparse_switch\" makes some)")
        self.total_steps, self.steps = total_steps, 0
        self._apply()

    def _apply(self):
        for layer in self.layers:
            layer.set_radius(min(1.0, self.steps / self.total_steps))

    def step(self):
        self.steps += 1
        self._apply()


def norm_factory(norm, decay=0.9):
    """A ``make(num_features, num_dims) -> Module`` for a model's norm= argument:
    None, "batch", "group", "layer", "instance", "switch", "sparse_switch", or a
    callable. After Linear layers (num_dims 2), "instance" inserts nothing (one
    value per sample and channel has no statistics), and the switchable ones mix
    LN and BN."""
    if norm is None or callable(norm):
        return norm
    makers = {
        "batch": lambda c, d: BatchNorm(c, d, decay=decay),
        "group": lambda c, d: GroupNorm(next(g for g in (4, 3, 2, 1) if c % g == 0), c),
        "layer": lambda c, d: GroupNorm(1, c) if d == 4 else LayerNorm(c),
        "instance": lambda c, d: InstanceNorm2d(c, affine=True) if d == 4 else Identity(),
        "switch": lambda c, d: (SwitchNorm2d if d == 4 else SwitchNorm1d)(c, decay=decay),
        "sparse_switch": lambda c, d: (SparseSwitchNorm2d if d == 4 else SparseSwitchNorm1d)(c, decay=decay),
    }
    if norm not in makers:
        raise ValueError(f"norm must be None, a callable or one of {sorted(makers)}, got {norm!r}")
    return makers[norm]


class Identity(Module):
    def forward(self, x):
        return x
