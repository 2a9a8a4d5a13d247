"""BatchNorm before or after the activation, with or without its scale and shift,
and BatchNorm with ReLU, sigmoid, tanh or no activation at all (seed 003).

The original paper puts BN between the linear map and the nonlinearity; many
implementations put it after. The seed's table (CaffeNet on ImageNet at
128 px) finds "after" slightly better, and shows that without a nonlinearity
BN cannot make a deep network expressive. LeNet-5 on Fashion-MNIST, each
variant trained from 3 seeds, mean ± std of the test accuracy, beside the
seed's numbers, and which of our differences the spread over seeds can resolve.

    python -m lessons.bn_placement            # 21 runs, 1.5 minutes measured on a 2-core CPU
    python -m lessons.bn_placement --quick    # seconds, synthetic images
"""
# %% Settings (flags override them)
import math

import numpy as np

import minidl as md
from lessons.common import (RunStore, evaluate, fashion_mnist, lesson_args, lesson_parser,
                            run_identity, show_figure, train_classifier, write_json, write_text)

TRAIN, TEST, EPOCHS, BATCH, LR = 10000, 2000, 2, 64, 0.02
SEEDS = 3
# variant: (where BN goes, keeps γ and β, activation)
VARIANTS = {
    "Before": ("before", False, "relu"),
    "Before + scale & bias": ("before", True, "relu"),
    "After": ("after", False, "relu"),
    "After + scale & bias": ("after", True, "relu"),
    "BN + sigmoid": ("before", True, "sigmoid"),
    "BN + tanh": ("before", True, "tanh"),
    "BN + no activation": ("before", True, None),
}
SEED_TABLE = {   # seed 003: CaffeNet, ImageNet at 128 px, top-1 accuracy
    "Before": 0.474, "Before + scale & bias": 0.478, "After": 0.499, "After + scale & bias": 0.493,
    "BN + ReLU": 0.499, "BN + sigmoid": 0.475, "BN + tanh": 0.448, "BN + no activation": 0.384}
QUICK = dict(train=400, test=200, epochs=1, batch=32, seeds=2)

parser = lesson_parser("bn_placement", __doc__, "synthetic images, tiny runs")
parser.add_argument("--train-size", type=int, default=TRAIN)
parser.add_argument("--epochs", type=int, default=EPOCHS)
parser.add_argument("--seeds", type=int, default=SEEDS, help="runs per variant")
parser.add_argument("--lr", type=float, default=LR)
args = lesson_args(parser)
if args.quick:
    args.train_size, args.epochs, args.seeds = QUICK["train"], QUICK["epochs"], QUICK["seeds"]
batch = QUICK["batch"] if args.quick else BATCH
out = args.out

dataset, train, test = fashion_mnist(args.quick, args.train_size, QUICK["test"] if args.quick else TEST)
store = RunStore(out, run_identity(dataset=dataset, train=len(train), epochs=args.epochs, batch_size=batch,
                                   lr=args.lr, seeds=args.seeds, quick=args.quick), fresh=args.fresh)


# %% 1. LeNet-5 with BN placed before or after its activation
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

# %% 2. Every variant from the same seeds
for name, (placement, affine, activation) in VARIANTS.items():
    for seed in range(args.seeds):
        key = f"{name}/{seed}"
        if key in store:
            continue
        md.manual_seed(seed)
        model = lenet5(placement, affine, activation)
        losses = train_classifier(model, train, args.epochs, batch, args.lr, seed, desc=key)
        store[key] = {"test_acc": evaluate(model, test)[1], "final_train_loss": float(np.mean(losses[-20:]))}
    accs = [store[f"{name}/{s}"]["test_acc"] for s in range(args.seeds)]
    print(f"{name:<24} test accuracy {np.mean(accs):.2f} ± {np.std(accs, ddof=1):.2f}% over {args.seeds} seeds")

# %% 3. The table beside the seed's, and what our spread can resolve
summary = {}
for name in VARIANTS:
    accs = np.array([store[f"{name}/{s}"]["test_acc"] for s in range(args.seeds)])
    summary[name] = {"mean": float(accs.mean()), "std": float(accs.std(ddof=1)), "runs": accs.tolist()}
