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
# # BatchNorm before or after the activation
#
# The original BN paper puts BN between the linear map and the nonlinearity,
# $a = f(\mathrm{BN}(Wx))$; many implementations put it after,
# $a = \mathrm{BN}(f(Wx))$. Seed `003` reports a CaffeNet on ImageNet at 128 px
# with both placements, with and without BN's scale and shift $\gamma, \beta$,
# and (with BN after the activation) with other activations or none:
#
# | seed 003, top-1 | Before | Before + γβ | After | After + γβ |
# |---|---|---|---|---|
# | ImageNet | 47.4 % | 47.8 % | 49.9 % | 49.3 % |
#
# | seed 003, BN after | ReLU | sigmoid | tanh | no activation |
# |---|---|---|---|---|
# | ImageNet | 49.9 % | 47.5 % | 44.8 % | 38.4 % |
#
# The second table's ReLU column is the first table's "After" (the same
# experiment, 0.499 in both), so the activations are compared with **After**.
# Here: LeNet-5 on Fashion-MNIST, each variant from several seeds, mean ± std
# of the test accuracy, and which of our differences the spread can resolve.

# %%
"""BatchNorm before or after the activation, with and without γ/β, and with
ReLU, sigmoid, tanh or no activation (seed 003).

    python -m lessons.bn_placement            # 21 runs, about 1.3 minutes on 2 cores (2.6 with --workers 1)
    python -m lessons.bn_placement --quick    # seconds, synthetic images
"""
import math

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons.chapter import say, show_figure, show_table, write_json, write_text
from lessons.settings import settings
from lessons.verdicts import learned, verdict
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
SLIDE_TABLE = {   # seed 003: CaffeNet, ImageNet at 128 px, top-1 accuracy (%)
    "Before": 47.4, "Before + γβ": 47.8, "After": 49.9, "After + γβ": 49.3,
    "After, sigmoid": 47.5, "After, tanh": 44.8, "After, no activation": 38.4}

s = settings("bn_placement", dict(train_size=10000, epochs=2, batch_size=64, lr=0.02, seeds=3),
             quick=dict(train_size=400, epochs=1, batch_size=32, seeds=2), doc=__doc__,
             help=dict(seeds="runs per variant"), runs=True)
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


print(lenet5("after", True, "relu"))

# %% [markdown]
# ## 2. Every variant from the same seeds

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
                    "seed 003: ImageNet top-1"],
                   [[n, f"{summary[n]['mean']:.2f} ± {summary[n]['std']:.2f}%", f"{SLIDE_TABLE[n]:.1f}%"]
                    for n in VARIANTS])

# %% [markdown]
# ## 3. Which differences the spread resolves
#
# A difference of two means is *resolved* when it exceeds twice its standard
# error, $2\sqrt{s_a^2/n + s_b^2/n}$ over $n$ seeds. Only resolved differences are
# compared with the seed's sign.

# %%
def resolved(a, b):
    se = math.sqrt(summary[a]["std"] ** 2 / s.seeds + summary[b]["std"] ** 2 / s.seeds)
    d = summary[a]["mean"] - summary[b]["mean"]
    return d, se, abs(d) > 2 * se


comparisons = [("After", "Before"), ("After + γβ", "Before + γβ"), ("Before + γβ", "Before"),
               ("After + γβ", "After"), ("After", "After, sigmoid"), ("After", "After, tanh"),
               ("After", "After, no activation")]
rows, lines = [], []
for a, b in comparisons:
    d, se, ok = resolved(a, b)
    slide_d = SLIDE_TABLE[a] - SLIDE_TABLE[b]
    sign = "—" if not ok else ("same sign" if np.sign(d) == np.sign(slide_d) else "opposite sign")
    rows.append([f"{a} − {b}", f"{d:+.2f} ± {se:.2f}", "yes" if ok else "no", f"{slide_d:+.1f}", sign])
    lines.append(f"- {a} − {b}: ours {d:+.2f} ± {se:.2f} points ({'resolved' if ok else 'not resolved'} "
                 f"at 2 standard errors); the seed {slide_d:+.1f} points")
accuracies = [v["mean"] for v in summary.values()]
if s.quick or not learned(accuracies):
    rows = [r[:4] + [""] for r in rows]          # no verdict from models that learned nothing
comparison_table = show_table(["difference (points)", "ours", "resolved?", "seed 003", "sign vs the seed"], rows)
why = verdict("Where ours disagree with the seed, the likeliest reasons: a few epochs on a small subset, where "
              "every variant is still far from what it would reach and the seed-to-seed spread is as large as "
              "the seed's differences; Fashion-MNIST at 28×28 is far easier than ImageNet, so a less expressive "
              "network loses little; and LeNet-5's max-pooling is itself a nonlinearity, so 'no activation' is "
              "not a linear network here.", accuracies, s.quick)
say(why)

# %% [markdown]
# ## 4. The picture: every run, and each variant's mean ± std

# %%
fig, ax = plt.subplots(figsize=(9, 4))
names = list(VARIANTS)
ax.errorbar(range(len(names)), [summary[n]["mean"] for n in names], yerr=[summary[n]["std"] for n in names],
            fmt="o", capsize=4, label="ours (mean ± std over seeds)")
for k, n in enumerate(names):
    ax.plot([k] * s.seeds, summary[n]["runs"], ".", color="gray", alpha=0.6)
ax.set_xticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=7)
ax.set(ylabel=f"test accuracy on {dataset} (%)", title="BatchNorm placement and activation")
ax.legend(fontsize=8)
show_figure(fig, f"{s.out}/placement.png")

# %%
write_json(f"{s.out}/results.json", {"dataset": dataset, "summary": summary, "seed_table": SLIDE_TABLE})
write_text(f"{s.out}/summary.md", f"# BatchNorm before or after the activation ({dataset})\n\n"
           f"{len(train)} training images, {s.epochs} epochs, batch {s.batch_size}, SGD lr {s.lr} momentum 0.9, "
           f"{s.seeds} seeds per variant.\n\n{table}\n\n{comparison_table}\n\n" + "\n".join(lines) +
           f"\n\n{why}\n\n![placement](placement.png)\n")
print(f"plots, results.json and summary.md in {s.out}/")
