# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: -jupytext.text_representation.format_version,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Signal propagation in deep nets: exploding variance, dead ReLUs, RescaleNet
#
# The course's slides (deck 000) ask whether normalization is indispensable, and
# answer with RescaleNet. Its argument, in three steps we measure here:
#
# 1. **Dead ReLUs.** In a plain deep ReLU MLP with Kaiming weights $w_{ij} \sim \mathcal N(0, 2/d)$
#    and $b = 0$, if the inputs $x_j$ have mean $c_k \ge 0$ then
#    $\mathbb E[y_i] = c_k \sum_j w_{ij}$, which is negative for about half the units
#    and strongly so for some: the slides report about 40 % of units never active at 20 layers.
# 2. **Variance explosion.** A residual block $x_\ell = x_{\ell-1} + F_\ell(x_{\ell-1})$ with
#    $\mathrm{Var}(F_\ell(x)) = \mathrm{Var}(x)$ doubles the variance (eq. 2):
#    $\mathrm{Var}(x_\ell) \approx 2\,\mathrm{Var}(x_{\ell-1})$. RescaleNet keeps it flat (eq. 9):
#
#    $$x_k = \alpha_k x_{k-1} + \beta_k F_k(x_{k-1}), \qquad
#      \alpha_k = \sqrt{\frac{k-1+c}{k+c}}, \quad \beta_k = \frac{1}{\sqrt{k+c}}, \quad \alpha_k^2 + \beta_k^2 = 1 .$$
#
#    The gradient norm then grows like $\sum_k 1/(k+c)$ with depth (eq. 8), bounded for $c = L$.
#    (The slide prints the constraint as "$\alpha_2^k + \beta_2^k = 1$": it means
#    $\alpha_k^2 + \beta_k^2 = 1$. Its line "if c = L is small, the gradient depends less on depth"
#    means: with $c = L$ the dependence on depth weakens.)
# 3. **Training** a deep residual MLP without normalization, with BN, and with RescaleNet:
#    the largest learning rate each survives.
#
# The slides' ImageNet ResNet-50 tables are shown beside ours at the end; a
# 16-block MLP on Fashion-MNIST can show the variance and the stability, not
# those accuracies.

# %%
"""Signal propagation: dead ReLUs, residual variance, RescaleNet (the course's slides, deck 000).

    python -m lessons.deep_signal            # wall time recorded in docs/results/deep_signal.md
    python -m lessons.deep_signal --quick    # seconds, synthetic images
"""
import math

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
import minidl.functional as F
from lessons.chapter import integer_ticks, legend_below, plain_log_ticks, say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, train_classifier

TEST, EPOCHS, BATCH = 2000, 2, 64
SLIDE_TABLES = {   # the course's slides, deck 000: ImageNet ResNet-50 top-1 (%)
    "with normalization": {"BN": "76.4", "LN": "74.7", "IN": "71.6", "GN": "75.9", "SN": "76.9",
                           "RescaleNet": "76.58 ± 0.08", "FRN": "77.2", "RescaleNet + cosine LR": "77.2 ± 0.06"},
    "without normalization": {"Fixup": "72.4", "Fixup + mixup": "76.0", "Fixup + dropout": "75.5",
                              "SkipInit": "74.9", "SkipInit + dropout": "75.6", "RescaleNet": "74.3",
                              "RescaleNet + mixup": "76.4", "RescaleNet + dropout": "76.6"}}

s = settings("deep_signal", dict(
    width=256, depth=30, probe=1000,                   # the plain MLP and the images that probe it
    res_depths=[1, 2, 4, 8, 16, 32, 50],               # residual depths measured at init
    blocks=16, train_width=128, train_size=10000,      # the residual MLP that is trained
    lr_grid=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0],        # searched for the largest stable rate
    stability_steps=150, stability_seeds=3, multipliers=False, seed=0),
    quick=dict(width=64, depth=12, probe=200, res_depths=[1, 4, 8], blocks=4, train_width=64, train_size=400,
               lr_grid=[0.01, 0.1, 1.0], stability_steps=10), doc=__doc__,
    help=dict(multipliers="RescaleNet with learnable scalars m_k/√L on each branch (eq. 10)",
              stability_steps="steps per learning-rate probe",
              stability_seeds="random seeds per learning-rate probe: a rate is stable when stable for all"),
    runs=True)
width, depth, probe_n, res_depths, blocks, lr_grid, stability_steps = (
    s.width, s.depth, s.probe, s.res_depths, s.blocks, s.lr_grid, s.stability_steps)
