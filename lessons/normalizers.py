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
# # The normalizer family as one idea
#
# The course's deck on normalization (deck 001) and its
# GroupNorm slide (deck 002, Wu & He's Figure 2) present BatchNorm, LayerNorm, InstanceNorm and
# GroupNorm as one formula,
#
# $$\hat x = \frac{x - \mu_S}{\sqrt{\sigma_S^2 + \epsilon}}, \qquad
#   \mu_S = \frac{1}{|S|}\sum_{i \in S} x_i, \qquad \sigma_S^2 = \frac{1}{|S|}\sum_{i\in S}(x_i - \mu_S)^2,$$
#
# where only the set $S$ of values that share one mean and variance differs:
# BN shares over the batch and the positions (N, H, W) of a channel, LN over a
# sample's channels and positions (C, H, W), IN over one sample's one channel
# (H, W), GN over a group of channels in one sample. In code, $S$ is the tuple of
# axes the mean is taken over.
#
# This chapter draws those sets from the axes the code uses, writes them as
# Meta Normalization's matrices, lets LeNet-5 learn which normalizer each layer
# wants (Switchable and Sparse Switchable Norm), and ends with the geometry of
# BN's backward.

# %%
"""The normalizer family: the N/C/HW cube, Meta Normalization, Switchable and
Sparse Switchable Norm in LeNet-5, and BN's backward as a projection (the course's slides, decks 001 and 002).

    python -m lessons.normalizers            # Fashion-MNIST; wall time in docs/results/normalizers.md
    python -m lessons.normalizers --quick    # seconds, synthetic images
"""
import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from minidl.ops import norm
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, train_classifier

CUBE = (3, 4, 2, 2)            # (N, C, H, W) for the cube and the matrices
GROUPS = 2
TEST, BATCH = 2000, 64
RECORD_EVERY = 10              # SSN weights recorded every this many steps
SLIDE_IMAGENET = {"BN": 76.4, "LN": 74.7, "IN": 71.6, "GN": 75.9, "SN": 76.9}   # the course's slides, deck 000: ResNet-50 top-1

s = settings("normalizers", dict(train_size=12000, epochs=2, lr=0.02, seed=0),
             quick=dict(train_size=600, epochs=2), doc=__doc__,
             help=dict(train_size="Fashion-MNIST training images used"), runs=True)
batch = 32 if s.quick else BATCH
results = {}

# %% [markdown]
# ## 1. The cube: which values share one mean and variance
#
# A batch of activations is an $N \times C \times H \times W$ block. For each
# normalizer, the blue cells below are those normalized with the same $\mu$ and
# $\sigma^2$ as the cell at the corner: they are computed here from the very
# reduction axes the layers use.

