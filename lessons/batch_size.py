"""GroupNorm vs BatchNorm across batch sizes (Wu & He 2018, Figure 1; seeds 002, 003).

BatchNorm's statistics come from the batch: with 2 or 4 images they are noisy
estimates, and the running averages used at test time no longer match what the
network saw in training. GroupNorm's statistics come from one image, so the
batch size should not matter. LeNet-5 on Fashion-MNIST with BatchNorm,
GroupNorm, LayerNorm and no normalization, at batch sizes 2 to 128: every run
sees the same images the same number of times from the same initial weights,
with the learning rate scaled linearly with the batch size, as Wu & He do.

    python -m lessons.batch_size             # 28 runs, 2.4 minutes measured on a 2-core CPU
    python -m lessons.batch_size --quick     # seconds, synthetic images

Beside ours, the seed's numbers: ImageNet ResNet-50 top-1 accuracy at 32, 16,
8, 4, 2 images per worker (the GN paper's Figure 1). Ours is a 5-layer network
on 12,000 Fashion-MNIST images for one epoch, so compare the shapes of the
curves, not the accuracies.
"""
# %% Settings (flags override them)

import numpy as np

import minidl as md
from lessons.common import (RunStore, evaluate, fashion_mnist, lesson_args, lesson_parser,
                            run_identity, show_figure, train_classifier, write_json, write_text)

BATCH_SIZES = [2, 4, 8, 16, 32, 64, 128]
NORMS = {"BatchNorm": "batch", "GroupNorm": "group", "LayerNorm": "layer", "none": None}
TRAIN, TEST, EPOCHS = 12000, 2000, 1
LR_PER_32 = 0.01        # learning rate at batch 32, scaled linearly: lr = 0.01·B/32
SEED = 0
SEED_FIGURE = {"batch": [32, 16, 8, 4, 2], "BatchNorm": [76.4, 76.3, 75.2, 72.7, 65.3],
               "GroupNorm": [75.9, 75.8, 76.0, 75.8, 75.9]}    # ImageNet ResNet-50 top-1 (%)
QUICK = dict(train=192, test=200, batch_sizes=[2, 8, 32])

parser = lesson_parser("batch_size", __doc__, "synthetic images, three batch sizes", seed=SEED)
parser.add_argument("--train-size", type=int, default=TRAIN)
parser.add_argument("--epochs", type=int, default=EPOCHS)
parser.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES)
parser.add_argument("--lr-per-32", type=float, default=LR_PER_32)
args = lesson_args(parser)
if args.quick:
    args.train_size, args.batch_sizes = QUICK["train"], QUICK["batch_sizes"]
out = args.out

# %% 1. Data: a fixed subset, the same for every run
dataset, train, test = fashion_mnist(args.quick, args.train_size, QUICK["test"] if args.quick else TEST,
                                     args.seed)
print(f"{dataset}: {len(train)} training and {len(test)} test images, {args.epochs} epoch(s) per run")
store = RunStore(out, run_identity(dataset=dataset, train=len(train), epochs=args.epochs,
                                   lr_per_32=args.lr_per_32, seed=args.seed, quick=args.quick),
                 fresh=args.fresh)


# %% 2. BatchNorm's two modes: batch statistics (as in training) vs running statistics (as at test time)
def test_error_with_batch_statistics(model, dataset, batch_size):
    """Test error with BN in training mode, batches as small as in training:
    what the network computed while it learned (running statistics untouched)."""
    with md.frozen_state():
        model.train()
        correct = 0
        n = len(dataset) // batch_size * batch_size
        with md.no_grad():
            for x, y in md.data.DataLoader(dataset, batch_size, drop_last=True):
                correct += int((model(x).numpy().argmax(1) == y.numpy()).sum())
    return 100.0 - 100.0 * correct / n


# %% 3. The runs: every normalizer at every batch size
for label, norm in NORMS.items():
    for batch in args.batch_sizes:
        key = f"{label}/{batch}"
        if key in store:
            continue
        md.manual_seed(args.seed)                   # the same initial weights in every run
        model = md.models.LeNet5(in_channels=1, input_size=28, norm=norm)
        lr = args.lr_per_32 * batch / 32
        losses = train_classifier(model, train, args.epochs, batch, lr, args.seed, desc=key)
        result = {"lr": lr, "test_error": 100.0 - evaluate(model, test)[1],
                  "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 20):])),
                  "diverged": bool(not np.isfinite(losses[-1]))}
        if norm == "batch":
            result["test_error_batch_statistics"] = test_error_with_batch_statistics(model, test, batch)
        store[key] = result
        print(f"{key:<16} lr {lr:.5f}: test error {result['test_error']:.2f}%"
              + (f" (with batch statistics {result['test_error_batch_statistics']:.2f}%)"
                 if norm == "batch" else ""))