dataset, train, test = fashion_mnist(s.quick, s.train_size, 200 if s.quick else TEST, s.seed)
x_probe = md.Tensor(train.get_batch(np.arange(min(probe_n, len(train))))[0].reshape(-1, 784))
results = {}

# %% [markdown]
# ## 1. A plain deep ReLU MLP at initialization: variance and dead units per layer

# %%
def plain_mlp_at_init(with_bias):
    """Per layer: variance of the pre-activations y, and the fraction of units never
    active (y ≤ 0 for every probe image). Kaiming N(0, 2/fan_in) weights."""
    md.manual_seed(s.seed)
    h, variances, dead = x_probe, [], []
    for k in range(depth):
        layer = md.nn.Linear(h.shape[1], width, bias=with_bias)
        md.nn.init.kaiming_normal_(layer.weight)
        if with_bias:      # PyTorch's default bias, U(±1/√fan_in); b = 0 is the slides' setting
            md.nn.init.uniform_(layer.bias, -1 / math.sqrt(h.shape[1]), 1 / math.sqrt(h.shape[1]))
        with md.no_grad():
            y = layer(h)
        yn = y.numpy()
        variances.append(float(yn.var()))
        dead.append(float((yn.max(axis=0) <= 0).mean()))
        h = y.relu()
    return variances, dead


plain = {bias: plain_mlp_at_init(bias) for bias in (False, True)}
layer20 = min(20, depth)
for bias, (variances, dead) in plain.items():
    print(f"plain MLP {'with' if bias else 'without'} biases: dead units at layer {layer20}: "
          f"{100 * dead[layer20 - 1]:.1f}%" + (f", at layer {depth}: {100 * dead[-1]:.1f}%" if depth > layer20 else "")
          + f"; variance at layer 1 {variances[0]:.3g}, at layer {depth} {variances[-1]:.3g}")
results["plain_mlp"] = {("with_bias" if b else "no_bias"): {"variance": v, "dead_fraction": d}
                        for b, (v, d) in plain.items()}
at20 = 100 * plain[False][1][layer20 - 1]
say(f"The slides: about 40% dead units at 20 layers (their simulation); ours without biases at layer {layer20}: "
    f"{at20:.1f}%. " + verdict(
        "About the same." if abs(at20 - 40) < 10 else
        "Different: the slides do not give their simulation's inputs or width; ours are real Fashion-MNIST "
        f"images at width {width}, whose ReLU outputs have a mean c_k that sets how negative E[y_i] gets.",
        [], s.quick))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for (bias, (variances, dead)), marker in zip(plain.items(), ("o", "s")):
    label = "with biases" if bias else "no biases (the slides' b = 0)"
    axes[0].semilogy(range(1, depth + 1), variances, marker + "-", ms=3, label=label)
    axes[1].plot(range(1, depth + 1), 100 * np.array(dead), marker + "-", ms=3, label=label)
axes[0].set(xlabel="layer", ylabel="Var(pre-activation)", title="Kaiming init keeps the variance")
plain_log_ticks(axes[0].yaxis)
axes[1].axhline(40, color="gray", ls=":", label="the slides: ~40% at 20 layers")
axes[1].set(xlabel="layer", ylabel="dead units (%)", title=f"Units never active on {len(x_probe)} images")
for ax in axes:
    integer_ticks(ax.xaxis)
    ax.legend(fontsize=10)
plain_mlp_png = show_figure(fig, f"{s.out}/plain_mlp.png")


