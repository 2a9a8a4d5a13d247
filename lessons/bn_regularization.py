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
# A BN network can be measured under two **protocols**, and we run both:
#
# - **running statistics** (eval mode): every BN layer normalizes with the mean
#   and variance it averaged over training. This is how a trained network is used.
# - **each test batch's statistics**: the BN layers normalize each ablated test
#   batch with that batch's own mean and variance (their running statistics stay
#   as they are; every other layer is in eval mode). This is a *different
#   protocol*, not a correction of the first: an image's prediction then depends
#   on the other images in its test batch.
#
# The network without BN has no statistics to choose: both protocols are the same
# computation for it, so it has one curve. The slides do not say which statistics
# Morcos et al.'s BN networks used while ablated, so neither protocol here is
# claimed to be theirs.

# %%
"""Cumulative channel ablation of LeNet-5 with and without BN (Morcos et al. 2018; the course's slides, deck 001).

    python -m lessons.bn_regularization            # trains its two networks here; --record keeps the results
    python -m lessons.bn_regularization --quick    # seconds, synthetic images
"""
import contextlib
import json
import os

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import COMPARISON_HEADER, compare, comparison_rows, verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, evaluating, fashion_mnist, in_mode, train_classifier

TEST, BATCH, LR, TEST_BATCH = 2000, 64, 0.01, 500
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
                                   models=provenance, test_batch=TEST_BATCH), fresh=s.fresh)


# %% [markdown]
# ## 2. Silencing channels, under either protocol
#
# A mask after each convolution block's ReLU silences the chosen channels. The
# next layer with BN (the second convolution's, or the first linear layer's) then
# meets inputs whose mean and variance have moved. With running statistics it
# normalizes them as it would the intact network's,
#
# $$\hat x = \frac{x - \mu_{\text{running}}}{\sqrt{\sigma^2_{\text{running}} + \varepsilon}},$$
#
# fixed numbers measured before anything was silenced. With each test batch's
# statistics it computes $\mu_B$ and $\sigma^2_B$ from the ablated batch itself,
#
# $$\hat x = \frac{x - \mu_B}{\sqrt{\sigma^2_B + \varepsilon}},$$
#
# and so re-centres and re-scales what the silenced channels left. The test batches
# hold 500 images.

# %%
PROTOCOLS = {"running": "running statistics (eval mode)", "batch": "each test batch's statistics"}
BN_LAYERS = (md.nn.BatchNorm, md.nn.BatchNorm1d, md.nn.BatchNorm2d)


@contextlib.contextmanager
def normalizing_with(model, statistics):
    """Every layer in eval mode; with ``statistics="batch"`` the BN layers alone
    normalize each batch with its own mean and variance, their running statistics
    frozen. Every layer gets back the mode it had, and the statistics are unchanged."""
    if statistics not in PROTOCOLS:
        raise ValueError(f"normalizing_with: statistics must be one of {sorted(PROTOCOLS)}, got {statistics!r}")
    with evaluating(model), contextlib.ExitStack() as stack:
        if statistics == "batch":
            stack.enter_context(md.frozen_state())      # a BN layer in train mode would update its running statistics
            for layer in model.modules():
                if isinstance(layer, BN_LAYERS):
                    stack.enter_context(in_mode(layer, True))
        yield model


def accuracy_with_ablated(model, ablated, statistics="running"):
    """Test accuracy with the channels in ``ablated`` ({(conv index, channel)}) set to 0, under one protocol."""
    correct = 0
    with normalizing_with(model, statistics), md.no_grad():
        for x, y in md.data.DataLoader(test, TEST_BATCH):
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
def ablation_curve(label, statistics, order):
    """Test accuracy as the channels go, one after another, in a random order of its own
    (the same orders for both networks and both protocols)."""
    perm = np.random.default_rng([s.seed, order]).permutation(len(channels))
    return [accuracy_with_ablated(models[label], {channels[i] for i in perm[:k]}, statistics) for k in levels]


def measured_as(label, statistics):
    """The protocol whose runs hold this network's curves: the network without BN has one."""
    return statistics if any(isinstance(m, BN_LAYERS) for m in models[label].modules()) else "running"


run_all({f"{label}/{statistics}/{order}": (ablation_curve, (label, statistics, order))
         for label in models for statistics in PROTOCOLS if measured_as(label, statistics) == statistics
         for order in range(s.orders)}, store, s.workers, s.scheduler, desc="ablation orders")
curves = {(label, statistics): np.array([store[f"{label}/{measured_as(label, statistics)}/{o}"]
                                         for o in range(s.orders)])
          for label in models for statistics in PROTOCOLS}
half = levels.index(min(levels, key=lambda k: abs(k - len(channels) / 2)))
for (label, statistics), c in curves.items():
    if measured_as(label, statistics) == statistics:
        print(f"{label}, {PROTOCOLS[statistics]}: intact {c[0, 0]:.2f}%, with {levels[half]} of {len(channels)} "
              f"channels ablated {c[:, half].mean():.2f} ± {c[:, half].std():.2f}%")
print("The network without BN has no BN layer: both protocols are one computation for it, so its curve was "
      "measured once and serves both.")

# %% [markdown]
# ## 3. Accuracy against the fraction ablated, under each protocol
#
# Morcos et al. report that networks which generalize better fall more slowly
# under cumulative ablation, and that batch normalization discourages reliance on
# single directions: in their experiments, BN networks lose less accuracy as
# channels go. Below, one panel per protocol; the band is the spread over random
# ablation orders. Each protocol's curve is relative to the intact accuracy under
# that protocol. A difference of areas counts as resolved only when Welch's t-test
# over the orders, Holm-corrected for the two comparisons, gives $p < 0.05$. The
# orders are the only randomness here: the two networks are one training run each,
# so the test says whether *these two networks* differ, not whether BN networks in
# general do.

