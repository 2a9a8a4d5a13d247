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
# # How much the initial weights matter, with and without BatchNorm
#
# The course's slides, deck 003, end on: *"Note that if BatchNorm is used,
# initial feature weight choice is less important."*
# Without BN, a layer's output variance is its input variance times
# $d \cdot \mathrm{std}^2$ (times ½ after a ReLU), so a std away from Kaiming's
# $\sqrt{2/d}$ shrinks or blows up the signal exponentially with depth. BN divides
# each pre-activation by its own batch std, undoing the scale:
#
# $$\mathrm{BN}(a\,z) = \frac{a z - a\mu}{\sqrt{a^2\sigma^2 + \epsilon}} \approx \mathrm{BN}(z)
#   \quad \text{while } a^2\sigma^2 \gg \epsilon .$$
#
# (Below that, $\epsilon = 10^{-5}$ sets the scale and the signal still fades.)
# Here: a 7-hidden-layer MLP of 64 units on Fashion-MNIST, every weight drawn
# from $\mathcal N(0, \mathrm{std}^2)$ for std from $10^{-4}$ to 1, trained with and
# without a BN before every ReLU, with one optimizer tuned for neither: SGD with
# learning rate 0.02, momentum 0.9 and weight decay 5·10⁻⁴ (an L2 penalty:
# 5·10⁻⁴·w is added to each weight's gradient, pulling it toward zero), batches
# of 64, 3 epochs. Every weight and bias of the model is decayed, BN's γ and β
# included, as `train_classifier` applies it.

# %%
"""Weight-initialization sensitivity with and without BN (the course's slides, deck 003).

    python -m lessons.weight_init            # 20 runs; wall time in docs/results/weight_init.md
    python -m lessons.weight_init --quick    # seconds, synthetic images
"""
import math

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons.chapter import legend_below, say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import learned, verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, train_classifier

HIDDEN, LAYERS, BATCH = 64, 7, 64

s = settings("weight_init", dict(train_size=8000, val_size=2000, epochs=3, lr=0.02,
                                 stds=np.logspace(-4, 0, 10).tolist(), seed=0),
             quick=dict(train_size=300, val_size=200, epochs=1, stds=[1e-4, 1e-2, 1.0]), doc=__doc__,
             help=dict(stds="initial weight standard deviations"), runs=True)
stds = s.stds
# the validation images are Fashion-MNIST's test split (a held-out set we never tune on)
dataset, train, val = fashion_mnist(s.quick, s.train_size, s.val_size, s.seed)
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), epochs=s.epochs, lr=s.lr,
                                     stds=stds, seed=s.seed, quick=s.quick), fresh=s.fresh)

# %% [markdown]
# ## 1. The model: every weight drawn from N(0, std²), biases zero

# %%
def mlp(std, bn):
    layers, fan_in = [md.nn.Flatten()], 784
    for _ in range(LAYERS):
        linear = md.nn.Linear(fan_in, HIDDEN)
        md.nn.init.normal_(linear.weight, 0.0, std)
        md.nn.init.zeros_(linear.bias)
        layers += [linear] + ([md.nn.BatchNorm1d(HIDDEN)] if bn else []) + [md.nn.ReLU()]
        fan_in = HIDDEN
    head = md.nn.Linear(HIDDEN, 10)
    md.nn.init.normal_(head.weight, 0.0, std)
    md.nn.init.zeros_(head.bias)
    return md.nn.Sequential(*layers, head)


xavier = math.sqrt(2 / (HIDDEN + HIDDEN))      # the hidden 64→64 layers
kaiming = math.sqrt(2 / HIDDEN)
print(f"for the hidden 64→64 layers, Xavier's std is {xavier:.3f} and Kaiming's (ReLU) {kaiming:.3f}")


# %% [markdown]
# ## 2. At initialization: the first and last hidden layers' activations against std
#
# At std 10⁻⁴ without BN the last hidden layer's activations are about 10⁻²³.
# Their squares, about 10⁻⁴⁶, are below the smallest normal float32 (1.2·10⁻³⁸)
# and even near its smallest subnormal (1.4·10⁻⁴⁵), where float32 keeps only
# a digit or two: a float32 `std()` of them is wrong by up to 11 %. So the
# statistics are computed in float64, whose range reaches 10⁻³⁰⁸.

# %%
def activation_std(h):
    """Standard deviation of a tensor's values, computed in float64 (float32
    squares of values near 1e-23 are subnormal and lose their digits)."""
    return float(h.numpy().astype(np.float64).std())


def activations_at_init(model, x):
    """Std of the first and last hidden layers' outputs (after ReLU) on x, in training mode."""
    relus, h = [], x
    with md.no_grad(), md.frozen_state():
        for layer in model.children():
            h = layer(h)
            if isinstance(layer, md.nn.ReLU):
                relus.append(activation_std(h))
    return relus[0], relus[-1]


x_probe = md.Tensor(train.get_batch(np.arange(min(500, len(train))))[0])
init_stats = {}
for bn in (False, True):
    for std in stds:
        md.manual_seed(s.seed)
        init_stats[(bn, std)] = activations_at_init(mlp(std, bn), x_probe)
for bn in (False, True):
    print(("with BN   " if bn else "without BN") + " | std of the last hidden layer at init: " +
          ", ".join(f"{std:.0e}: {init_stats[(bn, std)][1]:.2g}" for std in stds))

# %% [markdown]
# ## 3. Training at every std, with and without BN