# %% [markdown]
# ## 2. Residual blocks: what eq. 2 and eq. 9 predict for our block
#
# Each branch is $F = \text{Linear} \to \text{ReLU} \to \text{Linear}$, both with
# Kaiming weights $\mathcal N(0, 2/d)$ and zero biases; the stem gives
# $x_0 = \text{ReLU}(\text{stem}(x))$. Work with second moments $q = \mathbb E[x^2]$
# (over images and units). A Linear layer with zero-mean weights of variance $2/d$
# gives $\mathbb E[(Wx)^2] = 2q$; a ReLU of a symmetric input keeps half of it. So
#
# $$\mathbb E[F(x)^2] = 2 \cdot \tfrac12 \cdot 2\, q = 2q ,$$
#
# where eq. 2 assumes $\mathrm{Var}\,F(x) = \mathrm{Var}\,x$: Kaiming's factor 2 makes
# up for a ReLU that *follows* a layer, and the branch's second Linear has none.
# Our branch has $\mathrm{Var}\,F \approx 2\,\mathbb E[x^2]$. It is uncorrelated with
# $x$ (random weights), so second moments add:
#
# - plain sum: $q_\ell = q_{\ell-1} + 2q_{\ell-1} = 3\,q_{\ell-1}$, so $q_\ell = 3^\ell q_0$
#   (eq. 2 would give $2^\ell$);
# - RescaleNet: $q_k = \alpha_k^2 q_{k-1} + \beta_k^2 \cdot 2 q_{k-1} = (1 + \beta_k^2)\, q_{k-1}
#   = \frac{k+c+1}{k+c}\, q_{k-1}$, which telescopes to $q_k = q_0\,\frac{k+c+1}{c+1}$.
#   Eq. 9 ($c = L$) keeps $q$ flat only when $\mathrm{Var}\,F = \mathrm{Var}\,x$
#   (then $\alpha_k^2 + \beta_k^2 = 1$ is all it needs); with our $F$ it grows to
#   $\frac{2L+1}{L+1} \approx 2$ at the last block;
# - BN in $F$: the branch ends in BN, so $\mathbb E[F^2] = 1$ whatever $x$ is:
#   $q_\ell = q_0 + \ell$, linear growth.
#
# The plot shows variances, $\mathrm{Var} = q - m^2$. Since $x_0 \ge 0$ its mean $m_0$
# is not zero (for a symmetric pre-activation $m_0^2 = q_0/\pi$). $F$ has mean zero,
# so only the skip path carries the mean: $m_\ell = m_0$ in the plain sum and with BN,
# $m_k = m_0 \prod_{i \le k} \alpha_i = m_0 \sqrt{c/(k+c)}$ in RescaleNet. Hence
#
# $$\frac{\mathrm{Var}(x_\ell)}{\mathrm{Var}(x_0)} = \frac{q_\ell - m_\ell^2}{q_0 - m_0^2},$$
#
# evaluated below with $q_0$ and $m_0$ measured on $x_0$.

# %%
class ResidualMLP(md.nn.Module):
    """stem → L blocks x_k = α_k·x_{k−1} + β_k·F_k(x_{k−1}) → head, with
    F_k = Linear → [BN] → ReLU → Linear → [BN] (Kaiming weights, zero biases).

    kind "plain": α = β = 1 (eq. 1); "bn": the same with BN in F; "rescale":
    α_k = √((k−1+c)/(k+c)), β_k = 1/√(k+c) (eq. 9, c = L unless given);
    with ``multipliers``, β_k = m_k/√L with a learnable m_k starting at 1 (eq. 10).
    ``forward(x, trace)`` appends every block's output x_k to the list ``trace``."""

    def __init__(self, depth, width, kind, c=None, multipliers=False):
        super().__init__()
        self.kind, self.depth = kind, depth
        self.stem, self.head = md.nn.Linear(784, width), md.nn.Linear(width, 10)
        layers = []
        for _ in range(depth):
            a, b = md.nn.Linear(width, width), md.nn.Linear(width, width)
            for lin in (a, b):
                md.nn.init.kaiming_normal_(lin.weight)
                md.nn.init.zeros_(lin.bias)
            norm = (lambda: md.nn.BatchNorm1d(width)) if kind == "bn" else md.nn.Identity
            layers.append(md.nn.Sequential(a, norm(), md.nn.ReLU(), b, norm()))
        self.blocks = md.nn.Sequential(*layers)
        c = depth if c is None else c
        self.alpha = [math.sqrt((k - 1 + c) / (k + c)) if kind == "rescale" else 1.0 for k in range(1, depth + 1)]
        self.beta = [1 / math.sqrt(k + c) if kind == "rescale" else 1.0 for k in range(1, depth + 1)]
        self.m = md.nn.Parameter(np.ones(depth, np.float32)) if multipliers else None

    def forward(self, x, trace=None):
        h = self.stem(x.reshape(x.shape[0], -1)).relu()
        if trace is not None:
            trace.append(h)
        for k, block in enumerate(self.blocks.children()):
            branch = block(h)
            if self.m is not None:
                branch = branch * (self.m[k] * (1 / math.sqrt(self.depth)))
            else:
                branch = branch * self.beta[k]
            h = h * self.alpha[k] + branch
            if trace is not None:
                trace.append(h)
        return self.head(h)


