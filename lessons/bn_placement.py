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
# # BatchNorm before or after the activation
#
# The original BN paper puts BN between the linear map and the nonlinearity,
# $a = f(\mathrm{BN}(Wx))$; many implementations put it after,
# $a = \mathrm{BN}(f(Wx))$. The course's slides, deck 003, report a CaffeNet on
# ImageNet at 128 px
# (from ducha-aiki's caffenet-benchmark) with both placements, with and without BN's scale and shift $\gamma, \beta$,
# and (with BN after the activation) with other activations or none:
#
# | deck 003, top-1 | Before | Before + γβ | After | After + γβ |
# |---|---|---|---|---|
# | ImageNet | 47.4 % | 47.8 % | 49.9 % | 49.3 % |
#
# | deck 003, BN after | ReLU | sigmoid | tanh | no activation |
# |---|---|---|---|---|
# | ImageNet | 49.9 % | 47.5 % | 44.8 % | 38.4 % |
#
# The second table's ReLU column is the first table's "After" (the same
# experiment, 0.499 in both), so the activations are compared with **After**.
# The slides give one run per variant, so they cannot say which of their
# differences a rerun with another random seed would keep.
# Here: LeNet-5 on Fashion-MNIST, each variant from 10 random seeds, mean ± std
# of the test accuracy, and which of our differences the spread over seeds can
# resolve.

# %%
"""BatchNorm before or after the activation, with and without γ/β, and with
ReLU, sigmoid, tanh or no activation (the course's slides, deck 003).

    python -m lessons.bn_placement            # 70 runs; wall time recorded in docs/results/bn_placement.md
    python -m lessons.bn_placement --quick    # seconds, synthetic images
"""
import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import ALPHA, COMPARISON_HEADER, MIN_SEEDS, carried, compare, comparison_rows, learned, verdict
from lessons.runs import RunStore, run_all, run_identity
from lessons.training import evaluate, fashion_mnist, train_classifier

TEST = 2000
VARIANTS = {   # variant: (where BN goes, keeps γ and β, activation)
    "Before": ("before", False, "relu"),
    "Before + γβ": ("before", True, "relu"),
    "After": ("after", False, "relu"),
    "After + γβ": ("after", True, "relu"),
    "After, sigmoid": ("after", False, "sigmoid"),
    "After, tanh": ("after", False, "tanh"),
    "After, no activation": ("after", False, None),
}
SLIDE_TABLE = {   # deck 003: CaffeNet, ImageNet at 128 px, top-1 accuracy (%)
    "Before": 47.4, "Before + γβ": 47.8, "After": 49.9, "After + γβ": 49.3,
    "After, sigmoid": 47.5, "After, tanh": 44.8, "After, no activation": 38.4}

s = settings("bn_placement", dict(train_size=10000, epochs=2, batch_size=64, lr=0.02, seeds=10),
             quick=dict(train_size=400, epochs=1, batch_size=32, seeds=2), doc=__doc__,
             help=dict(seeds="runs per variant, random seeds 0, 1, …"), runs=True)
dataset, train, test = fashion_mnist(s.quick, s.train_size, 200 if s.quick else TEST)
store = RunStore(s.out, run_identity(dataset=dataset, train=len(train), epochs=s.epochs, batch_size=s.batch_size,
                                     lr=s.lr, seeds=s.seeds, quick=s.quick, variants=VARIANTS), fresh=s.fresh)

# %% [markdown]
# ## 1. LeNet-5 with BN placed before or after its activation

# %%
def lenet5(placement, affine, activation):
    """conv 5x5→6 / pool / conv 5x5→16 / pool / fc 120 / fc 84 / fc 10 with a BN
    at every hidden layer, placed before or after the activation."""
    act = {"relu": md.nn.ReLU, "sigmoid": md.nn.Sigmoid, "tanh": md.nn.Tanh, None: md.nn.Identity}[activation]

    def block(layer, features, num_dims):
        bn = (md.nn.BatchNorm2d if num_dims == 4 else md.nn.BatchNorm1d)(features, affine=affine)
        return [layer, bn, act()] if placement == "before" else [layer, act(), bn]
    return md.nn.Sequential(
        *block(md.nn.Conv2d(1, 6, 5, padding=2), 6, 4), md.nn.MaxPool2d(2),
        *block(md.nn.Conv2d(6, 16, 5), 16, 4), md.nn.MaxPool2d(2), md.nn.Flatten(),
        *block(md.nn.Linear(400, 120), 120, 2), *block(md.nn.Linear(120, 84), 84, 2),
        md.nn.Linear(84, 10))


