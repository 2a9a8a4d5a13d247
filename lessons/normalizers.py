"""The normalizer family as one idea: which values share a mean, one formula for
all of them, learned mixtures (Switchable and Sparse Switchable Norm), and the
geometry of BatchNorm's backward.

The course's deck on normalization (seed 001) and its GroupNorm slide (seed
002, Wu & He's Figure 2):

1. the N/C/HW cube: for BN, LN, IN and GN(G=2), the cells that share one μ and
   σ², drawn from the reduction axes the code uses;
2. Meta Normalization: μ_BN, μ_LN, μ_GN as V·μ_IN·U with binary averaging
   matrices, variances through the second moments, checked against the layers;
3. Switchable and Sparse Switchable Norm in every normalization layer of
   LeNet-5 on Fashion-MNIST: the weights each layer learns over (IN, LN, BN),
   and SSN's weights turning one-hot as SparsestMax's radius grows;
4. BN's backward as a projection: dl/dx = (γ/σ)(I − P)·dl/dy with
   P = (11ᵀ + x̂x̂ᵀ)/m, checked numerically and drawn for m = 3.

    python -m lessons.normalizers            # 17 s measured on a 2-core CPU
    python -m lessons.normalizers --quick    # seconds, synthetic images

Where the seed reports numbers they are ImageNet ResNet-50 results (printed
beside ours); a 2-epoch LeNet-5 on 12,000 Fashion-MNIST images can show which
normalizer each layer prefers, not reproduce those accuracies.
"""
# %% Settings (flags override them)

import numpy as np

import minidl as md
import minidl.functional as F
from minidl.ops import norm as N
from lessons.common import (RunStore, evaluate, fashion_mnist, lesson_args, lesson_parser,
                            run_identity, show_figure, train_classifier, write_json, write_text)

CUBE = (3, 4, 2, 2)            # (N, C, H, W) for the cube and the matrices
GROUPS = 2
TRAIN, TEST, EPOCHS, BATCH, LR = 12000, 2000, 2, 64, 0.02
RECORD_EVERY = 10              # SSN weights recorded every this many steps
SEED = 0
SEED_IMAGENET = {"BN": 76.4, "LN": 74.7, "IN": 71.6, "GN": 75.9, "SN": 76.9}   # seed 000, ResNet-50 top-1
QUICK = dict(train=600, test=200, epochs=2, batch=32)

parser = lesson_parser("normalizers", __doc__, "synthetic images, tiny runs", seed=SEED)
parser.add_argument("--train-size", type=int, default=TRAIN, help="Fashion-MNIST training images used")
parser.add_argument("--epochs", type=int, default=EPOCHS)
parser.add_argument("--lr", type=float, default=LR)
args = lesson_args(parser)
if args.quick:
    args.train_size, args.epochs = QUICK["train"], QUICK["epochs"]
batch = QUICK["batch"] if args.quick else BATCH
out = args.out
results = {}