def variance_theory(kind, blocks, q0, m0, c):
    """Var(x_ℓ)/Var(x_0) for ℓ = 1 … blocks, from the second-moment recursions above."""
    ell = np.arange(1, blocks + 1, dtype=np.float64)
    if kind == "plain":
        q, m2 = 3.0 ** ell * q0, np.full_like(ell, m0 ** 2)
    elif kind == "bn":
        q, m2 = q0 + ell, np.full_like(ell, m0 ** 2)
    else:
        q, m2 = q0 * (ell + c + 1) / (c + 1), m0 ** 2 * c / (ell + c)
    return ((q - m2) / (q0 - m0 ** 2)).tolist()


Lmax = max(res_depths)
variance, variance_predicted = {}, {}
for kind, label in (("plain", "x + F(x)"), ("bn", "x + F(x), BN in F"), ("rescale", "RescaleNet, c = L")):
    md.manual_seed(s.seed)
    model = ResidualMLP(Lmax, width, kind)
    trace = []
    with md.no_grad():
        model(x_probe, trace)
    xs = [h.numpy().astype(np.float64) for h in trace]
    q0, m0 = float((xs[0] ** 2).mean()), float(xs[0].mean())
    variance[label] = [float(x.var()) / xs[0].var() for x in xs[1:]]
    variance_predicted[label] = variance_theory(kind, Lmax, q0, m0, Lmax)
print(f"x_0 = ReLU(stem(x)): E[x_0²] = {q0:.4g}, mean² = {m0 ** 2:.4g} (E[x_0²]/π = {q0 / math.pi:.4g})")
show_table(["block ℓ"] + [f"{label}: {w}" for label in variance for w in ("measured", "theory")],
           [[ell] + [f"{v[ell - 1]:.3g}" for label in variance
                     for v in (variance[label], variance_predicted[label])] for ell in res_depths],
           title=f"Var(x_ℓ) / Var(x_0) at init, {Lmax} blocks (RescaleNet: c = L = {Lmax})")
gap = {label: variance[label][-1] / variance_predicted[label][-1] for label in variance}
say(f"Measured over theory at block {Lmax}: " + ", ".join(f"{label} {g:.3g}×" for label, g in gap.items()) +
    f"; per block, {', '.join(f'{label} {g ** (1 / Lmax):.4f}×' for label, g in gap.items())}. The recursions "
    f"hold on average over random weights; one draw of {width}-unit layers deviates a little in each block, and "
    f"that compounds over {Lmax} blocks.")
results["residual_variance_ratio"] = variance
results["residual_variance_ratio_theory"] = variance_predicted

# %% [markdown]
# ## 3. The gradient norm at initialization against depth: eq. 8 for our block
#
# Eq. 8 writes $\lVert\nabla \ell\rVert^2 = \sum_k \beta_k^2 \lVert \frac{\partial \ell}{\partial x_k}
# \frac{\partial F_k}{\partial \Theta_k}\rVert^2 \approx \sum_k \frac{1}{k+c}
# \lVert\frac{\partial \ell}{\partial x_k}\rVert^2 \lVert\frac{\partial F_k}{\partial \Theta_k}\rVert^2$
# and treats the last two factors as constants: $O(\sum_k \frac{1}{k+c})$.
# In our block neither is constant:
#
# - **forward**: a Linear's weight gradient is its input times the gradient at its
#   output, and both Linears of block $k$ see inputs of second moment $\propto q_{k-1}$,
#   so $\lVert\partial F_k/\partial\Theta_k\rVert^2 \propto q_{k-1} = q_0 \frac{k+c}{c+1}$;
# - **backward**: the gradient crosses each block the way the signal does:
#   $p_{k-1} = (\alpha_k^2 + 2\beta_k^2)\, p_k$ for $p_k = \lVert\partial \ell/\partial x_k\rVert^2$,
#   so $p_k = p_L \frac{L+c+1}{k+c+1}$.
#
# Together, $\lVert\nabla_{\Theta_k}\ell\rVert^2 \propto \frac{1}{k+c}\cdot\frac{L+c+1}{k+c+1}\cdot\frac{k+c}{c+1}$, and
#
# $$\lVert\nabla \ell\rVert^2 \;\propto\; \frac{L+c+1}{c+1} \sum_{k=1}^{L} \frac{1}{k+c+1}
#   \qquad \text{(eq. 8 for our block)},$$
#
# if $p_L$, the gradient that reaches the last block from the head, does not depend on $L$.
# For $c = 1$ this grows like $\tfrac{L}{2}\ln L$, far faster than the slide's $\ln L$;
# for $c = L$ it tends to $2\ln 2$: bounded, as the slide says. The plain sum
# ($\alpha = \beta = 1$, $p_k = 3^{L-k} p_L$, $q_{k-1} = 3^{k-1} q_0$) gives $L \cdot 3^{L-1}$.
# Every theory line is scaled to the measurement at the smallest depth.