# %% 4. Test error against batch size
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for label in NORMS:
    errors = [store[f"{label}/{b}"]["test_error"] for b in args.batch_sizes]
    axes[0].plot(args.batch_sizes, errors, "o-", label=label)
axes[0].set(xscale="log", xlabel="images per batch", ylabel="test error (%)",
            title=f"LeNet-5 on {dataset}: test error vs batch size")
axes[0].set_xticks(args.batch_sizes, [str(b) for b in args.batch_sizes])
axes[0].legend()
axes[1].plot(SEED_FIGURE["batch"], [100 - a for a in SEED_FIGURE["BatchNorm"]], "o-", label="BatchNorm")
axes[1].plot(SEED_FIGURE["batch"], [100 - a for a in SEED_FIGURE["GroupNorm"]], "o-", label="GroupNorm")
axes[1].set(xscale="log", xlabel="images per worker", ylabel="top-1 error (%)",
            title="The seed: ImageNet ResNet-50 (Wu & He, Fig. 1)")
axes[1].set_xticks(SEED_FIGURE["batch"], [str(b) for b in SEED_FIGURE["batch"]])
axes[1].legend()
show_figure(fig, f"{out}/error_vs_batch.png")

# %% 5. Where BatchNorm's small-batch error comes from: running vs batch statistics
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(args.batch_sizes, [store[f"BatchNorm/{b}"]["test_error"] for b in args.batch_sizes], "o-",
        label="eval mode (running statistics)")
ax.plot(args.batch_sizes, [store[f"BatchNorm/{b}"]["test_error_batch_statistics"] for b in args.batch_sizes],
        "s--", label="train mode (statistics of each test batch)")
ax.set(xscale="log", xlabel="images per batch", ylabel="test error (%)", title="BatchNorm's two modes")
ax.set_xticks(args.batch_sizes, [str(b) for b in args.batch_sizes])
ax.legend(fontsize=8)
show_figure(fig, f"{out}/bn_modes.png")

# %% 6. The table beside the seed's
header = "| normalizer | " + " | ".join(f"B={b}" for b in args.batch_sizes) + " |"
rows = [f"| {label} (test error %) | " + " | ".join(f"{store[f'{label}/{b}']['test_error']:.2f}"
                                                   + (" (diverged)" if store[f'{label}/{b}']['diverged'] else "")
                                                   for b in args.batch_sizes) + " |" for label in NORMS]
rows.append("| BatchNorm with batch statistics | " + " | ".join(
    f"{store[f'BatchNorm/{b}']['test_error_batch_statistics']:.2f}" for b in args.batch_sizes) + " |")
table = "\n".join([header, "|---|" + "---|" * len(args.batch_sizes)] + rows)
seed_table = ("| the seed (ImageNet top-1 %) | " + " | ".join(f"B={b}" for b in SEED_FIGURE["batch"]) + " |\n"
              "|---|" + "---|" * 5 + "\n" +
              "\n".join(f"| {k} | " + " | ".join(str(a) for a in SEED_FIGURE[k]) + " |"
                        for k in ("BatchNorm", "GroupNorm")))
print("\n" + table + "\n\n" + seed_table)
bn_small, bn_large = (store[f"BatchNorm/{b}"]["test_error"] for b in (min(args.batch_sizes), max(args.batch_sizes)))
gn_small, gn_large = (store[f"GroupNorm/{b}"]["test_error"] for b in (min(args.batch_sizes), max(args.batch_sizes)))
verdict = (f"BatchNorm's test error changes by {bn_small - bn_large:+.2f} points from batch "
           f"{max(args.batch_sizes)} to {min(args.batch_sizes)}, GroupNorm's by {gn_small - gn_large:+.2f}. "
           "The seed's ImageNet curves: BN +11.1 points from 32 to 2, GN flat. Differences from the seed: "
           "a small network trained for one short epoch on 28x28 images, where every run is still far from "
           "converged and small batches take many more (smaller) steps.")
agrees = (bn_small - bn_large) > (gn_small - gn_large) + 2
verdict += (" The shape " + ("agrees with the seed's: BatchNorm degrades at small batches, GroupNorm much less."
                             if agrees else "DISAGREES with the seed's here; the likeliest reason is the one above."))
print("\n" + verdict)
write_json(f"{out}/results.json", {"dataset": dataset, "runs": store.runs, "seed_figure": SEED_FIGURE})
write_text(f"{out}/summary.md", f"# GroupNorm vs BatchNorm across batch sizes ({dataset})\n\n"
           f"{len(train)} training images, {args.epochs} epoch(s), SGD momentum 0.9, lr {args.lr_per_32}·B/32, "
           f"same initial weights.\n\n{table}\n\n{seed_table}\n\n{verdict}\n\n"
           "![error vs batch](error_vs_batch.png) ![BN modes](bn_modes.png)\n")
print(f"plots, results.json and summary.md in {out}/")
