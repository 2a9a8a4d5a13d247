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
# # Why BatchNorm helps: a smoother loss landscape
#
# The course's slides (decks 001 and 003) present Santurkar et al. (2018): BN does not help by
# reducing "internal covariate shift" (the movement of each layer's input
# distribution), but by making the loss landscape smoother. Two experiments:
#
# 1. **The landscape along the gradient** (the paper's Figure 4). Every few steps,
#    on a fixed batch, step from $w$ along $-g = -\nabla L(w)$ by
#    $\eta \in \{0.5, 1, 2, 4\}\times$ the learning rate and record
#    the *loss range* $\max_\eta L(w - \eta g) - \min_\eta L(w - \eta g)$,
#    the *gradient predictiveness* $\max_\eta \lVert \nabla L(w - \eta g) - g \rVert$,
#    and the *effective β-smoothness* $\max_\eta \lVert \nabla L(w - \eta g) - g\rVert / \lVert \eta g \rVert$.
#    Smaller is smoother.
# 2. **Noisy BN** (the paper's Figure 2): after every BN, noise $y \cdot s + m$ per
#    channel, with $s \sim U(0.5, 1.5)\,\sigma_t$ and $m \sim \mathcal N(\mu_t, 1)$, where
#    $\mu_t \sim U(-1, 1)$ and $\sigma_t \sim U(0.5, 2)$ are drawn anew every step.
#    The layers' input distributions then move a lot from step to step; the paper
#    (its Figure 2, VGG on CIFAR-10) reports that noisy BN trains to about the accuracy
#    of standard BN. Santurkar et al. find BN lowers all three measures of experiment 1.

# %%
"""Loss-landscape smoothness with and without BN, and noisy BN (Santurkar et al.; the course's slides, decks 001, 003).

    python -m lessons.smoothness            # wall time recorded in docs/results/smoothness.md
    python -m lessons.smoothness --quick    # seconds, synthetic images
"""
import matplotlib.pyplot as plt
import numpy as np

import minidl as md
import minidl.functional as F
from minidl.ops.norm import channel_shape
from lessons.chapter import integer_ticks, plain_log_ticks, say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import COMPARISON_HEADER, MIN_SEEDS, carried, compare, comparison_rows, verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, in_mode, train_classifier

TEST = 2000
STEP_MULTIPLES = [0.5, 1, 2, 4]        # step sizes along the gradient, × the learning rate

s = settings("smoothness", dict(train_size=10000, epochs=2, batch_size=64, lrs=[0.01, 0.05], probe_every=25,
                                probe_batch=256, noise_seeds=3, seed=0),
             quick=dict(train_size=256, epochs=1, batch_size=32, probe_every=4, probe_batch=64, noise_seeds=2),
             doc=__doc__,
             help=dict(probe_every="training steps between landscape probes",
                       noise_seeds="random seeds per noisy-BN variant (seed, seed + 1, ...)",
                       probe_batch="the fixed batch the landscape is measured on"), runs=True)
batch, probe_every, probe_batch = s.batch_size, s.probe_every, s.probe_batch
dataset, train, test = fashion_mnist(s.quick, s.train_size, 200 if s.quick else TEST, s.seed)
x_probe, y_probe = (md.Tensor(a) for a in train.get_batch(np.arange(probe_batch)))
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), epochs=s.epochs, batch_size=batch,
                                     lrs=s.lrs, noise_seeds=s.noise_seeds, seed=s.seed,
                                     quick=s.quick), fresh=s.fresh)

# %% [markdown]
# ## 1. The landscape along the gradient, measured without moving the model

# %%
def gradient(model):
    """(loss, flattened gradient) on the probe batch; BN uses the batch's statistics
    as in training, and its running statistics stay untouched."""
    model.zero_grad()
    loss = F.cross_entropy(model(x_probe), y_probe)
    loss.backward()
    return loss.item(), np.concatenate([md.backend.as_numpy(p.grad).ravel() for p in model.parameters()])