# %%
fractions = np.array(levels) / len(channels)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
summary = {}
for ax, (statistics, protocol) in zip(axes, PROTOCOLS.items()):
    for label, color in (("no BN", "tab:gray"), ("BN", "tab:red")):
        c = curves[label, statistics]
        relative = c / c[:, :1]                # normalized to the intact network, as Morcos et al. plot it
        ax.plot(fractions, relative.mean(axis=0), color=color, label=label)
        ax.fill_between(fractions, relative.min(axis=0), relative.max(axis=0), color=color, alpha=0.2)
        areas = [float(np.trapezoid(r, fractions)) for r in relative]          # one per ablation order
        summary.setdefault(label, {"test_acc": test_acc[label]})[statistics] = {
            "intact_acc": float(c[0, 0]), "mean_curve": c.mean(axis=0).tolist(), "areas": areas,
            "area_relative": float(np.mean(areas))}
    ax.set(xlabel="fraction of conv channels ablated", title=protocol, ylim=(0, None))
    ax.legend(loc="lower left")
axes[0].set_ylabel("test accuracy / intact accuracy")
fig.suptitle("Cumulative channel ablation (band: min–max over orders)")
plot = show_figure(fig, f"{s.out}/ablation.png")

areas_rows = [[label, PROTOCOLS[statistics] + ("" if measured_as(label, statistics) == statistics else
                                               " (the same computation)"),
               f"{summary[label][statistics]['intact_acc']:.2f}",
               f"{summary[label][statistics]['area_relative']:.3f} ± {np.std(summary[label][statistics]['areas']):.3f}"]
              for statistics in PROTOCOLS for label in ("no BN", "BN")]
areas_table = show_table(["network", "protocol", "intact accuracy (%)", "area (mean ± std over orders)"],
                         areas_rows, title=f"Area under the relative curve, {s.orders} ablation orders")
samples = {"no BN": summary["no BN"]["running"]["areas"],
           **{f"BN, {PROTOCOLS[k]}": summary["BN"][k]["areas"] for k in PROTOCOLS}}
comparisons = dict(zip(PROTOCOLS, compare(samples, [(f"BN, {PROTOCOLS[k]}", "no BN") for k in PROTOCOLS])))
accuracies = list(test_acc.values()) + [summary[label][k]["intact_acc"] for label in summary for k in PROTOCOLS]
rows = show_table(COMPARISON_HEADER, comparison_rows(list(comparisons.values()), s.quick, accuracies),
                  title=f"Area, BN − no BN, under each protocol, over {s.orders} ablation orders "
                        "(Welch's t-test, Holm's correction over the two)")

# %% [markdown]
# ## 4. Does the verdict depend on the protocol?
#
# This lesson's explanation of a difference between the protocols: silencing
# channels moves the mean and shrinks the variance of what the next BN layer
# receives. With running statistics that layer keeps its fixed $\mu_{\text{running}}$
# and $\sigma^2_{\text{running}}$, so it cannot renormalize: the shift passes on
# (divided by $\sqrt{\sigma^2_{\text{running}} + \varepsilon}$), and the layers after it
# meet inputs unlike any they saw in training. With each test batch's statistics
# the same layer re-centres and re-scales the ablated batch, undoing part of the
# damage. The network without BN has nothing to renormalize under either protocol.
# The sentence below says what *our* networks do.

# %%
def robustness(c):
    """What one comparison (BN − no BN) says, in words, or that it resolves nothing."""
    if not c.resolved:
        return "neither network is shown to be more robust"
    return f"the BN network is {'more' if c.difference > 0 else 'less'} robust"


def mode_dependence(comparisons):
    """The sentence on whether the verdict depends on the protocol, from the two comparisons."""
    words = {k: robustness(c) for k, c in comparisons.items()}
    if words["running"] == words["batch"]:
        return f"The verdict does not depend on the protocol: under both, {words['running']}."
    return (f"The verdict depends on the protocol: with running statistics {words['running']}; with each test "
            f"batch's statistics {words['batch']}. This lesson's explanation (section 4): with its running "
            "statistics, a BN layer after a silenced channel cannot renormalize; with the batch's own, it can.")


measured = " ".join(
    f"With {PROTOCOLS[k]}: area BN {summary['BN'][k]['area_relative']:.3f}, no BN "
    f"{summary['no BN'][k]['area_relative']:.3f}; difference {c.difference:+.3f}, 95 % interval "
    f"[{c.low:+.3f}, {c.high:+.3f}], p = {c.p:.3g} (Holm {c.p_holm:.3g})." for k, c in comparisons.items())
finding = (mode_dependence(comparisons) + " (Morcos et al. report BN networks more robust, on MNIST, CIFAR-10 "
           "and ImageNet; the slides do not give their protocol's statistics.)")
answer = verdict(finding, accuracies, s.quick)
say(measured + " " + answer)
write_json(f"{s.out}/results.json", {"dataset": dataset, "models": provenance, "protocols": PROTOCOLS,
                                   "test_batch": TEST_BATCH, "summary": summary,
                                   "comparisons": {k: c.as_dict() for k, c in comparisons.items()},
                                   "curves": store.runs})
write_text(f"{s.out}/summary.md", summary_header(s, f"BN and cumulative channel ablation ({dataset})")
           + "\n".join(f"- {k}: {v}; test accuracy (eval mode) {summary[k]['test_acc']:.2f}%"
                       for k, v in provenance.items())
           + f"\n\n{areas_table}\n\n{rows}\n\n{measured} {answer}\n\n![ablation]({plot})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/bn_regularization.md, which the README quotes