# %%
def gradient_theory(kind, L, c, ours=True):
    """‖∇ blocks‖² up to a constant: ours (above) or the slide's Σ 1/(k+c)."""
    if kind == "plain":
        return L * 3.0 ** (L - 1)
    k = np.arange(1, L + 1)
    return float((L + c + 1) / (c + 1) * np.sum(1 / (k + c + 1))) if ours else float(np.sum(1 / (k + c)))


def gradient_at_init(L, kind, c):
    """‖∇‖² of the blocks' parameters (all, and per block), p_k = ‖∂ℓ/∂x_k‖² for k = 0 … L, and the
    images' coherence in the first and last block."""
    md.manual_seed(s.seed)
    model = ResidualMLP(L, width, kind, c=c)
    trace = []
    loss = F.cross_entropy(model(x_probe, trace), y_probe)
    for h in trace:
        h.retain_grad()
    loss.backward()
    per_block = [0.0] * L
    for name, p in model.named_parameters():
        if name.startswith("blocks."):
            per_block[int(name.split(".")[1])] += float((md.backend.as_numpy(p.grad).astype(np.float64) ** 2).sum())
    deltas = [md.backend.as_numpy(h.grad).astype(np.float64) for h in trace]     # row n: ∂ℓ/∂x_k of image n
    p_k = [float((d ** 2).sum()) for d in deltas]
    coherence = {}     # ‖Σ_n δ_n h_nᵀ‖² / Σ_n ‖δ_n‖²‖h_n‖² for the block's second Linear (1: images independent)
    with md.no_grad():
        for k in (1, L):   # the first and the last block
            block, x_in, delta = model.blocks[k - 1], trace[k - 1], deltas[k]
            h = md.backend.as_numpy(block[2](block[1](block[0](x_in))).data).astype(np.float64)
            coherence[k] = float(((delta.T @ h) ** 2).sum()) / float(((delta ** 2).sum(1) * (h ** 2).sum(1)).sum())
    return {"total": sum(per_block), "per_block": per_block, "p": p_k, "beta": model.beta, "coherence": coherence}


variants = {"plain": ("plain", None), "rescale c=1": ("rescale", 1), "rescale c=L": ("rescale", "L")}
y_probe = md.Tensor(train.get_batch(np.arange(min(probe_n, len(train))))[1])
measured = {key: {L: gradient_at_init(L, kind, L if c == "L" else c) for L in res_depths}
            for key, (kind, c) in variants.items()}
gradnorm, theory, slide_theory = {}, {}, {}
for key, (kind, c) in variants.items():
    gradnorm[key] = [measured[key][L]["total"] for L in res_depths]
    ours = [gradient_theory(kind, L, L if c == "L" else c) for L in res_depths]
    slide = [gradient_theory(kind, L, L if c == "L" else c, ours=False) for L in res_depths]
    theory[key] = [t * gradnorm[key][0] / ours[0] for t in ours]
    if kind == "rescale":
        slide_theory[key] = [t * gradnorm[key][0] / slide[0] for t in slide]
show_table(["blocks L"] + [f"{key}: {w}" for key in variants for w in
                           (("measured", "ours", "slide Σ1/(k+c)") if key in slide_theory else ("measured", "ours"))],
           [[L] + [f"{v[i]:.3g}" for key in variants for v in
                   ((gradnorm[key], theory[key], slide_theory[key]) if key in slide_theory else
                    (gradnorm[key], theory[key]))] for i, L in enumerate(res_depths)],
           title="‖∇ blocks‖² at init: measured, our eq. 8 and the slide's, both scaled to the measurement at "
                 f"L = {res_depths[0]}")
results["gradient_norm_squared"] = {"depths": res_depths, **gradnorm}
results["gradient_norm_squared_theory"] = {"depths": res_depths, "ours": theory, "slide": slide_theory}