# %% 1. The cube: which cells share one mean and variance
# Each normalizer is the one formula with other axes; GroupNorm first splits C into groups.
n, c, h, w = CUBE
x = np.random.default_rng(args.seed).standard_normal(CUBE) * 2 + 1
normalizers = {   # name: (the shape the code reduces in, its reduction axes)
    "BatchNorm": (CUBE, N.batch_axes(x)),
    "LayerNorm": (CUBE, (1, 2, 3)),
    "InstanceNorm": (CUBE, (2, 3)),
    f"GroupNorm (G={GROUPS})": ((n, GROUPS, c // GROUPS, h, w), (2, 3, 4)),
}
sharing = {}
for name, (shape, axes) in normalizers.items():
    mu = x.reshape(shape).mean(axis=axes, keepdims=True)
    # cell (n, c, s) shares the statistic of cell (0, 0, 0) when they agree on every kept axis
    index = np.indices(shape).reshape(len(shape), -1)
    kept = [a for a in range(len(shape)) if a not in axes]
    same = np.all(index[kept] == index[kept][:, :1], axis=0).reshape(n, c, h * w)
    sharing[name] = same
    print(f"{name:<18} reduces {shape} over axes {axes}: statistics of shape {mu.shape}, "
          f"{int(same.sum())} values share each μ and σ²")

import matplotlib.pyplot as plt  # noqa: E402

fig = plt.figure(figsize=(13, 3.6))
for k, (name, same) in enumerate(sharing.items()):
    ax = fig.add_subplot(1, 4, k + 1, projection="3d")
    filled = np.ones((h * w, c, n), bool)                     # axes of the plot: HW, C, N
    colors = np.where(same.transpose(2, 1, 0)[..., None], [[[[0.2, 0.45, 0.9, 0.9]]]],
                      [[[[0.85, 0.85, 0.85, 0.35]]]])
    ax.voxels(filled, facecolors=colors, edgecolor="k", linewidth=0.3)
    ax.set(xlabel="H, W", ylabel="C", zlabel="N", title=name, xticks=[], yticks=[], zticks=[])
fig.suptitle("Blue: the values normalized by one mean and variance (Wu & He, Figure 2)")
show_figure(fig, f"{out}/cube.png")

# %% 2. Meta Normalization: μ = V·μ_IN·U with binary averaging matrices
# μ_IN is an N×C matrix; V (N×N) averages over the batch, U (C×C) over channels.
mu_in = x.mean(axis=(2, 3))                                   # (N, C)
second_in = (x * x).mean(axis=(2, 3))                         # E[x²] per sample and channel
ones = lambda k: np.ones((k, k))
block = np.kron(np.eye(GROUPS), ones(c // GROUPS))            # GN: channels averaged within groups
meta = {"InstanceNorm": (np.eye(n), np.eye(c)), "BatchNorm": (ones(n), np.eye(c)),
        "LayerNorm": (np.eye(n), ones(c)), f"GroupNorm (G={GROUPS})": (np.eye(n), block)}
layers = {"InstanceNorm": md.nn.InstanceNorm2d(c), "BatchNorm": md.nn.BatchNorm2d(c, affine=False),
          "LayerNorm": md.nn.GroupNorm(1, c, affine=False),
          f"GroupNorm (G={GROUPS})": md.nn.GroupNorm(GROUPS, c, affine=False)}
eps = 1e-5
for name, (V, U) in meta.items():
    a_V, a_U = V.sum(axis=1, keepdims=True), U.sum(axis=0, keepdims=True)   # normalizing factors
    mu = (V / a_V) @ mu_in @ (U / a_U)                        # (N, C)
    var = (V / a_V) @ second_in @ (U / a_U) - mu ** 2         # σ² = E[x²] − μ²
    y_meta = (x - mu[:, :, None, None]) / np.sqrt(var[:, :, None, None] + eps)
    y_layer = layers[name].astype("float64")(md.Tensor(x)).numpy()
    diff = float(np.abs(y_meta - y_layer).max())
    results.setdefault("meta_normalization_max_difference", {})[name] = diff
    print(f"\n== {name}: V =\n{V.astype(int)}\nU =\n{U.astype(int)}\n"
          f"|meta formula − the layer's output| ≤ {diff:.1e}")
    assert diff < 1e-10

# %% 3. Switchable and Sparse Switchable Norm in LeNet-5: what each layer learns
dataset, train, test = fashion_mnist(args.quick, args.train_size, QUICK["test"] if args.quick else TEST,
                                     args.seed)
steps = args.epochs * (len(train) // batch)
store = RunStore(out, run_identity(dataset=dataset, train=len(train), epochs=args.epochs,
                                   batch_size=batch, lr=args.lr, seed=args.seed, quick=args.quick),
                 fresh=args.fresh)


def mixture(model):
    """{layer: (mean weights, variance weights)} for each switchable layer."""
    out = {}
    for name, m in model.named_modules():
        if hasattr(m, "mixture_weights"):
            w, v = m.mixture_weights()
            out[f"{name} ({type(m).__name__})"] = (w.numpy().tolist(), v.numpy().tolist())
    return out


for norm in ("switch", "sparse_switch"):
    if norm in store:
        continue
    md.manual_seed(args.seed)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=norm)
    schedule = md.nn.RadiusSchedule(model, steps) if norm == "sparse_switch" else None
    trace = []

    def after_step(step, model):
        if schedule is not None:
            schedule.step()
            if step % RECORD_EVERY == 0:
                trace.append({"step": step, "radius": schedule.layers[0].radius, "weights": mixture(model)})
    losses = train_classifier(model, train, args.epochs, batch, args.lr, args.seed,
                              desc=norm, after_step=after_step)
    store[norm] = {"test_acc": evaluate(model, test)[1], "final_loss": float(np.mean(losses[-20:])),
                   "weights": mixture(model), "trace": trace}
    print(f"{norm}: test accuracy {store[norm]['test_acc']:.2f}%")

rows = []
for norm in ("switch", "sparse_switch"):
    for layer, (w, v) in store[norm]["weights"].items():
        names = ("IN", "LN", "BN") if len(w) == 3 else ("LN", "BN")
        fmt = lambda p: " ".join(f"{k} {q:.2f}" for k, q in zip(names, p))
        rows.append(f"| {norm} | {layer} | {fmt(w)} | {fmt(v)} |")
table = "| model | layer | mean weights | variance weights |\n|---|---|---|---|\n" + "\n".join(rows)
print("\n" + table)
print(f"\ntest accuracy: SN {store['switch']['test_acc']:.2f}%, SSN {store['sparse_switch']['test_acc']:.2f}% "
      f"({dataset}, {len(train)} training images, {args.epochs} epochs)")
print("the seed's ImageNet ResNet-50 top-1 (%):", ", ".join(f"{k} {v}" for k, v in SEED_IMAGENET.items()),
      "\n(a different task, model and scale: compare which normalizer each layer picks, not accuracies)")
results["switchable"] = {k: {kk: vv for kk, vv in store[k].items() if kk != "trace"} for k in store.runs}

# %%
fig, axes = plt.subplots(2, 4, figsize=(14, 6), sharey=True)
for row, norm in enumerate(("switch", "sparse_switch")):
    for ax, (layer, (w, v)) in zip(axes[row], store[norm]["weights"].items()):
        names = ("IN", "LN", "BN") if len(w) == 3 else ("LN", "BN")
        at = np.arange(len(names))
        ax.bar(at - 0.2, w, 0.4, label="mean weights")
        ax.bar(at + 0.2, v, 0.4, label="variance weights")
        ax.set_xticks(at, names)
        ax.set_title(f"{'SN' if norm == 'switch' else 'SSN'}: {layer.split(' ')[0]}", fontsize=9)
axes[0][0].legend(fontsize=7)
fig.suptitle("What each normalization layer of LeNet-5 learned to use")
show_figure(fig, f"{out}/switch_weights.png")

# %% SSN's weights as the radius of SparsestMax grows: each layer ends one-hot
trace = store["sparse_switch"]["trace"]
layers_traced = list(trace[0]["weights"]) if trace else []
fig, axes = plt.subplots(1, max(len(layers_traced), 1), figsize=(14, 3.4), sharey=True)
for ax, layer in zip(np.atleast_1d(axes), layers_traced):
    radius = [t["radius"] for t in trace]
    weights = np.array([t["weights"][layer][0] for t in trace])
    names = ("IN", "LN", "BN") if weights.shape[1] == 3 else ("LN", "BN")
    for k, name in enumerate(names):
        ax.plot(radius, weights[:, k], label=name)
    ax.set(xlabel="SparsestMax radius", title=layer.split(" ")[0])
np.atleast_1d(axes)[0].set_ylabel("mean weight")
np.atleast_1d(axes)[0].legend(fontsize=7)
show_figure(fig, f"{out}/ssn_radius.png")

# %% 4. BN's backward is a projection: dl/dx = (γ/σ)(I − P)·dl/dy, P = (11ᵀ + x̂x̂ᵀ)/m
m = 8
v = np.random.default_rng(args.seed + 1).standard_normal(m) * 3 + 1     # one channel's m values
g = np.random.default_rng(args.seed + 2).standard_normal(m)             # dl/dy
geometry = {}
for eps in (0.0, 1e-5, 1e-1):
    t = md.Tensor(v[:, None], requires_grad=True)
    N.normalize(t, (0,), eps=eps).backward(g[:, None])                  # γ = 1
    dx = md.backend.as_numpy(t.grad)[:, 0]
    x_hat = (v - v.mean()) / np.sqrt(v.var() + eps)
    P = (np.ones((m, m)) + np.outer(x_hat, x_hat)) / m
    sigma = np.sqrt(v.var() + eps)
    geometry[eps] = {"|P² − P|": float(np.abs(P @ P - P).max()),
                     "|dl/dx − (I − P)dl/dy/σ|": float(np.abs(dx - (np.eye(m) - P) @ g / sigma).max()),
                     "1·dl/dx": float(dx.sum()), "x̂·dl/dx": float(x_hat @ dx)}
    print(f"ε = {eps:g}: " + ", ".join(f"{k} = {val:.1e}" for k, val in geometry[eps].items()))
print("dl/dx = (I − P)·dl/dy/σ holds for every ε, and dl/dx is always orthogonal to 1. P is a projector\n"
      "exactly when ε = 0 (then ‖x̂‖² = m); with ε > 0, ‖x̂‖² = m·σ²/(σ² + ε) < m, so P² ≠ P and dl/dx keeps\n"
      "a small component along x̂, both of the order ε/σ².")
results["geometry"] = {str(k): val for k, val in geometry.items()}

# %% For m = 3 in 3-D: dl/dx is dl/dy with its components along 1 and x̂ removed
v3 = np.array([0.5, 2.0, 3.5])
g3 = np.array([1.0, -0.4, 0.8])
t = md.Tensor(v3[:, None], requires_grad=True)
N.normalize(t, (0,), eps=0.0).backward(g3[:, None])
dx3 = md.backend.as_numpy(t.grad)[:, 0]
xh3 = (v3 - v3.mean()) / v3.std()
fig = plt.figure(figsize=(6, 5))
ax = fig.add_subplot(projection="3d")
for vec, label, color in ((np.ones(3) / np.sqrt(3), "1 (normalized)", "gray"), (xh3 / np.sqrt(3), "x̂ (normalized)", "tab:green"),
                          (g3, "dl/dy", "tab:blue"), (dx3 * v3.std(), "σ·dl/dx = (I − P)dl/dy", "tab:red")):
    ax.quiver(0, 0, 0, *vec, color=color, label=label, arrow_length_ratio=0.1)
normal = np.cross(np.ones(3), xh3)
s = np.linspace(-1, 1, 2)
ax.plot(*(np.outer(s, normal / np.linalg.norm(normal) * 1.5).T), "r:", lw=1, label="the one direction orthogonal to 1 and x̂")
ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), zlim=(-1.5, 1.5), xlabel="x₁", ylabel="x₂", zlabel="x₃",
       title="m = 3: dl/dx lies on the line orthogonal to 1 and x̂")
ax.legend(fontsize=7)
show_figure(fig, f"{out}/bn_backward_geometry.png")
results["m3"] = {"dl/dx": dx3.tolist(), "1·dl/dx": float(dx3.sum()), "x̂·dl/dx": float(xh3 @ dx3)}

# %% 5. The numbers, written down
write_json(f"{out}/results.json", results)
write_text(f"{out}/summary.md", "# The normalizer family\n\n"
           "## Meta Normalization vs the layers (max |difference|)\n\n" +
           "\n".join(f"- {k}: {v:.1e}" for k, v in results["meta_normalization_max_difference"].items()) +
           f"\n\n## Switchable and Sparse Switchable Norm in LeNet-5 ({dataset}, {len(train)} images, "
           f"{args.epochs} epochs)\n\n{table}\n\nTest accuracy: SN {store['switch']['test_acc']:.2f}%, "
           f"SSN {store['sparse_switch']['test_acc']:.2f}%. The seed's ImageNet ResNet-50 top-1: " +
           ", ".join(f"{k} {v}" for k, v in SEED_IMAGENET.items()) +
           " (another task and scale).\n\n## BN's backward as a projection\n\n" +
           "\n".join(f"- ε = {k}: " + ", ".join(f"{kk} = {vv:.1e}" for kk, vv in val.items())
                     for k, val in results["geometry"].items()) +
           "\n\n![cube](cube.png) ![weights](switch_weights.png) ![radius](ssn_radius.png) "
           "![geometry](bn_backward_geometry.png)\n")
print(f"plots, results.json and summary.md in {out}/")