def landscape(model, lr):
    """Step along −g by η = multiple·lr: the loss range, max ‖g(w − ηg) − g(w)‖ and max ‖Δg‖/‖Δw‖."""
    with md.frozen_state():
        loss0, g0 = gradient(model)
        saved = [p.data.copy() for p in model.parameters()]
        losses, changes, betas = [loss0], [], []
        for multiple in STEP_MULTIPLES:
            eta, offset = multiple * lr, 0
            for p in model.parameters():
                gp = g0[offset:offset + p.size].reshape(p.shape)
                p.data = p.data - md.backend.to_device((eta * gp).astype(p.dtype), p.device)
                offset += p.size
            loss, g = gradient(model)
            losses.append(loss)
            changes.append(float(np.linalg.norm(g - g0)))
            betas.append(changes[-1] / float(eta * np.linalg.norm(g0)))
            for p, data in zip(model.parameters(), saved):
                p.data = data.copy()
        model.zero_grad()
    return {"loss_range": max(losses) - min(losses), "gradient_change": max(changes),
            "beta_smoothness": max(betas)}


def train_probed(label, lr):
    """LeNet-5 with or without BN at this rate, the landscape probed every few steps."""
    md.manual_seed(s.seed)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=None if label == "no BN" else "batch")
    probes = []

    def after_step(step, model):
        if step % probe_every == 0:
            probes.append(dict(step=step, **landscape(model, lr)))
    losses = train_classifier(model, train, s.epochs, batch, lr, s.seed, desc=f"{label}/{lr}", after_step=after_step)
    return {"probes": probes, "test_acc": evaluate(model, test)[1] if np.isfinite(losses[-1]) else None,
            "losses": losses}


run_all({f"{label}/{lr}": (train_probed, (label, lr)) for lr in s.lrs for label in ("no BN", "BN")},
        store, s.workers, s.scheduler, desc="smoothness");

# %% [markdown]
# The three measures over training (the paper's Figure 4). Each point is the
# largest value over the four step sizes η at that step; the vertical axes are
# logarithmic.

# %%
measures = [("loss_range", "loss range along −g", "max − min loss (nats)"),
            ("gradient_change", "gradient predictiveness", "max ‖g(w − ηg) − g(w)‖"),
            ("beta_smoothness", "effective β-smoothness", "max ‖Δg‖ / ‖Δw‖")]
fig, axes = plt.subplots(len(s.lrs), 3, figsize=(14, 3.4 * len(s.lrs)), squeeze=False)
for row, lr in enumerate(s.lrs):
    for col, (measure, title, unit) in enumerate(measures):
        ax = axes[row][col]
        for label, color, marker in (("no BN", "tab:gray", "o"), ("BN", "tab:red", "s")):
            probes = store[f"{label}/{lr}"]["probes"]
            ax.semilogy([p["step"] for p in probes], [p[measure] for p in probes], marker + "-", ms=3,
                        color=color, label=label)
        ax.set(title=f"{title}, lr {lr}", xlabel="training step", ylabel=unit)
        integer_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.legend(fontsize=10)
landscape_png = show_figure(fig, f"{s.out}/landscape.png")

median = lambda key, m: float(np.median([p[m] for p in store[key]["probes"]]))
acc = lambda key: "diverged" if store[key]["test_acc"] is None else f"{store[key]['test_acc']:.2f}"
table = show_table(["model", "lr", "test accuracy (%)"] + [f"median {title}" for _, title, _ in measures],
                   [[label, lr, acc(f"{label}/{lr}")] + [f"{median(f'{label}/{lr}', m):.3g}" for m, _, _ in measures]
                    for lr in s.lrs for label in ("no BN", "BN")])


# %% [markdown]
# ## 2. Noisy BN: does accuracy survive distributions that move every step?
#
# The noise is on only in training. At test time every BN normalizes with its
# running statistics, and those were gathered while the noise of the layers
# before it was on: the BN after conv 2 averaged the statistics of inputs that
# were shifted and scaled at random, which the test inputs never are. So we
# evaluate noisy BN twice: **as trained** (its running statistics as they are)
# and **re-estimated**: the weights frozen, the noise off, every BN in training
# mode over one pass of the training batches, its running mean and variance the
# cumulative average over those batches (batch $k$ weighs $1/k$, PyTorch's
# `momentum=None`; the variance unbiased, as PyTorch stores it). Standard BN gets
# the same re-estimation, to show what re-estimating alone changes. Each variant
# is trained from several random seeds, so a difference is compared with the
# spread between seeds (Welch's t-test, Holm's correction over the comparisons).