# %% [markdown]
# Where the measurement still leaves our eq. 8, the table below says which of its
# assumptions moved, at the deepest $L$ (theory in brackets): the gradient reaching the
# last block, $p_L$, assumed independent of $L$; its growth back to block 1, $p_1/p_L$;
# and the per-block factor $r_k = \lVert\nabla_{\Theta_k}\ell\rVert^2 / (\beta_k^2 p_k)$,
# whose growth $r_L/r_1$ should follow $q_{L-1}/q_0$. That last step hides one more
# approximation, the slide's own "≈": the weight gradient of the batch's mean loss is
# a sum over images, $\sum_n \delta_n h_n^\top$, and
# $\lVert\sum_n \delta_n h_n^\top\rVert^2 = \sum_n \lVert\delta_n\rVert^2 \lVert h_n\rVert^2$
# only when the images' terms are uncorrelated. Their **coherence**
# $\lVert\sum_n \delta_n h_n^\top\rVert^2 / \sum_n \lVert\delta_n\rVert^2 \lVert h_n\rVert^2$
# (for the block's second Linear) is 1 for uncorrelated images and up to $N$ when they
# all point the same way; if it changes from block to block, $r_k$ does too.
#
# Our blocks follow the slide's eq. 9 exactly ($\alpha_k$, $\beta_k$, $c$). The authors'
# published code (github.com/hukkai/rescaling, `models/rescale.py`) does not: it scales
# every branch by the same $1/\sqrt L$ times a learnable scalar (eq. 10's form), gives
# $\alpha_k$ the $c = L - 1$ of its block index, multiplies each conv's Kaiming
# initialization by $((k + L - 1)/L)^{-1/6}$, and ends each block with a ReLU. The theory
# above is for the slide's equations, which is what this lesson runs.

# %%
rows, factors = [], {}
for key, (kind, c) in variants.items():
    m, cL = measured[key][Lmax], Lmax if c == "L" else c
    r = [g / (b ** 2 * p) for g, b, p in zip(m["per_block"], m["beta"], m["p"][1:])]
    factors[key] = {
        "p_L(L=%d) / p_L(L=%d)" % (Lmax, res_depths[0]): (m["p"][-1] / measured[key][res_depths[0]]["p"][-1], 1.0),
        "p_1 / p_L": (m["p"][1] / m["p"][-1], 3.0 ** (Lmax - 1) if kind == "plain" else (Lmax + cL + 1) / (cL + 2)),
        "r_L / r_1": (r[-1] / r[0], 3.0 ** (Lmax - 1) if kind == "plain" else (Lmax + cL) / (cL + 1)),
        "coherence at block 1": (m["coherence"][1], 1.0), "coherence at block L": (m["coherence"][Lmax], 1.0)}
    rows.append([key] + [f"{v:.3g} ({th:.3g})" for v, th in factors[key].values()] +
                [f"{gradnorm[key][-1] / theory[key][-1]:.3g}"])
show_table(["variant"] + [f"{name}, measured (theory)" for name in factors["plain"]] + ["‖∇‖² measured / ours"],
           rows, title=f"The factors of eq. 8 at L = {Lmax}")
results["gradient_factors"] = {key: {name: {"measured": v, "theory": th} for name, (v, th) in f.items()}
                               for key, f in factors.items()}
off = {key: gradnorm[key][-1] / theory[key][-1] for key in variants}
say(f"Measured ‖∇‖² at L = {Lmax} over our eq. 8: " + ", ".join(f"{key} {v:.3g}×" for key, v in off.items()) +
    f"; over the slide's Σ1/(k+c): c=1 {gradnorm['rescale c=1'][-1] / slide_theory['rescale c=1'][-1]:.3g}×, "
    f"c=L {gradnorm['rescale c=L'][-1] / slide_theory['rescale c=L'][-1]:.3g}×. " + " ".join(
        f"{key}: r_L/r_1 is {factors[key]['r_L / r_1'][0] / factors[key]['r_L / r_1'][1]:.3g}× its theory, and the "
        f"images' coherence grows {factors[key]['coherence at block L'][0] / factors[key]['coherence at block 1'][0]:.3g}× "
        f"from block 1 ({factors[key]['coherence at block 1'][0]:.3g}) to block L "
        f"({factors[key]['coherence at block L'][0]:.3g}): that much of it is the images' correlated terms, which "
        "eq. 8's ≈ drops."
        for key in variants if not 1 / 1.5 < off[key] < 1.5))

fig, axes = plt.subplots(1, 2, figsize=(12, 5.8))
ell = range(1, Lmax + 1)
for (label, ratios), color in zip(variance.items(), ("tab:blue", "tab:green", "tab:red")):
    axes[0].semilogy(ell, ratios, color=color, label=f"{label}, measured")
    axes[0].semilogy(ell, variance_predicted[label], color=color, ls="--", lw=1, label=f"{label}, theory")
