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
# # Is a BatchNorm network more robust to losing channels?
#
# The course's slides (deck 001) present BN's regularizing effect through Morcos
# et al. (2018): networks that generalize better depend less on single
# directions, and BN networks less so. The test is **cumulative channel ablation**: silence the
# convolution channels one after another, in random orders (a silenced channel
# outputs 0 after its ReLU), and watch the test accuracy fall. A network whose
# accuracy falls more slowly, relative to its intact accuracy, depends less on
# any one channel. We compare the area under that relative curve,
#
# $$A = \int_0^1 \frac{\mathrm{acc}(f)}{\mathrm{acc}(0)}\,df, \qquad f = \text{fraction of channels ablated},$$
#
# for LeNet-5 trained without and with BN (the LeNet-5 lesson's checkpoints when
# it has run on Fashion-MNIST, otherwise trained here), and report what ours do,
# whichever way it comes out.
#
# Both networks are measured as they are used after training, in **eval mode**:
# BN normalizes with its running statistics, so silencing a channel cannot be
# undone by renormalizing the test batch.

# %%
"""Cumulative channel ablation of LeNet-5 with and without BN (Morcos et al. 2018; the course's slides, deck 001).

    python -m lessons.bn_regularization            # about 71 s on 2 cores, training its two networks here
    python -m lessons.bn_regularization --quick    # seconds, synthetic images
"""
import json
import os

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.settings import settings, summary_header
from lessons.verdicts import COMPARISON_HEADER, compare, comparison_rows, verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, evaluating, fashion_mnist, train_classifier

TEST, BATCH, LR = 2000, 64, 0.01
CHECKPOINTS = {"no BN": "no_BN.npz", "BN": "BN_decay0.9.npz"}

s = settings("bn_regularization", dict(orders=10, lenet_runs="runs/lenet5_batchnorm", train_size=20000,
                                       epochs=3, seed=0),
             quick=dict(orders=3, train_size=400, epochs=1), doc=__doc__,
             help=dict(orders="random ablation orders", lenet_runs="the LeNet-5 lesson's output folder"), runs=True)
dataset, train, test = fashion_mnist(s.quick, s.train_size, 200 if s.quick else TEST, s.seed)

# %% [markdown]
# ## 1. The two networks: the LeNet-5 lesson's, or trained here

# %%
def lenet_checkpoint(label):
    """The LeNet-5 lesson's trained model, if it ran on this dataset (and not in quick mode)."""
    path = os.path.join(s.lenet_runs, CHECKPOINTS[label])
    if s.quick or not os.path.exists(path):
        return None
    state = md.load(path)
    made_by = json.loads(str(state.get("run", "{}")))
    if made_by.get("dataset") != "fashion-mnist" or made_by.get("quick"):
        print(f"{path} was made on {made_by.get('dataset')}: training here instead")
        return None
    return state, made_by


models, provenance, test_acc = {}, {}, {}
NORMS = {"no BN": None, "BN": "batch"}


def train_here(label):
    """LeNet-5 trained here, when the LeNet-5 lesson left no checkpoint: its weights."""
    md.manual_seed(s.seed)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=NORMS[label])
    train_classifier(model, train, s.epochs, BATCH, LR, s.seed, desc=label)
    return model.state_dict()


found = {label: lenet_checkpoint(label) for label in NORMS}
trained = run_all({label: (train_here, (label,)) for label in NORMS if found[label] is None},
                  {}, s.workers, s.scheduler, desc="training")
for label, norm in NORMS.items():
    md.manual_seed(s.seed)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=norm)
    if found[label] is not None:
        state, made_by = found[label]
        model.load_state_dict(state["model"])
        # the lesson normalized with its own training split's statistics; ours are close (same data)
        provenance[label] = f"the LeNet-5 lesson's checkpoint ({made_by['epochs']} epochs on all of Fashion-MNIST)"
    else:
        model.load_state_dict(trained[label])
        provenance[label] = f"trained here ({len(train)} images, {s.epochs} epochs)"
    model.eval()                        # how a trained network is used, and stays: evaluate() keeps the mode
    models[label] = model
    test_acc[label] = evaluate(model, test)[1]
    print(f"{label}: {provenance[label]}; test accuracy (eval mode) {test_acc[label]:.2f}%")
store = RunStore(s.out, run_identity(dataset=dataset, orders=s.orders, seed=s.seed, quick=s.quick,
                                   models=provenance), fresh=s.fresh)


# %% [markdown]
# ## 2. Silencing channels: a mask after each convolution block's ReLU

# %%
def accuracy_with_ablated(model, ablated):
    """Test accuracy, in eval mode, with the channels in ``ablated`` ({(conv index, channel)}) set to 0."""
    correct = 0
    with evaluating(model), md.no_grad():
        for x, y in md.data.DataLoader(test, 500):
            h, conv = x, -1
            for layer in model.features.children():
                conv += isinstance(layer, md.nn.Conv2d)
                h = layer(h)
                if isinstance(layer, md.nn.ReLU):
                    mask = np.ones((1, h.shape[1], 1, 1), np.float32)
                    for c in (c for k, c in ablated if k == conv):
                        mask[0, c] = 0
                    h = h * md.Tensor(mask)
            correct += (model.classifier(h).argmax(axis=1) == y).sum().item()
    return 100.0 * correct / len(test)


