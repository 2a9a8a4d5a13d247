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
# # GroupNorm vs BatchNorm across batch sizes
#
# The course's GroupNorm slides (decks 002 and 003; Wu & He
# 2018, Figure 1) show BatchNorm's ImageNet error rising sharply as the batch
# shrinks, while GroupNorm's stays flat. BN's statistics are estimates from the
# batch:
#
# $$\mu_B = \frac{1}{m}\sum_{i \in B} x_i, \qquad \sigma_B^2 = \frac{1}{m}\sum_{i\in B}(x_i - \mu_B)^2$$
#
# Wu & He's own explanation (their abstract): *"BN's error increases rapidly
# when the batch size becomes smaller, caused by inaccurate batch statistics
# estimation."* Deck 002 puts it as: in training, μ and σ depend on the batch
# size; when the batch is too small, the global μ and σ are hard to estimate
# accurately, which hurts the network at test time. That sentence leaves open
# *which* statistics do the damage: the noisy batch statistics the network
# trains with, or the running averages it is tested with. GroupNorm's
# statistics come from one image, so the batch size should not matter to it.
#
# Here: LeNet-5 on Fashion-MNIST with BatchNorm, GroupNorm, LayerNorm and no
# normalization, at batch sizes 2 to 128; and a fifth network, BatchNorm after
# the two convolutions only. LeNet-5 as the course builds it also has BN after
# its two hidden fully connected layers, where a batch of $m$ images gives each
# feature only $m$ values (with $m = 2$, $\hat x = \pm 1$ whatever the two values
# were); Wu & He's ResNet-50 has BN after convolutions only, where each channel
# has $m \cdot H \cdot W$ values. Every run sees the same images the same number
# of times from the same initial weights, with the learning rate scaled
# linearly with the batch size ($\eta = 0.01 \cdot B/32$), as Wu & He do.