axes[0].semilogy(ell, 2.0 ** np.arange(1, Lmax + 1), "k:", lw=1, label="2^ℓ (eq. 2: Var F = Var x)")
axes[0].set(xlabel="block ℓ", ylabel="Var(x_ℓ) / Var(x_0)", title="Variance through residual blocks at init")
integer_ticks(axes[0].xaxis)
for (key, values), color in zip(gradnorm.items(), ("tab:blue", "tab:orange", "tab:red")):
    axes[1].loglog(res_depths, values, "o-", color=color, label=f"{key}, measured")
    axes[1].loglog(res_depths, theory[key], "--", color=color, lw=1, label=f"{key}, our eq. 8")
    if key in slide_theory:
        axes[1].loglog(res_depths, slide_theory[key], ":", color=color, lw=1.5, label=f"{key}, Σ 1/(k+c)")
axes[1].set(xlabel="number of blocks L", ylabel="‖∇ blocks‖² at init",
            title="Gradient norm vs depth (theory scaled at the smallest L)")
plain_log_ticks(axes[1].xaxis)
for ax in axes:
    legend_below(ax, fontsize=10)
residual_init_png = show_figure(fig, f"{s.out}/residual_init.png")

# %% [markdown]
# ## 4. Training: the largest stable learning rate of each kind
#
# A rate is **stable** for a run when its loss stays finite and ends (mean of the
# last 10 steps) below where it began; it counts as stable for a kind only when it
# is stable for every random seed. A single run at the edge of stability can go
# either way with the rounding of its floats.

# %%
kinds = {"no normalization": ("plain", False), "BN": ("bn", False),
         "RescaleNet" + (" + m_k/√L" if s.multipliers else ""): ("rescale", s.multipliers)}
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), blocks=blocks, lr_grid=lr_grid,
                                     steps=stability_steps, stability_seeds=s.stability_seeds,
                                     multipliers=s.multipliers, seed=s.seed, quick=s.quick), fresh=s.fresh)
stability_set = md.data.ArrayDataset(train.images[:stability_steps * BATCH], train.targets[:stability_steps * BATCH],
                                     train.transform)
seeds = [s.seed + k for k in range(s.stability_seeds)]
def probe_rate(name, lr, seed):
    """A short run at this rate: stable when the loss stays finite and ends below where it began."""
    md.manual_seed(seed)
    model = ResidualMLP(blocks, s.train_width, kinds[name][0], multipliers=kinds[name][1])
    losses = train_classifier(model, stability_set, 1, BATCH, lr, seed, desc=f"{name} at {lr}, seed {seed}")
    stable = bool(np.isfinite(losses).all() and np.mean(losses[-10:]) < losses[0])
    return {"stable": stable, "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}


run_all({f"stability/{name}/{lr}/{seed}": (probe_rate, (name, lr, seed)) for name in kinds for lr in lr_grid
         for seed in seeds}, store, s.workers, s.scheduler, desc="learning-rate probes")
stable_count = {name: {lr: sum(store[f"stability/{name}/{lr}/{seed}"]["stable"] for seed in seeds) for lr in lr_grid}
                for name in kinds}
largest = {name: max([lr for lr in lr_grid if stable_count[name][lr] == len(seeds)], default=None) for name in kinds}
show_table(["kind"] + [f"lr {lr}" for lr in lr_grid] + ["largest stable"],
           [[name] + [f"{stable_count[name][lr]}/{len(seeds)}" for lr in lr_grid] + [largest[name] or "none"]
            for name in kinds], title=f"Runs stable at each rate, of {len(seeds)} seeds ({stability_steps} steps each)")
bn_losses = {lr: np.mean([store[f"stability/BN/{lr}/{seed}"]["last_loss"] for seed in seeds])
             for lr in lr_grid if stable_count["BN"][lr] == len(seeds)}
lr_bn = min(bn_losses, key=bn_losses.get) if bn_losses else min(lr_grid)  # the rate BN does best with in the probe
print(f"BN's best rate in the probe (lowest mean final loss over the seeds): {lr_bn}; every kind trains at it below")

# %% [markdown]
# Training each kind at BN's rate (seed as set, one run each)

# %%
def train_kind(name):
    md.manual_seed(s.seed)
    model = ResidualMLP(blocks, s.train_width, kinds[name][0], multipliers=kinds[name][1])
    losses = train_classifier(model, train, 1 if s.quick else EPOCHS, BATCH, lr_bn, s.seed, desc=name)
    return {"losses": losses, "test_acc": evaluate(model, test)[1] if np.isfinite(losses[-1]) else None}


run_all({f"train/{name}": (train_kind, (name,)) for name in kinds}, store, s.workers, s.scheduler,
        desc="training")

fig, ax = plt.subplots(figsize=(10, 5.6))
finite = [np.array(store[f"train/{name}"]["losses"]) for name in kinds]
top = 3 * max([losses[0] for losses in finite] +
              [losses.max() for losses, name in zip(finite, kinds) if store[f"train/{name}"]["test_acc"] is not None])
for name, ls, losses in zip(kinds, ("-", "--", "-."), finite):
    acc = store[f"train/{name}"]["test_acc"]
    if acc is None:        # diverged: its losses up to the divergence, and a mark where it left the plot
        shown = np.minimum(losses[np.isfinite(losses)], top)
        line, = ax.semilogy(np.arange(len(shown)), shown, ls=ls, marker=".",
                            label=f"{name}: diverged at step {len(losses) - 1} (×; per step)")
        ax.plot(len(losses) - 1, top, "x", ms=10, color=line.get_color(), clip_on=False)
        continue
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) > 10 else losses
    ax.semilogy(np.arange(len(smooth)) + len(losses) - len(smooth), smooth, ls=ls, label=f"{name}: test {acc:.2f}%")
