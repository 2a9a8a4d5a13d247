# ---
# jupyter:
#   jupytext:
#     formats: py:percent
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
# Seed `000` asks whether normalization is indispensable, and answers with
# RescaleNet. Its argument, in three steps we measure here:
#
# 1. **Dead ReLUs.** In a plain deep ReLU MLP with Kaiming weights $w_{ij} \sim \mathcal N(0, 2/d)$
#    and $b = 0$, if the inputs $x_j$ have mean $c_k \ge 0$ then
#    $\mathbb E[y_i] = c_k \sum_j w_{ij}$, which is negative for about half the units
#    and strongly so for some: the seed reports about 40 % of units never active at 20 layers.
# 2. **Variance explosion.** A residual block $x_\ell = x_{\ell-1} + F_\ell(x_{\ell-1})$ with
#    $\mathrm{Var}(F_\ell(x)) = \mathrm{Var}(x)$ doubles the variance (eq. 2):
#    $\mathrm{Var}(x_\ell) \approx 2\,\mathrm{Var}(x_{\ell-1})$. RescaleNet keeps it flat (eq. 9):
#
#    $$x_k = \alpha_k x_{k-1} + \beta_k F_k(x_{k-1}), \qquad
#      \alpha_k = \sqrt{\frac{k-1+c}{k+c}}, \quad \beta_k = \frac{1}{\sqrt{k+c}}, \quad \alpha_k^2 + \beta_k^2 = 1 .$$
#
#    The gradient norm then grows like $\sum_k 1/(k+c)$ with depth (eq. 8), bounded for $c = L$.
# 3. **Training** a deep residual MLP without normalization, with BN, and with RescaleNet:
#    the largest learning rate each survives.
#
# The seed's ImageNet ResNet-50 tables are shown beside ours at the end; a
# 16-block MLP on Fashion-MNIST can show the variance and the stability, not
# those accuracies.

# %%
"""Signal propagation: dead ReLUs, residual variance, RescaleNet (seed 000).

    python -m lessons.deep_signal            # about 42 s on 2 cores
    python -m lessons.deep_signal --quick    # seconds, synthetic images
"""
import math

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
import minidl.functional as F
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.settings import settings
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, train_classifier

TEST, EPOCHS, BATCH = 2000, 2, 64
SLIDE_TABLES = {   # seed 000: ImageNet ResNet-50 top-1 (%)
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
    stability_steps=150, multipliers=False, seed=0),
    quick=dict(width=64, depth=12, probe=200, res_depths=[1, 4, 8], blocks=4, train_width=64, train_size=400,
               lr_grid=[0.01, 0.1, 1.0], stability_steps=10), doc=__doc__,
    help=dict(multipliers="RescaleNet with learnable scalars m_k/√L on each branch (eq. 10)",
              stability_steps="steps per learning-rate probe"), runs=True)
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
        if with_bias:      # PyTorch's default bias, U(±1/√fan_in); b = 0 is the seed's setting
            md.nn.init.uniform_(layer.bias, -1 / math.sqrt(h.shape[1]), 1 / math.sqrt(h.shape[1]))
        with md.no_grad():
            y = layer(h)
        yn = y.numpy()
        variances.append(float(yn.var()))
        dead.append(float((yn.max(axis=0) <= 0).mean()))
        h = y.relu()
    return variances, dead


plain = {bias: plain_mlp_at_init(bias) for bias in (False, True)}
for bias, (variances, dead) in plain.items():
    at20 = dead[min(19, depth - 1)]
    print(f"plain MLP {'with' if bias else 'without'} biases: dead units at layer {min(20, depth)}: "
          f"{100 * at20:.1f}%, at layer {depth}: {100 * dead[-1]:.1f}%; variance at layer 1 "
          f"{variances[0]:.3g}, at layer {depth} {variances[-1]:.3g}")