channels = [(0, c) for c in range(6)] + [(1, c) for c in range(16)]     # LeNet-5's 6 + 16 conv channels
levels = [0, 6, 11, 16, 22] if s.quick else list(range(len(channels) + 1))   # how many are ablated
def ablation_curve(label, order):
    """Test accuracy as the channels go, one after another, in a random order of its own."""
    perm = np.random.default_rng([s.seed, order]).permutation(len(channels))
    return [accuracy_with_ablated(models[label], {channels[i] for i in perm[:k]}) for k in levels]


run_all({f"{label}/{order}": (ablation_curve, (label, order)) for label in models for order in range(s.orders)},
        store, s.workers, s.scheduler, desc="ablation orders")
for label in models:
    curves = np.array([store[f"{label}/{o}"] for o in range(s.orders)])
    half = levels.index(min(levels, key=lambda k: abs(k - len(channels) / 2)))
    print(f"{label}: accuracy with {levels[half]} of {len(channels)} channels ablated "
          f"{curves[:, half].mean():.2f} ± {curves[:, half].std():.2f}%")

# %% [markdown]
# ## 3. Accuracy against the fraction ablated, spread over orders
#
# Morcos et al. report that networks which generalize better fall more slowly
# under cumulative ablation, and that batch normalization discourages reliance on
# single directions: in their experiments, BN networks lose less accuracy as
# channels go. Below, the band is the spread over random ablation orders, and a
# difference of areas counts as resolved only when Welch's t-test over the
# orders gives $p < 0.05$. The orders are the only randomness here: the two
# networks are one training run each, so the test says whether *these two
# networks* differ, not whether BN networks in general do.

# %%
fractions = np.array(levels) / len(channels)
fig, ax = plt.subplots(figsize=(6.5, 4.2))
summary = {}
for label, color in (("no BN", "tab:gray"), ("BN", "tab:red")):
    curves = np.array([store[f"{label}/{o}"] for o in range(s.orders)])
    # normalized to the intact network, as Morcos et al. plot it
    relative = curves / curves[:, :1]
    ax.plot(fractions, relative.mean(axis=0), color=color, label=label)
    ax.fill_between(fractions, relative.min(axis=0), relative.max(axis=0), color=color, alpha=0.2)
    areas = [float(np.trapezoid(r, fractions)) for r in relative]          # one per ablation order
    summary[label] = {"test_acc": test_acc[label], "intact_acc": float(curves[0, 0]),
                      "mean_curve": curves.mean(axis=0).tolist(), "areas": areas,
                      "area_relative": float(np.mean(areas))}
ax.set(xlabel="fraction of conv channels ablated", ylabel="test accuracy / intact accuracy",
       title="Cumulative channel ablation (band: min–max over orders)")
ax.legend()
plot = show_figure(fig, f"{s.out}/ablation.png")

areas = {label: summary[label]["areas"] for label in summary}
[comparison] = compare(areas, [("BN", "no BN")])
rows = show_table(COMPARISON_HEADER, comparison_rows([comparison], s.quick, list(test_acc.values())),
                  title=f"Area under the relative curve, BN − no BN, over {s.orders} ablation orders (Welch's t-test)")
measured = (f"Area under the relative-accuracy curve (mean over {s.orders} orders): BN "
            f"{summary['BN']['area_relative']:.3f}, no BN {summary['no BN']['area_relative']:.3f}; the difference "
            f"{comparison.difference:+.3f}, 95 % interval [{comparison.low:+.3f}, {comparison.high:+.3f}], "
            f"p = {comparison.p:.3g}.")
if not comparison.resolved:
    finding = ("The ablation orders' spread does not resolve the difference: neither network is shown to be more "
               "robust here (Morcos et al. report BN networks more robust).")
else:
    finding = (f"The BN network is {'more' if comparison.difference > 0 else 'less'} robust to channel ablation "
               f"here ({'as' if comparison.difference > 0 else 'unlike what'} Morcos et al. report for BN networks "
               "on MNIST, CIFAR-10 and ImageNet; this lesson does not measure why).")
answer = verdict(finding, list(test_acc.values()), s.quick)
say(measured + " " + answer)
write_json(f"{s.out}/results.json", {"dataset": dataset, "models": provenance, "summary": summary,
                                   "comparison": comparison.as_dict(), "curves": store.runs})
write_text(f"{s.out}/summary.md", summary_header(s, f"BN and cumulative channel ablation ({dataset})")
           + "\n".join(f"- {k}: {v}; test accuracy (eval mode) {summary[k]['test_acc']:.2f}%"
                       for k, v in provenance.items())
           + f"\n\n{rows}\n\n{measured} {answer}\n\n![ablation]({plot})\n")
print(f"plots, results.json and summary.md in {s.out}/")