print("After + γβ, layer by layer: " + " → ".join(type(layer).__name__ for layer in lenet5("after", True, "relu")))

# %% [markdown]
# ## 2. Every variant from the same random seeds

# %%
def train_variant(name, seed):
    """One variant from one seed: its test accuracy and final training loss."""
    md.manual_seed(seed)
    model = lenet5(*VARIANTS[name])
    losses = train_classifier(model, train, s.epochs, s.batch_size, s.lr, seed, desc=f"{name}/{seed}")
    return {"test_acc": evaluate(model, test)[1], "final_train_loss": float(np.mean(losses[-20:]))}


run_all({f"{name}/{seed}": (train_variant, (name, seed)) for name in VARIANTS for seed in range(s.seeds)},
        store, s.workers, s.scheduler, desc="bn_placement")
summary = {}
for name in VARIANTS:
    accs = np.array([store[f"{name}/{k}"]["test_acc"] for k in range(s.seeds)])
    summary[name] = {"mean": float(accs.mean()), "std": float(accs.std(ddof=1)), "runs": accs.tolist()}
table = show_table(["variant", f"ours: {dataset}, test accuracy, mean ± std over {s.seeds} seeds",
                    "deck 003: ImageNet top-1"],
                   [[n, f"{summary[n]['mean']:.2f} ± {summary[n]['std']:.2f}%", f"{SLIDE_TABLE[n]:.1f}%"]
                    for n in VARIANTS])

# %% [markdown]
# ## 3. Which differences the spread over seeds resolves
#
# Two variants' mean accuracies always differ a little, even if the placement
# made no difference at all: each run starts from other random weights and sees
# the images in another order. A difference is **resolved** when that spread
# alone would rarely produce it. We test each of the seven differences with
# Welch's t-test (two samples of seeds, each with its own spread):
#
# $$t = \frac{\bar a - \bar b}{\sqrt{s_a^2/n_a + s_b^2/n_b}},$$
#
# read against Student's t distribution (Welch's degrees of freedom) for a
# p-value: the chance that seed-to-seed spread alone gives a difference at least
# this large. Because we make seven comparisons, one of them would come out
# "significant" by luck far more often than 5 % of the time, so Holm's
# correction raises the p-values: sort them, multiply the smallest by 7, the
# next by 6, …, never letting one fall below the one before. A difference is
# resolved when its corrected p-value is under α = 0.05. Only resolved
# differences are compared with the sign of the slides' difference.
#
# **Why 3 seeds were not enough.** This lesson used to run 3 seeds per variant
# and call a difference resolved when it exceeded twice its standard error. The
# same 21 runs were redone in PyTorch: the same arithmetic, only the rounding
# of floating-point numbers differed, a change as small as a computer can make.
# PyTorch's runs gave a different verdict on 3 of the 7 differences (one
# example: "After + γβ − Before + γβ" was −2.47 ± 0.96 points, resolved, in
# minidl and +0.23 ± 1.28, not resolved, in PyTorch). If rounding alone can
# flip a verdict, that verdict was describing the luck of the three seeds, not
# the placement of BN. Three seeds also give a poor estimate of the spread
# itself, and "twice the standard error" pretends the estimate is exact: with
# about 4 degrees of freedom, a difference of 2 standard errors happens by
# chance about 12 % of the time, not 5 %; and over seven comparisons at once,
# one of them passes by luck much more often still. Ten seeds shrink the
# standard error by $\sqrt{10/3} \approx 1.8$, and Welch with Holm's correction
# accounts for both the few seeds and the seven comparisons.

# %%
samples = {name: summary[name]["runs"] for name in VARIANTS}
pairs = [("After", "Before"), ("After + γβ", "Before + γβ"), ("Before + γβ", "Before"),
         ("After + γβ", "After"), ("After", "After, sigmoid"), ("After", "After, tanh"),
         ("After", "After, no activation")]