results["plain_mlp"] = {("with_bias" if b else "no_bias"): {"variance": v, "dead_fraction": d}
                        for b, (v, d) in plain.items()}
at20 = 100 * plain[False][1][min(19, depth - 1)]
say(f"The seed: about 40% dead units at 20 layers (its simulation); ours without biases: {at20:.1f}%. "
      + ("About the same." if abs(at20 - 40) < 10 else
         "Different: the seed does not give its simulation's inputs or width; ours are real Fashion-MNIST "
         f"images at width {width}, whose ReLU outputs have a mean c_k that sets how negative E[y_i] gets."))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for bias, (variances, dead) in plain.items():
    label = "with biases" if bias else "no biases (the seed's b = 0)"
    axes[0].semilogy(range(1, depth + 1), variances, "o-", ms=3, label=label)
    axes[1].plot(range(1, depth + 1), 100 * np.array(dead), "o-", ms=3, label=label)
axes[0].set(xlabel="layer", ylabel="Var(pre-activation)", title="Kaiming init keeps the variance")
axes[1].axhline(40, color="gray", ls=":", label="the seed: ~40% at 20 layers")
axes[1].set(xlabel="layer", ylabel="dead units (%)", title=f"Units never active on {len(x_probe)} images")
for ax in axes:
    ax.legend(fontsize=7)
show_figure(fig, f"{s.out}/plain_mlp.png")


# %% [markdown]
# ## 2. Residual blocks: plain sum, BN in the branch, RescaleNet
#
# Each branch is $F = \text{Linear} \to \text{ReLU} \to \text{Linear}$, both with
# Kaiming weights. Eq. 2 assumes $\mathrm{Var}(F(x)) = \mathrm{Var}(x)$ and so a
# doubling per block. But Kaiming's factor 2 is meant to make up for a ReLU that
# *follows* the layer, and the branch's second Linear has none: it doubles the
# second moment the ReLU halved, so $\mathrm{Var}(F(x)) \approx 2\,\mathrm{Var}(x)$
# and the plain residual sum grows about **3× per block**
# ($3^{50} \approx 7\times10^{23}$, not $2^{50} \approx 10^{15}$). The plot shows
# both reference lines. The point stands either way: the variance grows
# exponentially with depth unless something rescales it.

# %%
class ResidualMLP(md.nn.Module):
    """stem → L blocks x_k = α_k·x_{k−1} + β_k·F_k(x_{k−1}) → head, with
    F_k = Linear → [BN] → ReLU → Linear → [BN] (Kaiming weights, zero biases).

    kind "plain": α = β = 1 (eq. 1); "bn": the same with BN in F; "rescale":
    α_k = √((k−1+c)/(k+c)), β_k = 1/√(k+c) (eq. 9, c = L unless given);
    with ``multipliers``, β_k = m_k/√L with a learnable m_k starting at 1 (eq. 10)."""

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
        for k, block in enumerate(self.blocks.children()):
            branch = block(h)
            if self.m is not None:
                branch = branch * (self.m[k] * (1 / math.sqrt(self.depth)))
            else:
                branch = branch * self.beta[k]
            h = h * self.alpha[k] + branch
            if trace is not None:
                trace.append(float(h.numpy().var()))
        return self.head(h)


variance = {}
for kind, label in (("plain", "x + F(x)"), ("bn", "x + F(x), BN in F"), ("rescale", "RescaleNet, c = L")):
    md.manual_seed(s.seed)
    model = ResidualMLP(max(res_depths), width, kind)
    trace = []
    with md.no_grad():
        model(x_probe, trace)
    x0 = float(model.stem(x_probe).relu().numpy().var())
    variance[label] = [v / x0 for v in trace]
    print(f"{label:<20} Var(x_L)/Var(x_0) at L = {max(res_depths)}: {variance[label][-1]:.3g}"
          + ("   (2^L = %.3g, 3^L = %.3g)" % (2.0 ** max(res_depths), 3.0 ** max(res_depths)) if kind == "plain" else ""))