rows = []
for name in VARIANTS:
    seed_value = SEED_TABLE.get(name)
    also = f" (and BN + ReLU {SEED_TABLE['BN + ReLU']})" if name == "Before + scale & bias" else ""
    rows.append(f"| {name} | {summary[name]['mean']:.2f} ± {summary[name]['std']:.2f}% | "
                f"{seed_value if seed_value is not None else ''}{also} |")
table = "| variant | ours: test accuracy, mean ± std | seed (ImageNet top-1) |\n|---|---|---|\n" + "\n".join(rows)
print(table)
print("\nThe seed lists BN + ReLU (0.499) and Before + scale & bias (0.478) as two numbers from two tables;\n"
      "ours are one and the same variant, as they should be: BN before ReLU with γ and β.")


def resolved(a, b):
    """A difference of means is resolved when it exceeds twice its standard error."""
    se = math.sqrt(summary[a]["std"] ** 2 / args.seeds + summary[b]["std"] ** 2 / args.seeds)
    d = summary[a]["mean"] - summary[b]["mean"]
    return d, se, abs(d) > 2 * se


comparisons = [  # (ours, ours, the seed's, the seed's): BN + ReLU is our "Before + scale & bias"
    ("After", "Before", "After", "Before"),
    ("After + scale & bias", "Before + scale & bias", "After + scale & bias", "Before + scale & bias"),
    ("Before + scale & bias", "Before", "Before + scale & bias", "Before"),
    ("After + scale & bias", "After", "After + scale & bias", "After"),
    ("Before + scale & bias", "BN + sigmoid", "BN + ReLU", "BN + sigmoid"),
    ("Before + scale & bias", "BN + tanh", "BN + ReLU", "BN + tanh"),
    ("Before + scale & bias", "BN + no activation", "BN + ReLU", "BN + no activation")]
lines = []
for a, b, seed_a, seed_b in comparisons:
    d, se, ok = resolved(a, b)
    seed_d = (SEED_TABLE[seed_a] - SEED_TABLE[seed_b]) * 100
    agree = "same sign" if np.sign(d) == np.sign(seed_d) else "OPPOSITE sign"
    lines.append(f"- {a} − {b}: ours {d:+.2f} ± {se:.2f} points ({'resolved' if ok else 'NOT resolved'} "
                 f"at 2 standard errors); the seed {seed_d:+.1f} points ({agree})")
print("\n".join(lines))
why = ("Where ours disagree with the seed, the likeliest reasons: a few epochs on a small subset, where every "
       "variant is still far from what it would reach and the seed-to-seed spread is as large as the seed's "
       "differences; Fashion-MNIST at 28×28 is far easier than ImageNet, so a less expressive network loses "
       "little; and LeNet-5's max-pooling is itself a nonlinearity, so 'no activation' is not a linear "
       "network here (nor, with its max-pools, was the seed's CaffeNet; its deeper stack needs more).")
print(why)

# %% 4. Picture
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(9, 4))
names = list(VARIANTS)
ax.errorbar(range(len(names)), [summary[n]["mean"] for n in names], yerr=[summary[n]["std"] for n in names],
            fmt="o", capsize=4, label="ours (mean ± std over seeds)")
for k, n in enumerate(names):
    ax.plot([k] * args.seeds, summary[n]["runs"], ".", color="gray", alpha=0.6)
ax.set_xticks(range(len(names)), [n.replace(" + ", "\n+ ") for n in names], fontsize=7)
ax.set(ylabel=f"test accuracy on {dataset} (%)", title="BatchNorm placement and activation")
ax.legend(fontsize=8)
show_figure(fig, f"{out}/placement.png")

write_json(f"{out}/results.json", {"dataset": dataset, "summary": summary, "seed_table": SEED_TABLE})
write_text(f"{out}/summary.md", f"# BatchNorm before or after the activation ({dataset})\n\n"
           f"{len(train)} training images, {args.epochs} epochs, batch {batch}, SGD lr {args.lr} momentum 0.9, "
           f"{args.seeds} seeds per variant.\n\n{table}\n\n" + "\n".join(lines) +
           f"\n\n{why}\n\n![placement](placement.png)\n")
print(f"plots, results.json and summary.md in {out}/")