# %%
class NoisyBN(md.nn.Module):
    """A BN layer followed, in training, by per-channel noise y·s + m whose own
    distribution changes every step (see the module docstring). The noise is
    drawn in the input's dtype; ``noise = False`` switches it off."""

    def __init__(self, bn):
        super().__init__()
        self.bn, self.noise = bn, True

    def forward(self, x):
        y = self.bn(x)
        if not (self.training and self.noise):
            return y
        rng, shape = md.backend.rng(), channel_shape(y.shape)
        mu_t, sigma_t = rng.uniform(-1, 1), rng.uniform(0.5, 2)
        scale = rng.uniform(0.5, 1.5, shape) * sigma_t
        shift = rng.normal(mu_t, 1.0, shape)
        return y * md.Tensor(scale.astype(y.dtype)) + md.Tensor(shift.astype(y.dtype))


def noisy_lenet(seed):
    md.manual_seed(seed)
    return md.models.LeNet5(in_channels=1, input_size=28,
                            norm=lambda c, d: NoisyBN(md.nn.BatchNorm(c, d)))


def reestimate_running_stats(model, data):
    """Every BN's running statistics recomputed with the weights frozen and the
    noise off: training mode over one pass of ``data`` in batches, each BN's
    running values the cumulative average (decay (k − 1)/k at batch k)."""
    bns = [m for m in model.modules() if getattr(m, "track_running_stats", False)]
    noisy = [m for m in model.modules() if isinstance(m, NoisyBN)]
    decays = [bn.decay for bn in bns]
    try:
        for m in noisy:
            m.noise = False
        with in_mode(model, True), md.no_grad():
            for k, (x, _) in enumerate(md.data.DataLoader(data, batch, drop_last=True), start=1):
                for bn in bns:
                    bn.decay = (k - 1) / k
                model(x)
    finally:
        for m in noisy:
            m.noise = True
        for bn, decay in zip(bns, decays):
            bn.decay = decay


lr = s.lrs[0]
noise_seeds = [s.seed + k for k in range(s.noise_seeds)]
def train_noise(label, seed):
    """Standard or noisy BN at the first rate: test accuracy with the running statistics
    as trained and re-estimated, and (first seed) snapshots of what the second conv receives."""
    if label == "noisy BN":
        model = noisy_lenet(seed)
    else:
        md.manual_seed(seed)
        model = md.models.LeNet5(in_channels=1, input_size=28, norm="batch")
    snapshots = []

    def after_step(step, model):
        if seed == s.seed and step % probe_every == 0:
            with md.no_grad(), md.frozen_state():   # after BN, noise, ReLU and pooling, in training mode
                h = x_probe
                for layer in list(model.features.children())[:4]:
                    h = layer(h)
            snapshots.append({"step": step, "values": h.numpy()[:, 0].ravel()[::7].tolist()})
    train_classifier(model, train, s.epochs, batch, lr, seed, desc=f"{label}, seed {seed}", after_step=after_step)
    as_trained = evaluate(model, test)[1]
    reestimate_running_stats(model, train)
    return {"test_acc": as_trained, "test_acc_reestimated": evaluate(model, test)[1], "snapshots": snapshots}


run_all({f"noise/{label}/{seed}": (train_noise, (label, seed)) for seed in noise_seeds
         for label in ("standard BN", "noisy BN")}, store, s.workers, s.scheduler, desc="noisy BN");

# %%
noise = {f"{label}, {way}": [store[f"noise/{label}/{seed}"][key] for seed in noise_seeds]
         for label in ("standard BN", "noisy BN")
         for way, key in (("as trained", "test_acc"), ("re-estimated", "test_acc_reestimated"))}
show_table(["test accuracy (%)"] + [f"seed {seed}" for seed in noise_seeds] + ["mean"],
           [[name] + [f"{a:.2f}" for a in accs] + [f"{np.mean(accs):.2f}"] for name, accs in noise.items()])
pairs = [("noisy BN, as trained", "standard BN, as trained"),
         ("noisy BN, re-estimated", "standard BN, re-estimated"),
         ("noisy BN, re-estimated", "noisy BN, as trained")]
comparisons = compare(noise, pairs)
all_accuracies = [a for accs in noise.values() for a in accs]
noise_table = show_table(COMPARISON_HEADER + ["smallest resolvable"],
                         [row + [carried(c, f"{c.smallest:.2f}")] for row, c in
                          zip(comparison_rows(comparisons, s.quick, all_accuracies), comparisons)],
                         title=f"Differences of mean test accuracy (points) over {len(noise_seeds)} seeds")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