results["residual_variance_ratio"] = variance

# %% [markdown]
# The gradient norm at initialization against depth (eq. 8: O(Σ 1/(k+c)))

# %%
gradnorm = {"plain": [], "rescale c=1": [], "rescale c=L": []}
y_probe = md.Tensor(train.get_batch(np.arange(min(probe_n, len(train))))[1])
for L in res_depths:
    for key, kind, c in (("plain", "plain", None), ("rescale c=1", "rescale", 1), ("rescale c=L", "rescale", L)):
        md.manual_seed(s.seed)
        model = ResidualMLP(L, width, kind, c=c)
        F.cross_entropy(model(x_probe), y_probe).backward()
        g2 = sum(float((md.backend.as_numpy(p.grad).astype(np.float64) ** 2).sum())
                 for name, p in model.named_parameters() if name.startswith("blocks"))
        gradnorm[key].append(g2)
results["gradient_norm_squared"] = {"depths": res_depths, **gradnorm}
for key, values in gradnorm.items():
    print(f"‖∇‖² of the blocks' weights at init, {key:<12}: " + ", ".join(
        f"L={L}: {v:.3g}" for L, v in zip(res_depths, values)))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for label, ratios in variance.items():
    axes[0].semilogy(range(1, len(ratios) + 1), ratios, label=label)
axes[0].semilogy(range(1, max(res_depths) + 1), 2.0 ** np.arange(1, max(res_depths) + 1), "k:", lw=1,
                 label="2^ℓ (eq. 2: Var F = Var x)")
axes[0].semilogy(range(1, max(res_depths) + 1), 3.0 ** np.arange(1, max(res_depths) + 1), "k--", lw=1,
                 label="3^ℓ (our F: Var F ≈ 2 Var x)")
axes[0].set(xlabel="block ℓ", ylabel="Var(x_ℓ) / Var(x_0)", title="Variance through residual blocks at init")
for key, values in gradnorm.items():
    axes[1].loglog(res_depths, values, "o-", label=key)
theory = [sum(1 / (k + L) for k in range(1, L + 1)) for L in res_depths]
axes[1].loglog(res_depths, np.array(theory) * gradnorm["rescale c=L"][0] / theory[0], "k:", lw=1,
               label="Σ 1/(k + L), scaled")
axes[1].set(xlabel="number of blocks L", ylabel="‖∇ blocks‖² at init", title="Gradient norm vs depth")
for ax in axes:
    ax.legend(fontsize=7)
show_figure(fig, f"{s.out}/residual_init.png")

# %% [markdown]
# ## 3. Training: the largest stable learning rate of each kind

# %%
kinds = {"no normalization": ("plain", False), "BN": ("bn", False),
         "RescaleNet" + (" + m_k/√L" if s.multipliers else ""): ("rescale", s.multipliers)}
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), blocks=blocks, lr_grid=lr_grid,
                                   steps=stability_steps, multipliers=s.multipliers, seed=s.seed,
                                   quick=s.quick), fresh=s.fresh)
stability_set = md.data.ArrayDataset(train.images[:stability_steps * BATCH], train.targets[:stability_steps * BATCH],
                                     train.transform)
