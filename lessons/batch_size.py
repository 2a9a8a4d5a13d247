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
# # GroupNorm vs BatchNorm across batch sizes
#
# The course's GroupNorm slides (seeds `002` and `003`, Wu & He 2018, Figure 1)
# show BatchNorm's ImageNet error rising sharply as the batch shrinks, while
# GroupNorm's stays flat. The reason is in the formula: BN's
#
# $$\mu_B = \frac{1}{m}\sum_{i \in B} x_i, \qquad \sigma_B^2 = \frac{1}{m}\sum_{i\in B}(x_i - \mu_B)^2$$
#
# are estimates from the batch. With 2 or 4 images they are noisy, and the
# running averages used at test time no longer match what the network saw in
# training. GroupNorm's statistics come from one image, so the batch size should
# not matter.
#
# Here: LeNet-5 on Fashion-MNIST with BatchNorm, GroupNorm, LayerNorm and no
# normalization, at batch sizes 2 to 128. Every run sees the same images the
# same number of times from the same initial weights, with the learning rate
# scaled linearly with the batch size ($\eta = 0.01 \cdot B/32$), as Wu & He do.

# %%
"""GroupNorm vs BatchNorm across batch sizes (Wu & He 2018, Figure 1; seeds 002, 003).

    python -m lessons.batch_size             # 28 runs, about 2 minutes on 2 cores (4 with --workers 1)
    python -m lessons.batch_size --quick     # seconds, synthetic images
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

import minidl as md
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.settings import settings
from lessons.verdicts import verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, in_mode, train_classifier

NORMS = {"BatchNorm": "batch", "GroupNorm": "group", "LayerNorm": "layer", "none": None}
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
                                     seed=s.seed, quick=s.quick), fresh=s.fresh)

# %% [markdown]
# ## 2. BatchNorm's two modes
#
# A trained BN network can be tested in eval mode (running statistics, as it is
# meant to be) or in train mode (each test batch normalized with its own
# statistics, batches as small as in training: what the network computed while
# it learned). Where the two differ, the running statistics are the problem.

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
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=NORMS[label])
    lr = s.lr_per_32 * batch / 32
    losses = train_classifier(model, train, s.epochs, batch, lr, s.seed, desc=f"{label}/{batch}")
    result = {"lr": lr, "test_error": 100.0 - evaluate(model, test)[1],
              "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 20):])),
              "diverged": bool(not np.isfinite(losses[-1]))}
    if NORMS[label] == "batch":
        result["test_error_batch_statistics"] = test_error_with_batch_statistics(model, test, batch)
    return result


run_all({f"{label}/{batch}": (train_at, (label, batch)) for label in NORMS for batch in s.batch_sizes},
        store, s.workers, s.scheduler, desc="batch_size")
cell = lambda r: f"{r['test_error']:.2f}" + (" (diverged)" if r["diverged"] else "")
table = show_table(["test error (%)"] + [f"B={b}" for b in s.batch_sizes],
                   [[label] + [cell(store[f"{label}/{b}"]) for b in s.batch_sizes] for label in NORMS] +
                   [["BatchNorm, train-mode statistics"] +
                    [f"{store[f'BatchNorm/{b}']['test_error_batch_statistics']:.2f}" for b in s.batch_sizes]],
                   title=f"Ours: LeNet-5 on {dataset}, test error (%)")
slide_table = show_table(["top-1 error (%)"] + [f"B={b}" for b in SLIDE_FIGURE["batch"]],
                         [[k] + [f"{100 - a:.1f}" for a in SLIDE_FIGURE[k]] for k in ("BatchNorm", "GroupNorm")],
                         title="The seed: ImageNet ResNet-50 (Wu & He, Fig. 1), top-1 error = 100 − its accuracy")

# %% [markdown]
# ## 4. Test error against batch size, beside the seed's
#
# Both panels show **error** (lower is better); the seed's accuracies are
# converted. Compare the shapes of the curves, not their levels: ours is a
# 5-layer network on 28×28 images for one short epoch.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for label in NORMS:
    axes[0].plot(s.batch_sizes, [store[f"{label}/{b}"]["test_error"] for b in s.batch_sizes], "o-", label=label)
axes[0].set(title=f"Ours: LeNet-5 on {dataset}", xlabel="images per batch", ylabel="test error (%)")
for k in ("BatchNorm", "GroupNorm"):
    axes[1].plot(SLIDE_FIGURE["batch"], [100 - a for a in SLIDE_FIGURE[k]], "o-", label=k)
axes[1].set(title="The seed: ImageNet ResNet-50 (Wu & He, Fig. 1)", xlabel="images per worker",
            ylabel="top-1 error (%)")
for ax, ticks in zip(axes, (s.batch_sizes, SLIDE_FIGURE["batch"])):
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(b) for b in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())    # only our ticks: no overlapping log labels
    ax.legend()
show_figure(fig, f"{s.out}/error_vs_batch.png")

# %% [markdown]
# ## 5. Where BatchNorm's small-batch error comes from

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(s.batch_sizes, [store[f"BatchNorm/{b}"]["test_error"] for b in s.batch_sizes], "o-",
        label="eval mode (running statistics)")
ax.plot(s.batch_sizes, [store[f"BatchNorm/{b}"]["test_error_batch_statistics"] for b in s.batch_sizes], "s--",
        label="train mode (statistics of each test batch)")
ax.set(xscale="log", xlabel="images per batch", ylabel="test error (%)", title="BatchNorm's two modes")
ax.set_xticks(s.batch_sizes, [str(b) for b in s.batch_sizes])
ax.xaxis.set_minor_formatter(NullFormatter())
ax.legend(fontsize=8)
show_figure(fig, f"{s.out}/bn_modes.png")

# %% [markdown]
# ## Conclusion

# %%
small, large = min(s.batch_sizes), max(s.batch_sizes)
change = {k: store[f"{k}/{small}"]["test_error"] - store[f"{k}/{large}"]["test_error"] for k in ("BatchNorm", "GroupNorm")}
accuracies = [100 - store[f"{k}/{b}"]["test_error"] for k in ("BatchNorm", "GroupNorm") for b in (small, large)]
agrees = change["BatchNorm"] > change["GroupNorm"] + 2
conclusion = verdict(
    f"From batch {large} to {small}, BatchNorm's test error changes by {change['BatchNorm']:+.2f} points and "
    f"GroupNorm's by {change['GroupNorm']:+.2f} (the seed, from 32 to 2: BN +11.1, GN flat). " +
    ("The shape agrees with the seed's: BatchNorm degrades at small batches, GroupNorm much less." if agrees else
     "The shape does not agree with the seed's here. Likeliest reason: a small network trained for one short "
     "epoch, still far from converged, where small batches also take many more (smaller) steps."),
    accuracies, s.quick)
say(conclusion)
write_json(f"{s.out}/results.json", {"dataset": dataset, "runs": store.runs, "seed_figure": SLIDE_FIGURE})
write_text(f"{s.out}/summary.md", f"# GroupNorm vs BatchNorm across batch sizes ({dataset})\n\n"
           f"{len(train)} training images, {s.epochs} epoch(s), SGD momentum 0.9, lr {s.lr_per_32}·B/32, "
           f"same initial weights.\n\n{table}\n\n{slide_table}\n\n{conclusion}\n\n"
           "![error vs batch](error_vs_batch.png) ![BN modes](bn_modes.png)\n")
print(f"plots, results.json and summary.md in {s.out}/")