# %%
n, c, h, w = CUBE
x = np.random.default_rng(s.seed).standard_normal(CUBE) * 2 + 1
normalizers = {   # name: (the shape the code reduces in, its reduction axes)
    "BatchNorm": (CUBE, norm.batch_axes(x)),
    "LayerNorm": (CUBE, (1, 2, 3)),
    "InstanceNorm": (CUBE, (2, 3)),
    f"GroupNorm (G={GROUPS})": ((n, GROUPS, c // GROUPS, h, w), (2, 3, 4)),
}
sharing, cube_rows = {}, []
for name, (shape, axes) in normalizers.items():
    mu = x.reshape(shape).mean(axis=axes, keepdims=True)
    # cell (n, c, s) shares the statistic of cell (0, 0, 0) when they agree on every kept axis
    index = np.indices(shape).reshape(len(shape), -1)
    kept = [a for a in range(len(shape)) if a not in axes]
    same = np.all(index[kept] == index[kept][:, :1], axis=0).reshape(n, c, h * w)
    sharing[name] = same
    cube_rows.append([name, str(shape), str(axes), str(mu.shape), int(same.sum())])
show_table(["normalizer", "shape reduced", "axes S", "statistics' shape", "values sharing one μ, σ²"], cube_rows)

# %%
fig = plt.figure(figsize=(14, 4.2))
for k, (name, same) in enumerate(sharing.items()):
    ax = fig.add_subplot(1, 4, k + 1, projection="3d")
    filled = np.ones((h * w, c, n), bool)                     # axes of the plot: HW, C, N
    colors = np.where(same.transpose(2, 1, 0)[..., None], [[[[0.2, 0.45, 0.9, 0.9]]]],
                      [[[[0.85, 0.85, 0.85, 0.35]]]])
    ax.voxels(filled, facecolors=colors, edgecolor="k", linewidth=0.3)
    ax.set(xlabel="H, W", ylabel="C", title=name, xticks=[], yticks=[], zticks=[])
    ax.set_zlabel("N (batch)", labelpad=-8)
    ax.set_box_aspect(None, zoom=0.82)           # room for all three axis labels
fig.suptitle("Blue: the values normalized by one mean and variance (Wu & He, Figure 2)")
show_figure(fig, f"{s.out}/cube.png");

# %% [markdown]
# ## 2. Meta Normalization: one pair of matrices per normalizer
#
# Deck 001 writes every normalizer's statistics from the IN statistics, an
# $N \times C$ matrix $\mu_{IN}$ (one mean per sample and channel), with two
# binary matrices: $V$ ($N\times N$) averages over the batch, $U$ ($C \times C$)
# over channels,
#
# $$\mu_{MN} = \tfrac{1}{a_V} V \,\mu_{IN}\, U \tfrac{1}{a_U} .$$
#
# IN is $V = I, U = I$; BN is $V = \mathbf{1}\mathbf{1}^\top$, $U = I$; LN is
# $V = I$, $U = \mathbf{1}\mathbf{1}^\top$; GN is $V = I$ with a block-diagonal $U$.
#
# *A slip on the slide:* its text says "V aggregates the statistics from the
# channels, while U aggregates those in a batch". It is the other way round, as
# its own shapes and its BN and LN examples show: $V$ is $N \times N$ and
# multiplies $\mu_{IN}$ from the left, mixing rows (samples, the batch); $U$ is
# $C \times C$ and mixes columns (channels).
# The slide writes the variance the same way, $\sigma^2_{MN} = \frac{1}{a_V}V\sigma^2_{IN}U\frac{1}{a_U}$.
# That averages the per-instance variances and forgets that the instance
# *means* differ too: the variance of a union is the mean of the parts'
# variances **plus** the variance of their means. Averaging the second moments
# instead is exact:
#
# $$\sigma^2_{MN} = \tfrac{1}{a_V} V\, \mathbb{E}_{IN}[x^2]\, U \tfrac{1}{a_U} - \mu_{MN}^2 .$$
#
# Both are checked against the layers below.

# %%
mu_in = x.mean(axis=(2, 3))                                   # (N, C)
var_in = x.var(axis=(2, 3))                                   # σ²_IN, (N, C)
second_in = (x * x).mean(axis=(2, 3))                         # E[x²] per sample and channel
ones = lambda k: np.ones((k, k))
block = np.kron(np.eye(GROUPS), ones(c // GROUPS))            # GN: channels averaged within groups
meta = {"InstanceNorm": (np.eye(n), np.eye(c)), "BatchNorm": (ones(n), np.eye(c)),
        "LayerNorm": (np.eye(n), ones(c)), f"GroupNorm (G={GROUPS})": (np.eye(n), block)}
layers = {"InstanceNorm": md.nn.InstanceNorm2d(c), "BatchNorm": md.nn.BatchNorm2d(c, affine=False),
          "LayerNorm": md.nn.GroupNorm(1, c, affine=False),
          f"GroupNorm (G={GROUPS})": md.nn.GroupNorm(GROUPS, c, affine=False)}
eps, meta_rows = 1e-5, []
for name, (V, U) in meta.items():
    average = lambda a: (V / V.sum(axis=1, keepdims=True)) @ a @ (U / U.sum(axis=0, keepdims=True))
    mu = average(mu_in)                                       # (N, C)
    var = average(second_in) - mu ** 2                        # σ² = E[x²] − μ², exact
    var_slide = average(var_in)                               # the slide's averaged σ²_IN
    y_layer = layers[name].astype("float64")(md.Tensor(x)).numpy()
    y_meta = (x - mu[:, :, None, None]) / np.sqrt(var[:, :, None, None] + eps)
    y_slide = (x - mu[:, :, None, None]) / np.sqrt(var_slide[:, :, None, None] + eps)
    diff = float(np.abs(y_meta - y_layer).max())
    results.setdefault("meta_normalization_max_difference", {})[name] = diff
    results.setdefault("slide_variance_ratio", {})[name] = float((var / var_slide).max())
    meta_rows.append([name, f"{diff:.1e}", f"{float(np.abs(y_slide - y_layer).max()):.2g}",
                      f"{float((var / var_slide).max()):.2f}"])
    assert diff < 1e-10
print("BatchNorm: V =\n" + str(meta["BatchNorm"][0].astype(int)) + "\nU =\n" + str(meta["BatchNorm"][1].astype(int)))
print(f"GroupNorm (G={GROUPS}): U =\n" + str(block.astype(int)))
show_table(["normalizer", "|MN with E[x²] − μ² − layer|", "|MN with the slide's averaged σ²_IN − layer|",
            "largest true σ² / slide's σ²"], meta_rows)

# %% [markdown]
# The variance of a union is never below the mean of its parts' variances, so the
# slide's form can only underestimate $\sigma^2$; it is exact where nothing is
# averaged (IN). How far off it is here:

# %%
exact = max(results["meta_normalization_max_difference"].values())
worst = max(results["slide_variance_ratio"], key=results["slide_variance_ratio"].get)
say(f"Meta Normalization with $\\mathbb E[x^2] - \\mu^2$ matches every layer to {exact:.1e}. The slide's averaged "
    f"$\\sigma^2_{{IN}}$ is exact for IN (ratio {results['slide_variance_ratio']['InstanceNorm']:.2f}) and "
    f"underestimates the others' variance by up to ×{results['slide_variance_ratio'][worst]:.2f} ({worst}).")

# %% [markdown]
# ## 3. Let the network choose: Switchable and Sparse Switchable Norm
#
# Switchable Norm (SN) normalizes with a learned mixture of the IN, LN and BN
# statistics, $\mu = \sum_k w_k \mu_k$ and $\sigma^2 = \sum_k w'_k \sigma^2_k$, the
# weights a softmax of learned logits. Sparse Switchable Norm (SSN) replaces the
# softmax by SparsestMax, whose output is pushed onto a corner of the simplex as
# its radius grows from 0 to 1, so that at the end each set of weights is
# one-hot: one normalizer's statistic.
# A fully connected layer has no H, W, so there IN does not exist and the choice
# is between LN and BN.
#
# *Where the slide and the code differ:* the slide writes one set of weights,
# $q_1, q_2, q_3$, for both $\mu$ and $\sigma^2$. Luo et al.'s SN (and Shao et
# al.'s SSN) learn two sets, $w$ for the mean and $w'$ for the variance, and so
# does minidl: a layer may take its mean from one normalizer and its variance
# from another. The table after training says what each layer chose.
#
# Both go into every normalization layer of LeNet-5, trained on Fashion-MNIST
# (synthetic images in a quick run).

# %%
dataset, train, test = fashion_mnist(s.quick, s.train_size, 200 if s.quick else TEST, s.seed)
steps = s.epochs * (len(train) // batch)
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), epochs=s.epochs, batch_size=batch,
                                     lr=s.lr, seed=s.seed, quick=s.quick), fresh=s.fresh)


def mixture(model):
    """{layer: (normalizer names, mean weights, variance weights)} of each switchable layer."""
    found = {}
    for name, m in model.named_modules():
        if hasattr(m, "mixture_weights"):
            w, v = m.mixture_weights()
            names = ["IN", "LN", "BN"] if len(w) == 3 else ["LN", "BN"]
            found[name] = (names, w.numpy().tolist(), v.numpy().tolist())
    return found


def choices(weights):
    """What each SSN layer ended with, for the mean and for the variance, said from its weights."""
    one_hot = lambda p: max(p) > 1 - 1e-6
    pick = lambda names, p: names[int(np.argmax(p))] if one_hot(p) else "a mixture"
    said = [f"{layer}: mean from {pick(names, w)}, variance from {pick(names, v)}"
            for layer, (names, w, v) in weights.items()]
    both = sum(one_hot(w) and one_hot(v) for _, w, v in weights.values())
    return f"After training, SSN: {'; '.join(said)}. {both} of {len(said)} layers are one-hot in both sets of weights."


def train_switchable(kind):
    """LeNet-5 with SN or SSN in every normalization layer; SSN's radius grows 0 → 1 over the run."""
    md.manual_seed(s.seed)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=kind)
    schedule = md.nn.RadiusSchedule(model, steps) if kind == "sparse_switch" else None
    trace = []

    def after_step(step, model):
        if schedule is not None:
            schedule.step()
            if step % RECORD_EVERY == 0 or step == steps - 1:      # the last: radius 1
                trace.append({"step": step, "radius": schedule.layers[0].radius, "weights": mixture(model)})
    losses = train_classifier(model, train, s.epochs, batch, s.lr, s.seed, desc=kind, after_step=after_step)
    return {"test_acc": evaluate(model, test)[1], "final_loss": float(np.mean(losses[-20:])),
            "weights": mixture(model), "trace": trace}


run_all({kind: (train_switchable, (kind,)) for kind in ("switch", "sparse_switch")}, store,
        s.workers, s.scheduler, desc="switchable norms")

fmt = lambda names, p: ", ".join(f"{k} {q:.2f}" for k, q in zip(names, p))
table = show_table(["model", "layer", "mean weights", "variance weights"],
                   [["SN" if kind == "switch" else "SSN", layer, fmt(names, w), fmt(names, v)]
                    for kind in ("switch", "sparse_switch")
                    for layer, (names, w, v) in store[kind]["weights"].items()])
ours = {"SN": store["switch"]["test_acc"], "SSN": store["sparse_switch"]["test_acc"]}
accuracy = show_table(["normalizer", f"ours: {dataset}, LeNet-5, {len(train)} images, {s.epochs} epochs",
                       "the slides (deck 000): ImageNet, ResNet-50, top-1"],
                      [[k, f"{ours[k]:.2f}" if k in ours else "", SLIDE_IMAGENET.get(k, "")]
                       for k in ["SN", "SSN", "BN", "LN", "IN", "GN"]], title="Test accuracy (%)")
results["switchable"] = {k: {kk: vv for kk, vv in store[k].items() if kk != "trace"} for k in store.runs}
say(choices(store["sparse_switch"]["weights"]))

# %% [markdown]
# The slides' accuracies are ImageNet ResNet-50 results: another task, model and
# scale. What a small LeNet-5 can show is *which* normalizer each layer picks.
# Each panel below is one layer; bars are its learned weights.

# %%
fig, axes = plt.subplots(2, 4, figsize=(14, 6), sharey=True)
for row, kind in enumerate(("switch", "sparse_switch")):
    for ax, (layer, (names, w, v)) in zip(axes[row], store[kind]["weights"].items()):
        at = np.arange(len(names))
        ax.bar(at - 0.2, w, 0.4, label="mean weights")
        ax.bar(at + 0.2, v, 0.4, label="variance weights")
        ax.set_xticks(at, names)
        ax.set_title(f"{'SN' if kind == 'switch' else 'SSN'}: {layer}")
axes[0][0].legend()
for ax in axes[:, 0]:
    ax.set_ylabel("learned weight")
fig.suptitle("What each normalization layer of LeNet-5 learned to use")
show_figure(fig, f"{s.out}/switch_weights.png")

# %% [markdown]
# SSN's mean weights as SparsestMax's radius grows from 0 to 1. Each panel has
# its own legend: the conv layers choose among IN, LN and BN, the fully
# connected ones between LN and BN.

# %%
trace = store["sparse_switch"]["trace"]
radius_fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharey=True)
for ax, layer in zip(axes, trace[0]["weights"] if trace else []):
    names = trace[0]["weights"][layer][0]
    weights = np.array([t["weights"][layer][1] for t in trace])
    for k, name in enumerate(names):
        ax.plot([t["radius"] for t in trace], weights[:, k], label=name,
                color={"IN": "tab:green", "LN": "tab:orange", "BN": "tab:blue"}[name])
    ax.set(xlabel="SparsestMax radius", title=layer)
    ax.legend()