ax.set_ylim(top=top)
ax.set(xlabel="step", ylabel="training loss (mean of the last 10 steps)",
       title=f"{blocks}-block residual MLP at lr {lr_bn}")
integer_ticks(ax.xaxis)
plain_log_ticks(ax.yaxis)
legend_below(ax, fontsize=10)
training_png = show_figure(fig, f"{s.out}/training.png")

# %% [markdown]
# ## 5. The table beside the slides'

# %%
def accuracy(name):
    acc = store[f"train/{name}"]["test_acc"]
    return "diverged" if acc is None else f"{acc:.2f}%"


table = show_table([f"{blocks}-block residual MLP", f"largest stable lr (of {lr_grid}, {len(seeds)} seeds)",
                    f"test accuracy at lr {lr_bn}"],
                   [[name, largest[name] or "none of them", accuracy(name)] for name in kinds])
slides_table = show_table(["the course's slides, deck 000: ImageNet ResNet-50", "top-1 (%)"],
                          [[group, ", ".join(f"{k} {v}" for k, v in t.items())] for group, t in SLIDE_TABLES.items()])
caveat = ("What a small model can show of the slides' tables: the variance and stability argument (sections "
          "2-4 and the stable rates), and that RescaleNet trains without normalization. What it cannot: "
          "ImageNet accuracy differences of a point or two between normalizers, which need a ResNet-50 "
          "and ~90 epochs.")
say(caveat)
results["stable_count"] = {name: {str(lr): n for lr, n in counts.items()} for name, counts in stable_count.items()}
results["stability_seeds"], results["largest_stable_lr"], results["lr_used"] = seeds, largest, lr_bn
results["test_acc"] = {name: store[f"train/{name}"]["test_acc"] for name in kinds}
write_json(f"{s.out}/results.json", results)
write_text(f"{s.out}/summary.md", summary_header(s, f"Signal propagation and RescaleNet ({dataset})") +
           f"Plain {depth}-layer ReLU MLP at init: dead units at layer {layer20}: "
           f"{100 * plain[False][1][layer20 - 1]:.1f}% without biases, "
           f"{100 * plain[True][1][layer20 - 1]:.1f}% with (the slides: about 40%).\n\n"
           f"Var(x_L)/Var(x_0) at L = {Lmax}, measured (theory): " +
           ", ".join(f"{k} {v[-1]:.3g} ({variance_predicted[k][-1]:.3g})" for k, v in variance.items()) +
           f".\n\n‖∇ blocks‖² from L = {res_depths[0]} to {Lmax}, measured growth (our eq. 8; the slide's Σ1/(k+c)): " +
           ", ".join(f"{k} {gradnorm[k][-1] / gradnorm[k][0]:.3g}× ({theory[k][-1] / theory[k][0]:.3g}×"
                     + (f"; {slide_theory[k][-1] / slide_theory[k][0]:.3g}×)" if k in slide_theory else ")")
                     for k in variants) +
           f".\n\n{table}\n\n{slides_table}\n\n{caveat}\n\n"
           f"![plain]({plain_mlp_png}) ![residual]({residual_init_png}) ![training]({training_png})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/deep_signal.md, which the README quotes