comparisons = compare(samples, pairs)
accuracies = [a for runs in samples.values() for a in runs]
# no verdict from a smoke test, from models that learned nothing, or from too few seeds
sure = not s.quick and learned(accuracies) and s.seeds >= MIN_SEEDS
rows, lines = [], []
for c, row in zip(comparisons, comparison_rows(comparisons, s.quick, accuracies)):
    slide_d = SLIDE_TABLE[c.a] - SLIDE_TABLE[c.b]
    sign = "–" if not (sure and c.resolved) else ("same sign" if np.sign(c.difference) == np.sign(slide_d)
                                                  else "opposite sign")
    rows.append(row + [carried(c, f"{c.smallest:.2f}"), f"{slide_d:+.1f}", sign])
    welch = f"95 % interval [{c.low:+.2f}, {c.high:+.2f}], p = {c.p:.3f}, after Holm p = {c.p_holm:.3f}"
    lines.append(f"- {c.a} − {c.b}: ours {c.difference:+.2f} points, {carried(c, welch)}" +
                 (f" ({'resolved' if c.resolved else 'not resolved'})" if sure else "") +
                 f"; deck 003: {slide_d:+.1f} points")
comparison_table = show_table(COMPARISON_HEADER + ["smallest resolvable", "deck 003", "sign vs deck 003"], rows,
                              title=f"Differences of mean test accuracy (points), {s.seeds} seeds per variant, "
                                    f"Welch's t-test with Holm's correction over the seven, α = {ALPHA}")
smallest = [c.smallest for c in comparisons]
resolved = [c for c in comparisons if c.resolved]
agree = [c for c in resolved if np.sign(c.difference) == np.sign(SLIDE_TABLE[c.a] - SLIDE_TABLE[c.b])]
reach = verdict(
    (f"With {s.seeds} seeds per variant, the smallest difference these seeds could resolve (under Holm's strictest "
     f"level, α/7) is {min(smallest):.2f} points for the pair with the least spread and {max(smallest):.2f} for the "
     f"one with the most (the \"smallest resolvable\" column). " if s.seeds >= MIN_SEEDS else
     f"With {s.seeds} seeds per variant no difference can be resolved: Welch's test needs ≥ {MIN_SEEDS} seeds. ") +
    (f"None of the {len(comparisons)} differences is resolved: at this spread, these seeds cannot tell the "
     "variants apart." if not resolved else
     f"{len(resolved)} of the {len(comparisons)} differences are resolved; of those, {len(agree)} have the sign "
     "of deck 003's.") +
    ("" if len(agree) == len(comparisons) else
     " Where ours are unresolved or disagree with the slides, possible reasons (not measured here): a few "
     "epochs on a small subset, where every variant is still far from what it would reach; Fashion-MNIST at "
     "28×28 is far easier than ImageNet, so a less expressive network loses little; and LeNet-5's max-pooling "
     "is itself a nonlinearity, so 'no activation' is not a linear network here."), accuracies, s.quick)
say(reach)

# %% [markdown]
# ## 4. The picture: every run, and each variant's mean ± std

# %%
fig, ax = plt.subplots(figsize=(10, 4.5))
names = list(VARIANTS)
ax.errorbar(range(len(names)), [summary[n]["mean"] for n in names], yerr=[summary[n]["std"] for n in names],
            fmt="o", capsize=4, label="ours (mean ± std over seeds)")
for k, n in enumerate(names):
    ax.plot([k + 0.15] * s.seeds, summary[n]["runs"], ".", color="gray", alpha=0.6,
            label="one seed's run" if k == 0 else None)
ax.set_xticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=10)
ax.set(ylabel=f"test accuracy on {dataset} (%)", xlabel="variant (where BN goes, γβ, activation)",
       title=f"BatchNorm placement and activation: {s.seeds} seeds per variant")
ax.legend(fontsize=10)
picture = show_figure(fig, f"{s.out}/placement.png")

# %%
write_json(f"{s.out}/results.json", {
    "dataset": dataset, "seeds": list(range(s.seeds)), "alpha": ALPHA,
    "test_accuracy": samples, "summary": summary, "slide_table": SLIDE_TABLE,
    "comparisons": [c.as_dict() for c in comparisons]})
write_text(f"{s.out}/summary.md", summary_header(s, f"BatchNorm before or after the activation ({dataset})") +
           f"{len(train)} training images, {s.epochs} epochs, batch {s.batch_size}, SGD lr {s.lr} with momentum 0.9 "
           f"and weight decay 5e-4, {s.seeds} seeds per variant.\n\n{table}\n\n{comparison_table}\n\n" +
           "\n".join(lines) + f"\n\n{reach}\n\n![placement]({picture})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/bn_placement.md, which the README quotes