axes[0].set_ylabel("mean weight")
show_figure(radius_fig, f"{s.out}/ssn_radius.png")

# %% [markdown]
# ## 4. BN's backward is a projection
#
# For one channel of $m$ values with $\gamma = 1$, the backward of section 3 of
# the BN-backward chapter can be written
#
# $$\frac{\partial l}{\partial x} = \frac{1}{\sigma}\,(I - P)\,\frac{\partial l}{\partial y},
#   \qquad P = \frac{1}{m}\left(\mathbf{1}\mathbf{1}^\top + \hat x \hat x^\top\right).$$
#
# $\partial l/\partial x$ is the upstream gradient with its components along
# $\mathbf 1$ and along $\hat x$ removed: moving $x$ along $\mathbf 1$ (a shift) or
# along $\hat x$ (a scaling) does not change BN's output. $P$ is an exact
# projector ($P^2 = P$) when $\epsilon = 0$, where $\lVert\hat x\rVert^2 = m$; with
# $\epsilon > 0$, $\lVert\hat x\rVert^2 = m\sigma^2/(\sigma^2+\epsilon) < m$ and a small
# component along $\hat x$ survives.

# %%
m = 8
v = np.random.default_rng(s.seed + 1).standard_normal(m) * 3 + 1     # one channel's m values
g = np.random.default_rng(s.seed + 2).standard_normal(m)             # dl/dy
geometry = {}
for eps in (0.0, 1e-5, 1e-1):
    t = md.Tensor(v[:, None], requires_grad=True)
    norm.normalize(t, (0,), eps=eps).backward(g[:, None])              # γ = 1
    dx = md.backend.as_numpy(t.grad)[:, 0]
    x_hat = (v - v.mean()) / np.sqrt(v.var() + eps)
    P = (np.ones((m, m)) + np.outer(x_hat, x_hat)) / m
    sigma = np.sqrt(v.var() + eps)
    geometry[eps] = {"|P² − P|": float(np.abs(P @ P - P).max()),
                     "|dl/dx − (I − P)dl/dy/σ|": float(np.abs(dx - (np.eye(m) - P) @ g / sigma).max()),
                     "1·dl/dx": float(dx.sum()), "x̂·dl/dx": float(x_hat @ dx)}