def probe_rate(name, lr):
    """A short run at this rate: stable when the loss stays finite and ends below where it began."""
    md.manual_seed(s.seed)
    model = ResidualMLP(blocks, s.train_width, kinds[name][0], multipliers=kinds[name][1])
    losses = train_classifier(model, stability_set, 1, BATCH, lr, s.seed, desc=f"{name} at {lr}")
    stable = bool(np.isfinite(losses).all() and np.mean(losses[-10:]) < losses[0])
    return {"stable": stable, "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}


run_all({f"stability/{name}/{lr}": (probe_rate, (name, lr)) for name in kinds for lr in lr_grid},
        store, s.workers, s.scheduler, desc="learning-rate probes")
largest = {name: max([lr for lr in lr_grid if store[f"stability/{name}/{lr}"]["stable"]], default=None)
           for name in kinds}
bn_losses = {lr: store[f"stability/BN/{lr}"]["last_loss"] for lr in lr_grid if store[f"stability/BN/{lr}"]["stable"]}
lr_bn = min(bn_losses, key=bn_losses.get)     # the rate BN does best with in the short probe
for name in kinds:
    print(f"{name:<24} largest stable learning rate: {largest[name]} (of {lr_grid})")
print(f"BN's best rate in the probe: {lr_bn}; every kind trains at it below")

# %% [markdown]
# Training each kind at BN's rate

# %%
def train_kind(name):
    md.manual_seed(s.seed)
    model = ResidualMLP(blocks, s.train_width, kinds[name][0], multipliers=kinds[name][1])
    losses = train_classifier(model, train, 1 if s.quick else EPOCHS, BATCH, lr_bn, s.seed, desc=name)
    return {"losses": losses, "test_acc": evaluate(model, test)[1] if np.isfinite(losses[-1]) else None}


run_all({f"train/{name}": (train_kind, (name,)) for name in kinds}, store, s.workers, s.scheduler,
        desc="training")

fig, ax = plt.subplots(figsize=(6.5, 4))
for name in kinds:
    losses = np.array(store[f"train/{name}"]["losses"])
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) > 10 else losses
    acc = store[f"train/{name}"]["test_acc"]
    ax.semilogy(smooth, label=f"{name}: " + ("diverged" if acc is None else f"test {acc:.2f}%"))
ax.set(xlabel="step", ylabel="training loss (10-step mean)",
       title=f"{blocks}-block residual MLP at lr {lr_bn}")
ax.legend(fontsize=8)
show_figure(fig, f"{s.out}/training.png")

# %% [markdown]
# ## 4. The table beside the seed's

# %%
def accuracy(name):
    acc = store[f"train/{name}"]["test_acc"]
    return "diverged" if acc is None else f"{acc:.2f}%"


table = show_table([f"{blocks}-block residual MLP", f"largest stable lr (of {lr_grid})", f"test accuracy at lr {lr_bn}"],
                   [[name, largest[name] or "none of them", accuracy(name)] for name in kinds])
seed_table = show_table(["seed 000: ImageNet ResNet-50", "top-1 (%)"],
                        [[group, ", ".join(f"{k} {v}" for k, v in t.items())] for group, t in SLIDE_TABLES.items()])
caveat = ("What a small model can show of the seed's tables: the variance and stability argument (sections "
          "1-2 and the stable rates), and that RescaleNet trains without normalization. What it cannot: "
          "ImageNet accuracy differences of a point or two between normalizers, which need a ResNet-50 "
          "and ~90 epochs.")
say(caveat)
results["largest_stable_lr"], results["lr_used"] = largest, lr_bn
results["test_acc"] = {name: store[f"train/{name}"]["test_acc"] for name in kinds}
write_json(f"{s.out}/results.json", results)
write_text(f"{s.out}/summary.md", f"# Signal propagation and RescaleNet ({dataset})\n\n"
           f"Plain {depth}-layer ReLU MLP at init: dead units at layer {min(20, depth)}: "
           f"{100 * plain[False][1][min(19, depth - 1)]:.1f}% without biases, "
           f"{100 * plain[True][1][min(19, depth - 1)]:.1f}% with (the seed: about 40%).\n\n"
           f"Var(x_L)/Var(x_0) at L = {max(res_depths)}: " +
           ", ".join(f"{k} {v[-1]:.3g}" for k, v in variance.items()) + f".\n\n{table}\n\n"
           f"{seed_table}\n\n{caveat}\n\n"
           "![plain](plain_mlp.png) ![residual](residual_init.png) ![training](training.png)\n")
print(f"plots, results.json and summary.md in {s.out}/")