for ax, label in zip(axes, ("standard BN", "noisy BN")):
    snaps = store[f"noise/{label}/{s.seed}"]["snapshots"]
    ax.violinplot([snap["values"] for snap in snaps], positions=[snap["step"] for snap in snaps],
                  widths=probe_every * 0.8, showmedians=True)
    ax.set(title=f"{label}: channel 0 entering conv 2 (seed {s.seed})", xlabel="training step")
    integer_ticks(ax.xaxis)
axes[0].set_ylabel("activation value")
noisy_png = show_figure(fig, f"{s.out}/noisy_bn.png")

# %% [markdown]
# ## 3. Beside the paper's claims
#
# Santurkar et al.: with BN, all three measures are lower (a smoother landscape),
# and noisy BN trains to about standard BN's accuracy. Ours, from the runs above
# (the landscape from one seed, median over the probes of each run):

# %%
def lower_with_bn(measure):
    return all(median(f"BN/{lr}", measure) < median(f"no BN/{lr}", measure) for lr in s.lrs)


measured = ("Median over training, no BN vs BN (one seed): " + "; ".join(
    f"{title}: " + ", ".join(f"lr {lr}: {median(f'no BN/{lr}', m):.3g} vs {median(f'BN/{lr}', m):.3g}" for lr in s.lrs)
    for m, title, _ in measures) + ".")
lowered = [title for m, title, _ in measures if lower_with_bn(m)]
smooth_text = ("**Smoothness:** " + (
    "agrees with the paper: BN lowers all three measures at every rate." if len(lowered) == len(measures) else
    f"agrees with the paper only in part: BN lowers {', '.join(lowered) or 'none of them'} at every rate, "
    f"not {', '.join(t for _, t, _ in measures if t not in lowered)}."))
trained, fixed, artifact = comparisons
gap = -trained.difference
def points(c):
    welch = f"95 % interval {c.low:+.1f} to {c.high:+.1f}, Holm p {c.p_holm:.3f}"
    return f"{c.difference:+.1f} points ({carried(c, welch)})"
def against(c, what):
    """What one comparison with standard BN shows, beside the paper's report."""
    if c.seeds < MIN_SEEDS:
        return f"not resolved: {len(noise_seeds)} seeds cannot resolve a difference (Welch's test needs ≥ {MIN_SEEDS})"
    if not c.resolved:
        return (f"not resolved: with this spread between seeds, {len(noise_seeds)} seeds resolve only differences "
                f"over {c.smallest:.1f} points, so they do not show that noisy BN costs accuracy {what}")
    if c.difference < 0:
        return f"resolved: noisy BN costs accuracy {what}, where the paper reports about standard BN's accuracy"
    return f"resolved: noisy BN is above standard BN {what}"


noise_text = (f"**Noisy BN** (mean of {len(noise_seeds)} seeds, lr {lr}): as trained, {points(trained)} against "
              f"standard BN, {against(trained, 'as trained')}. With every BN's running statistics re-estimated with "
              f"the noise off, {points(fixed)} against standard BN re-estimated, "
              f"{against(fixed, 'with the statistics re-estimated')}. Re-estimating moves noisy BN by "
              f"{points(artifact)}" + (f", {100 * artifact.difference / gap:.0f} % of its gap as trained."
                                      if trained.resolved and artifact.resolved and gap > 0 else "."))
finding = verdict(smooth_text + " " + noise_text,
                  [store[k]["test_acc"] for k in store.runs if "test_acc" in store[k]] + all_accuracies, s.quick)
say(measured + "\n\n" + finding)

results = {"dataset": dataset, "lr_noise": lr, "noise_seeds": noise_seeds,
           "noisy_bn_test_acc": {name: dict(zip(map(str, noise_seeds), accs)) for name, accs in noise.items()},
           "noisy_bn_comparisons": [c.as_dict() for c in comparisons],
           "median_measures": {f"{label}/{lr}": {m: median(f"{label}/{lr}", m) for m, _, _ in measures}
                               for lr in s.lrs for label in ("no BN", "BN")},
           "runs": store.runs}
write_json(f"{s.out}/results.json", results)
write_text(f"{s.out}/summary.md", summary_header(s, f"Loss-landscape smoothness with and without BN ({dataset})") +
           f"{table}\n\n{noise_table}\n\n{measured}\n\n{finding}\n\n"
           f"![landscape]({landscape_png}) ![noisy BN]({noisy_png})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/smoothness.md, which the README quotes