# %%
"""GroupNorm vs BatchNorm across batch sizes (Wu & He 2018, Figure 1; the course's slides, decks 002 and 003).

    python -m lessons.batch_size             # 35 runs; wall time recorded in docs/results/batch_size.md
    python -m lessons.batch_size --quick     # seconds, synthetic images
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

import minidl as md
from lessons.chapter import legend_below, legend_beside, say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import error_margin, verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, in_mode, train_classifier

CONV_ONLY = "BatchNorm, convolutions only"
NORMS = {   # label: (LeNet5's norm, the layers it follows)
    "BatchNorm": ("batch", "all"), CONV_ONLY: ("batch", "conv"), "GroupNorm": ("group", "all"),
    "LayerNorm": ("layer", "all"), "none": (None, "all")}
BATCH_NORMS = ("BatchNorm", CONV_ONLY)
TEST = 2000
SLIDE_FIGURE = {"batch": [32, 16, 8, 4, 2], "BatchNorm": [76.4, 76.3, 75.2, 72.7, 65.3],
                "GroupNorm": [75.9, 75.8, 76.0, 75.8, 75.9]}    # ImageNet ResNet-50 top-1 accuracy (%)

s = settings("batch_size", dict(train_size=12000, epochs=1, batch_sizes=[2, 4, 8, 16, 32, 64, 128],
                                lr_per_32=0.01, seed=0),
             quick=dict(train_size=192, batch_sizes=[2, 8, 32]), doc=__doc__,
             help=dict(lr_per_32="learning rate at batch 32, scaled linearly with the batch size"), runs=True)

# %% [markdown]
# ## 1. Data: a fixed subset, the same for every run

# %%
dataset, train, test = fashion_mnist(s.quick, s.train_size, 200 if s.quick else TEST, s.seed)
print(f"{dataset}: {len(train)} training and {len(test)} test images, {s.epochs} epoch(s) per run")
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), epochs=s.epochs, lr_per_32=s.lr_per_32,
                                     seed=s.seed, quick=s.quick, norms=NORMS), fresh=s.fresh)

# %% [markdown]
# ## 2. BatchNorm's two modes
#
# A trained BN network can be tested in two modes:
#
# - **eval mode**: every BN uses its running averages of μ and σ², gathered
#   during training (what BN is meant to do at test time);
# - **train mode**: each test batch is normalized with its own μ_B and σ²_B, in
#   batches as small as in training: what the network computed while it learned.
#
# If the running averages were the problem (estimated badly from small
# batches), eval mode would be the worse of the two at small batches; if the
# damage is done in training (the network learned to work with noisy batch
# statistics, or learned badly because of them), train mode would be no better.
# Section 5 prints which it is.

# %%
def test_error_with_batch_statistics(model, dataset, batch_size):
    """Test error with BN in training mode on batches of ``batch_size`` (running statistics untouched)."""
    with in_mode(model, training=True), md.frozen_state(), md.no_grad():
        correct, n = 0, len(dataset) // batch_size * batch_size
        for x, y in md.data.DataLoader(dataset, batch_size, drop_last=True):
            correct += (model(x).argmax(axis=1) == y).sum().item()
    return 100.0 - 100.0 * correct / n


# %% [markdown]
# ## 3. Every normalizer at every batch size

# %%
def train_at(label, batch):
    """One normalizer at one batch size, from the same initial weights as every run."""
    md.manual_seed(s.seed)
    norm, layers = NORMS[label]
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=norm, norm_layers=layers)
    lr = s.lr_per_32 * batch / 32
    losses = train_classifier(model, train, s.epochs, batch, lr, s.seed, desc=f"{label}/{batch}")
    result = {"lr": lr, "test_error": 100.0 - evaluate(model, test)[1],
              "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 20):])),
              "diverged": bool(not np.isfinite(losses[-1]))}
    if norm == "batch":
        result["test_error_batch_statistics"] = test_error_with_batch_statistics(model, test, batch)
    return result


run_all({f"{label}/{batch}": (train_at, (label, batch)) for label in NORMS for batch in s.batch_sizes},
        store, s.workers, s.scheduler, desc="batch_size")
error = lambda label, b, key="test_error": store[f"{label}/{b}"][key]
cell = lambda r: f"{r['test_error']:.2f}" + (" (diverged)" if r["diverged"] else "")
table = show_table(["test error (%)"] + [f"B={b}" for b in s.batch_sizes],
                   [[label] + [cell(store[f"{label}/{b}"]) for b in s.batch_sizes] for label in NORMS] +
                   [[f"{label}, train-mode statistics"] +
                    [f"{error(label, b, 'test_error_batch_statistics'):.2f}" for b in s.batch_sizes]
                    for label in BATCH_NORMS],
                   title=f"Ours: LeNet-5 on {dataset}, test error (%), one run (seed {s.seed}) per cell")
slide_table = show_table(["top-1 error (%)"] + [f"B={b}" for b in SLIDE_FIGURE["batch"]],
                         [[k] + [f"{100 - a:.1f}" for a in SLIDE_FIGURE[k]] for k in ("BatchNorm", "GroupNorm")],
                         title="The course's slides, deck 003: ImageNet ResNet-50 (Wu & He, Fig. 1), "
                               "top-1 error = 100 − its accuracy")

# %% [markdown]
# ## 4. Test error against batch size, beside the slides'
#
# Both panels show **error** (lower is better); the slides' accuracies are
# converted. Compare the shapes of the curves, not their levels: ours is a
# 5-layer network on 28×28 images for one short epoch. A run whose training
# loss diverged is marked with a red ×.

# %%
STYLES = {"BatchNorm": "o-", CONV_ONLY: "D:", "GroupNorm": "s-", "LayerNorm": "^-", "none": "v--"}
COLORS = {"BatchNorm": "tab:blue", CONV_ONLY: "tab:orange", "GroupNorm": "tab:green", "LayerNorm": "tab:purple",
          "none": "tab:gray"}     # one color per normalizer in every panel


def mark_diverged(ax, label, key="test_error"):
    bad = [b for b in s.batch_sizes if store[f"{label}/{b}"]["diverged"]]
    ax.plot(bad, [error(label, b, key) for b in bad], "x", color="red", ms=10, mew=2,
            label="diverged" if bad and not any(l.get_label() == "diverged" for l in ax.get_lines()) else None)


fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
for label in NORMS:
    axes[0].plot(s.batch_sizes, [error(label, b) for b in s.batch_sizes], STYLES[label], color=COLORS[label],
                 label=label)
    mark_diverged(axes[0], label)
axes[0].set(title=f"Ours: LeNet-5 on {dataset} (eval mode)", xlabel="images per batch", ylabel="test error (%)")
for k in ("BatchNorm", "GroupNorm"):
    axes[1].plot(SLIDE_FIGURE["batch"], [100 - a for a in SLIDE_FIGURE[k]], STYLES[k], color=COLORS[k], label=k)
axes[1].set(title="Deck 003: ImageNet ResNet-50 (Wu & He, Fig. 1)", xlabel="images per worker",
            ylabel="top-1 error (%)")
for ax, ticks in zip(axes, (s.batch_sizes, SLIDE_FIGURE["batch"])):
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(b) for b in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())    # only our ticks: no overlapping log labels
legend_beside(axes[1], handles=axes[0].get_legend_handles_labels()[0])  # one color per normalizer in both panels
error_plot = show_figure(fig, f"{s.out}/error_vs_batch.png")

# %% [markdown]
# ## 5. Where BatchNorm's small-batch error comes from
#
# Look at the smallest batch: which mode is worse, and does taking BN off the
# fully connected layers change the picture? Keep in mind what the slides show:
# Wu & He's ResNet-50 has BN after convolutions only, each channel normalized
# over $2 \cdot H \cdot W$ values at batch 2, and its error still rises by 11.1
# points from batch 32 to 2 (deck 003, Figure 1).

# %%
fig, ax = plt.subplots(figsize=(11, 6))
for label in BATCH_NORMS:
    color = COLORS[label]
    ax.plot(s.batch_sizes, [error(label, b) for b in s.batch_sizes], "o-", color=color,
            label=f"{label}: eval mode (running statistics)")
    ax.plot(s.batch_sizes, [error(label, b, "test_error_batch_statistics") for b in s.batch_sizes], "s--",
            color=color, mfc="none", label=f"{label}: train mode (each test batch's statistics)")
    mark_diverged(ax, label)
ax.set(xscale="log", xlabel="images per batch (training and train-mode testing)", ylabel="test error (%)",
       title="BatchNorm's two modes:\nBN everywhere and after the convolutions only")
ax.set_xticks(s.batch_sizes, [str(b) for b in s.batch_sizes])
ax.xaxis.set_minor_formatter(NullFormatter())
legend_below(ax, fontsize=10)
modes_plot = show_figure(fig, f"{s.out}/bn_modes.png")

small, large = min(s.batch_sizes), max(s.batch_sizes)


def modes_at(label, b):
    """(eval-mode error, train-mode error) of a BN network at batch b."""
    return error(label, b), error(label, b, "test_error_batch_statistics")


def mode_margin(label):
    """The difference of the two modes' test errors at the smallest batch that
    the test images resolve (see ``error_margin``): about ±2.5 points at 19 %."""
    return error_margin(*modes_at(label, small), len(test))


def which_mode(label):
    ev, tr = modes_at(label, small)
    margin = mode_margin(label)
    if abs(ev - tr) <= margin:
        return (f"{label} at B={small}: the two modes' test errors, {ev:.2f} % (eval mode) and {tr:.2f} % "
                f"(train mode), differ by {abs(ev - tr):.2f} points, within the ±{margin:.2f} that {len(test)} "
                "test images resolve: neither mode is shown to be worse.")
    worse, better = ("train mode (each test batch's own statistics)", "eval mode (running statistics)") \
        if tr > ev else ("eval mode (running statistics)", "train mode (each test batch's own statistics)")
    return (f"{label} at B={small}: {worse} is the worse, {max(ev, tr):.2f} % test error against "
            f"{min(ev, tr):.2f} % with {better}, {abs(tr - ev):.2f} points worse ({len(test)} test images "
            f"resolve ±{margin:.2f} points).")


ev, tr = modes_at("BatchNorm", small)
margin = mode_margin("BatchNorm")
mechanism = (f" So for BN everywhere at B={small} the running averages are not what does the damage: tested with the "
             "statistics it trained with, the network does worse than with the running averages; the damage is done "
             "in training." if tr > ev + margin else
             f" So for BN everywhere at B={small} the running averages do add error: tested with each batch's own "
             "statistics, as it trained, the same network does better." if ev > tr + margin else "")
accuracies = [100 - error(k, b) for k in NORMS if k != "none" for b in s.batch_sizes]
modes = verdict(" ".join(which_mode(label) for label in BATCH_NORMS) + mechanism, accuracies, s.quick)
say(modes)
rise = {k: error(k, small) - error(k, large) for k in NORMS}
removed = 1 - rise[CONV_ONLY] / rise["BatchNorm"] if rise["BatchNorm"] else float("nan")
conv_only = verdict(
    f"BN after the convolutions only, beside BN everywhere (eval mode): at B={small} {error(CONV_ONLY, small):.2f} % "
    f"against {error('BatchNorm', small):.2f} % test error, at B={large} {error(CONV_ONLY, large):.2f} % against "
    f"{error('BatchNorm', large):.2f} %; from B={large} to B={small} its error changes by "
    f"{rise[CONV_ONLY]:+.2f} points, BN everywhere's by {rise['BatchNorm']:+.2f}. " +
    ("BN everywhere's error barely rises here, so there is little damage to locate." if rise["BatchNorm"] <= 2 else
     f"With BN after the convolutions only the error does not rise at all as the batch shrinks: all of BN "
     f"everywhere's rise comes with the BNs after the two fully connected layers, where a batch of {small} gives "
     f"each feature {small} values." if rise[CONV_ONLY] <= 0 else
     f"Taking BN off the two fully connected layers removes {removed:.0%} of BN everywhere's rise: most of the "
     f"small-batch damage here comes with the BNs after the fully connected layers, where a batch of {small} gives "
     f"each feature {small} values." if removed >= 0.5 else
     f"Taking BN off the two fully connected layers removes only {max(removed, 0):.0%} of BN everywhere's rise: "
     "most of the small-batch damage here remains with the BNs after the convolutions."),
    [100 - error(k, b) for k in BATCH_NORMS for b in (small, large)], s.quick)
say(conv_only)

# %% [markdown]
# ## Conclusion

# %%
change = {k: rise[k] for k in ("BatchNorm", "GroupNorm")}
agrees = change["BatchNorm"] > change["GroupNorm"] + 2
conclusion = verdict(
    f"From batch {large} to {small}, BatchNorm's test error changes by {change['BatchNorm']:+.2f} points and "
    f"GroupNorm's by {change['GroupNorm']:+.2f} (deck 003, from 32 to 2: BN +11.1, GN flat). " +
    ("The shape agrees with the slides': BatchNorm degrades at small batches, GroupNorm much less." if agrees else
     "The shape does not agree with the slides' here. Likeliest reason: a small network trained for one short "
     "epoch, still far from converged, where small batches also take many more (smaller) steps."),
    [100 - error(k, b) for k in ("BatchNorm", "GroupNorm") for b in (small, large)], s.quick)
say(conclusion)
write_json(f"{s.out}/results.json", {"dataset": dataset, "runs": store.runs, "slide_figure": SLIDE_FIGURE})
write_text(f"{s.out}/summary.md", summary_header(s, f"GroupNorm vs BatchNorm across batch sizes ({dataset})") +
           f"{len(train)} training images, {s.epochs} epoch(s), SGD with momentum 0.9 and weight decay 5e-4, "
           f"lr {s.lr_per_32}·B/32, same initial weights, one run (seed {s.seed}) per cell.\n\n{table}\n\n"
           f"{slide_table}\n\n{modes}\n\n{conv_only}\n\n{conclusion}\n\n"
           f"![error vs batch]({error_plot}) ![BN modes]({modes_plot})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/batch_size.md, which the README quotes