show_table(["ε"] + list(geometry[0.0]), [[f"{e:g}"] + [f"{q:.1e}" for q in row.values()] for e, row in geometry.items()])
results["geometry"] = {str(k): val for k, val in geometry.items()}

# %% [markdown]
# For $m = 3$ it can be drawn: $\partial l/\partial x$ lies on the one line
# orthogonal to both $\mathbf 1$ and $\hat x$.

# %%
v3 = np.array([0.5, 2.0, 3.5])
g3 = np.array([1.0, -0.4, 0.8])
t = md.Tensor(v3[:, None], requires_grad=True)
norm.normalize(t, (0,), eps=0.0).backward(g3[:, None])
dx3 = md.backend.as_numpy(t.grad)[:, 0]
xh3 = (v3 - v3.mean()) / v3.std()
fig = plt.figure(figsize=(7.6, 7.5))
ax = fig.add_subplot(projection="3d")
for vec, label, color in ((np.ones(3) / np.sqrt(3), "1 (normalized)", "gray"),
                          (xh3 / np.sqrt(3), "x̂ (normalized)", "tab:green"), (g3, "dl/dy", "tab:blue"),
                          (dx3 * v3.std(), "σ·dl/dx = (I − P)dl/dy", "tab:red")):
    ax.quiver(0, 0, 0, *vec, color=color, label=label, arrow_length_ratio=0.1, lw=2)