# %%
def train_init(std, bn):
    """The MLP from weights of this std, with or without BN: train and validation accuracy."""
    md.manual_seed(s.seed)
    model = mlp(std, bn)
    losses = train_classifier(model, train, s.epochs, BATCH, s.lr, s.seed, desc=f"std {std:.0e}")
    diverged = not np.isfinite(losses[-1])
    return {"train_acc": None if diverged else evaluate(model, train)[1],
            "val_acc": None if diverged else evaluate(model, val)[1], "diverged": diverged}


run_all({f"{'BN' if bn else 'no BN'}/{std:.2e}": (train_init, (std, bn)) for bn in (False, True) for std in stds},
        store, s.workers, s.scheduler, desc="weight_init")
acc = lambda r: "diverged" if r["diverged"] else f"{r['train_acc']:.2f}% / {r['val_acc']:.2f}%"
show_table(["initial std", "no BN: train / validation", "BN: train / validation"],
           [[f"{std:.0e}", acc(store[f"no BN/{std:.2e}"]), acc(store[f"BN/{std:.2e}"])] for std in stds])


def accuracies(bn, which):
    return np.array([store[f"{'BN' if bn else 'no BN'}/{std:.2e}"][which] or np.nan for std in stds], float)


# %% [markdown]
# ## 4. Against std, Xavier and Kaiming marked
#
# Where the BN and no-BN lines coincide, the no-BN line (gray, filled markers)
# is drawn over the BN line (red, larger hollow markers), so both stay
# visible. A run that diverged has no accuracy: it is marked with a black ×
# at 0 %.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
for bn, color, style in ((True, "tab:red", dict(mfc="none", ms=9, lw=2.5)), (False, "tab:gray", dict(ms=4))):
    label = "BN" if bn else "no BN"
    axes[0].semilogx(stds, accuracies(bn, "train_acc"), "o-", color=color, label=f"{label} train", **style)
    axes[0].semilogx(stds, accuracies(bn, "val_acc"), "s--", color=color, label=f"{label} validation", **style)
    axes[1].loglog(stds, [init_stats[(bn, s)][0] for s in stds], "o-", color=color, label=f"{label}: first hidden",
                   **style)
    axes[1].loglog(stds, [init_stats[(bn, s)][1] for s in stds], "s--", color=color, label=f"{label}: last hidden",
                   **style)
diverged = [std for bn in (False, True) for std in stds if store[f"{'BN' if bn else 'no BN'}/{std:.2e}"]["diverged"]]
if diverged:
    axes[0].semilogx(diverged, [0.0] * len(diverged), "x", color="black", ms=10, mew=2,
                     label="diverged (no accuracy)")
for ax in axes:
    ax.axvline(xavier, color="tab:blue", ls=":", label=f"Xavier {xavier:.3f}")
    ax.axvline(kaiming, color="tab:green", ls=":", label=f"Kaiming {kaiming:.3f}")
    ax.set_xlabel("initial weight std (N(0, std²))")
    legend_below(ax, fontsize=10)
axes[0].set(ylabel="accuracy (%)", title=f"Accuracy after {s.epochs} epoch(s)")
axes[1].set(ylabel="std of the layer's activations (after ReLU)", title="Activations at initialization")
picture = show_figure(fig, f"{s.out}/weight_init.png")

# %% [markdown]
# ## 5. How much less does the initial std matter with BN?

# %%
def spread(bn):
    """(best, worst with diverged as 0, stds within 2 points of the best, stds that learned) of validation accuracy."""
    acc = accuracies(bn, "val_acc")
    good = int(np.sum(acc >= np.nanmax(acc) - 2.0))
    trained = int(sum(learned([a]) for a in acc))
    return float(np.nanmax(acc)), float(np.nanmin(np.where(np.isnan(acc), 0.0, acc))), good, trained


table = show_table(["model", "best validation accuracy", "worst (diverged = 0)", "stds within 2 points of the best",
                    "stds that learned (≥ twice chance)"],
                   [["BN" if bn else "no BN", f"{spread(bn)[0]:.2f}%", f"{spread(bn)[1]:.2f}%",
                     f"{spread(bn)[2]} of {len(stds)}", f"{spread(bn)[3]} of {len(stds)}"] for bn in (False, True)])
wider = spread(True)[2] > spread(False)[2] and spread(True)[3] > spread(False)[3]
answer = verdict(f"With BN, {spread(True)[3]} of {len(stds)} initial stds learned at all (validation accuracy at least "
                 f"twice chance) and {spread(True)[2]} trained to within 2 points of the best; without BN, "
                 f"{spread(False)[3]} and {spread(False)[2]} (one run per std, seed {s.seed}). Deck 003 says BN makes "
                 "the initial weight choice less important; " +
                 ("here it agrees: BN widened the range of stds that train." if wider else
                  "here it does not hold on both counts: BN did not widen both ranges."),
                 [spread(False)[0], spread(True)[0]], s.quick)
say(answer)
write_json(f"{s.out}/results.json", {"dataset": dataset, "stds": stds, "runs": store.runs,
                                   "init_stats": {f"{'BN' if bn else 'no BN'}/{std:.2e}": v
                                                    for (bn, std), v in init_stats.items()}})
title = f"Weight-initialization sensitivity with and without BN ({dataset})"
write_text(f"{s.out}/summary.md", summary_header(s, title) +
           f"{LAYERS} hidden layers of {HIDDEN}, {len(train)} training images, {s.epochs} epochs, batch {BATCH}, "
           f"SGD lr {s.lr} with momentum 0.9 and weight decay 5e-4.\n\n{table}\n\n{answer}\n\n![weight init]({picture})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/weight_init.md, which the README quotes