normal = np.cross(np.ones(3), xh3)
ax.plot(*(np.outer(np.linspace(-1, 1, 2), normal / np.linalg.norm(normal) * 1.5).T), "r:", lw=1,
        label="the line orthogonal to 1 and x̂")
ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), zlim=(-1.5, 1.5), xlabel="x₁", ylabel="x₂", zlabel="x₃",
       xticks=[-1, 0, 1], yticks=[-1, 0, 1], zticks=[-1, 0, 1])
ax.set_title("m = 3: dl/dx lies on the line orthogonal to 1 and x̂")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2)    # under the box, not over its ticks
show_figure(fig, f"{s.out}/bn_backward_geometry.png")
results["m3"] = {"dl/dx": dx3.tolist(), "1·dl/dx": float(dx3.sum()), "x̂·dl/dx": float(xh3 @ dx3)}

# %% [markdown]
# ## Conclusion
#
# One formula; the axes decide which normalizer it is. Meta Normalization makes
# that a pair of matrices (with the variance taken through $\mathbb E[x^2]$), SN
# and SSN let each layer learn its axes, and BN's backward removes exactly the
# two directions its forward cannot see.

# %%
write_json(f"{s.out}/results.json", results)
write_text(f"{s.out}/summary.md", summary_header(s, "The normalizer family") +
           "## Meta Normalization vs the layers (max |difference|)\n\n" +
           "\n".join(f"- {k}: {v:.1e}" for k, v in results["meta_normalization_max_difference"].items()) +
           f"\n\n## Switchable and Sparse Switchable Norm in LeNet-5 ({dataset}, {len(train)} images, "
           f"{s.epochs} epochs)\n\n{table}\n\n{accuracy}\n\n## BN's backward as a projection\n\n" +
           "\n".join(f"- ε = {k}: " + ", ".join(f"{kk} = {vv:.1e}" for kk, vv in val.items())
                     for k, val in results["geometry"].items()) +
           "\n\n![cube](cube.png) ![weights](switch_weights.png) ![radius](ssn_radius.png) "
           "![geometry](bn_backward_geometry.png)\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/normalizers.md, which the README quotes
