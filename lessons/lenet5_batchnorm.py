"""LeNet-5 without BatchNorm, with BN at decay 0.99, with BN at decay 0.9.

The course's comparison (seed 002, CIFAR-10: 74.33%, 78.16%, 78.26% test
accuracy) and its homework: train the three models from the same seed, the
same initial weights and the same data order; plot train and validation loss
curves together, and accuracy; and watch what the decay changes: how far the
running mean/variance of the first BN layer lag behind that layer's true
population statistics.

    python -m lessons.lenet5_batchnorm                        # CIFAR-10 if present or downloadable
    python -m lessons.lenet5_batchnorm --dataset fashion-mnist --epochs 5
    python -m lessons.lenet5_batchnorm --quick                # seconds, synthetic data

Wall time on a 2-core CPU: the default run on Fashion-MNIST (no CIFAR-10 here)
is 20 epochs × 3 models: 11 minutes measured (no BN 170 s, each BN run about 250 s); shorten
it with --epochs or --subset. Interrupted runs resume from their last epoch's
checkpoint in --out, and only a run with the same data and settings resumes
(--fresh starts over).

The BN layers keep PyTorch's convention for the running variance (unbiased,
× m/(m − 1)); the course's homework skeleton keeps the biased one. Training is
identical either way; eval outputs differ by about √(m/(m − 1)) − 1, 0.8% at
m = 64 values per channel: pass --biased-running-var for the homework's.
"""
# %% Settings (flags override them)
import json
import os
import time

import numpy as np

import minidl as md
import minidl.functional as F
from lessons.common import (check_resume, evaluate, lesson_args, lesson_parser, progress, run_identity,
                            show_figure, synthetic_images, write_json, write_text)

DATASET = None          # None: CIFAR-10 where present or downloadable, else Fashion-MNIST
DATA_ROOT = "data"
EPOCHS = 20
BATCH_SIZE = 64
LR = 0.01               # SGD with momentum 0.9 and weight decay 5e-4, cosine schedule
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
VALIDATION = 5000       # training images held out for the validation curve (at most a tenth)
SEED = 0
RUNS = [("no BN", None), ("BN decay=0.99", 0.99), ("BN decay=0.9", 0.9)]
COURSE = {"no BN": 74.33, "BN decay=0.99": 78.16, "BN decay=0.9": 78.26}
PROBES_PER_EPOCH = 10   # running-statistics lag measurements per epoch
QUICK = dict(epochs=2, batch_size=32, train=600, test=200, validation=100)

parser = lesson_parser("lenet5_batchnorm", __doc__, f"tiny synthetic data, {QUICK['epochs']} epochs", seed=SEED, fresh_help="ignore (and overwrite) checkpoints in --out")
parser.add_argument("--dataset", choices=["cifar10", "fashion-mnist"], default=DATASET)
parser.add_argument("--data-root", default=DATA_ROOT, help="folder holding cifar-10-batches-py")
parser.add_argument("--epochs", type=int, default=EPOCHS)
parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
parser.add_argument("--lr", type=float, default=LR)
parser.add_argument("--subset", type=int, default=None, help="train on this many images only")
parser.add_argument("--biased-running-var", action="store_true",
                    help="store the biased batch variance in running_var, as the course's homework does")
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None)
args = lesson_args(parser)
if args.backend:
    md.use_backend(args.backend)
if args.quick:
    args.epochs, args.batch_size = min(args.epochs, QUICK["epochs"]), QUICK["batch_size"]
out = args.out


# %% 1. Data: the same held-out split and data order for all three runs
dataset, augment = args.dataset, []
if args.quick:
    dataset, train, test = "synthetic", synthetic_images(QUICK["train"], 1), synthetic_images(QUICK["test"], 2)
else:
    if dataset is None:
        try:
            md.data.CIFAR10(args.data_root, train=False, download=True)
            dataset = "cifar10"
        except Exception as e:   # no copy on disk and no internet
            print(f"CIFAR-10 is not available ({e}); using Fashion-MNIST")
            dataset = "fashion-mnist"
    if dataset == "cifar10":
        train = md.data.CIFAR10(args.data_root, train=True, download=True)
        test = md.data.CIFAR10(args.data_root, train=False)
        augment = [md.data.RandomCrop(32, padding=4), md.data.RandomHorizontalFlip()]
    else:
        train = md.data.FashionMNIST(None, train=True)
        test = md.data.FashionMNIST(None, train=False)
if args.subset:
    train = train.subset(args.subset, seed=args.seed)
n_val = QUICK["validation"] if args.quick else min(VALIDATION, len(train) // 10)
train, val = train.split(n_val, seed=args.seed)
if not args.quick:      # augment only the training part; normalize everything alike
    norm = md.data.Normalize(*md.data.channel_stats(train))
    train.transform = md.data.Compose(*augment, norm)
    val.transform = test.transform = norm
in_channels, size = train.images.shape[1], train.images.shape[2]
print(f"{dataset}: {len(train)} training, {len(val)} validation, {len(test)} test images; "
      f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} momentum {MOMENTUM} "
      f"weight decay {WEIGHT_DECAY}, cosine schedule; backend {md.get_backend()}")


# %% 2. The true statistics the running ones estimate
def population_stats(model, probe):
    """The true mean and variance of the first BN layer's input (the first conv's
    output) over the probe images, with the current weights."""
    with md.no_grad():
        z = model.features[0](probe).numpy()           # (n, 6, H, W)
    return z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3), ddof=0 if args.biased_running_var else 1)


def resume(ckpt, identity, model, opt):
    """(first epoch, history) from the run's checkpoint, if it has one and it
    was made by this same run; refuses (naming each difference) otherwise."""
    if args.fresh or not os.path.exists(ckpt):
        return 0, None
    state = md.load(ckpt)
    check_resume(ckpt, state.get("run"), identity)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    print(f"resumed after epoch {state['epoch']} from {ckpt}")
    return int(state["epoch"]), {k: [float(v) for v in np.atleast_1d(a)] if np.size(a) else []
                                 for k, a in state["history"].items()}


# %% 3. The three runs: same seed, same initial weights, same data order
results = {}
for label, decay in RUNS:
    md.manual_seed(args.seed)                 # the same initial conv/linear weights for all runs
    model = md.models.LeNet5(in_channels=in_channels, input_size=size,
                             norm=None if decay is None else (
                                 lambda c, d, decay=decay: md.nn.BatchNorm(
                                     c, d, decay=decay, unbiased_running_var=not args.biased_running_var)))
    opt = md.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = md.optim.CosineAnnealingLR(opt, T_max=args.epochs)
    ckpt = os.path.join(out, label.replace(" ", "_").replace("=", "") + ".npz")
    identity = run_identity(dataset=dataset, model=label, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, subset=args.subset, quick=args.quick,
                            biased_running_var=args.biased_running_var)
    start, history = resume(ckpt, identity, model, opt)
    history = history or {k: [] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc",
                                          "lag_step", "lag_mean", "lag_var", "epoch_seconds")}
    sched.epoch = start
    loader = md.data.DataLoader(train, args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    probe = md.Tensor(train.get_batch(np.arange(min(2000, len(train))))[0])
    probe_every = max(1, len(loader) // PROBES_PER_EPOCH)
    for epoch in range(start, args.epochs):
        loader.rng = np.random.default_rng([args.seed, epoch])   # same order in every run, resumable
        md.manual_seed([args.seed, epoch])                        # same augmentation draws too
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        bar = progress(loader, desc=f"{label} epoch {epoch + 1}/{args.epochs}", leave=False)
        for step, (x, y) in enumerate(bar):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.numpy().argmax(1) == y.numpy()).sum())
            seen += len(y)
            if decay is not None and step % probe_every == 0:
                mean, var = population_stats(model, probe)
                bn = model.features[1]
                history["lag_step"].append(epoch * len(loader) + step)
                history["lag_mean"].append(float(np.abs(bn.running_mean.numpy() - mean).mean()))
                history["lag_var"].append(float(np.abs(bn.running_var.numpy() - var).mean()))
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
        sched.step()
        val_loss, val_acc = evaluate(model, val)
        _, test_acc = evaluate(model, test)
        for k, v in (("train_loss", loss_sum / seen), ("train_acc", 100.0 * correct / seen),
                     ("val_loss", val_loss), ("val_acc", val_acc), ("test_acc", test_acc),
                     ("epoch_seconds", time.time() - t0)):
            history[k].append(v)
        print(f"{label} epoch {epoch + 1}: train loss {history['train_loss'][-1]:.4f}, "
              f"val loss {val_loss:.4f}, train acc {history['train_acc'][-1]:.2f}%, "
              f"test acc {test_acc:.2f}% ({history['epoch_seconds'][-1]:.0f}s)")
        md.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                 "run": json.dumps(identity),
                 "history": {k: np.asarray(v, dtype=float) for k, v in history.items()}}, ckpt)
    results[label] = history

# %% 4. Loss curves: train (solid) and validation (dashed), the homework's plot
import matplotlib.pyplot as plt  # noqa: E402

colors = dict(zip(results, ["tab:gray", "tab:blue", "tab:red"]))


def plot_curves(train_key, other_key, other_name, ylabel, title, path):
    """One line per run and split: train solid, the other split dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, h in results.items():
        epochs = np.arange(1, len(h[train_key]) + 1)
        ax.plot(epochs, h[train_key], "-o", color=colors[label], label=f"{label} train")
        ax.plot(epochs, h[other_key], "--s", color=colors[label], label=f"{label} {other_name}")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    show_figure(fig, path)


plot_curves("train_loss", "val_loss", "validation", "cross-entropy loss",
            "Train (solid) and validation (dashed) loss", f"{out}/loss.png")

# %% 5. Accuracy
plot_curves("train_acc", "test_acc", "test", "accuracy (%)", "Accuracy", f"{out}/accuracy.png")

# %% 6. What the decay changes: how far the running statistics lag the population's
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for label, h in results.items():
    if h["lag_step"]:
        axes[0].semilogy(h["lag_step"], h["lag_mean"], color=colors[label], label=label)
        axes[1].semilogy(h["lag_step"], h["lag_var"], color=colors[label], label=label)
for ax, what in zip(axes, ("running_mean", "running_var")):
    ax.set(xlabel="training step", ylabel="mean |running − population|", title=f"{what} lag (first BN)")
    ax.legend()
show_figure(fig, f"{out}/running_stats.png")

# %% 7. The table beside the course's
rows = []
for label, h in results.items():
    course = f"{COURSE[label]:.2f}%" if dataset == "cifar10" else "(CIFAR-10 only)"
    rows.append(f"| {label} | {h['test_acc'][-1]:.2f}% | {course} | {h['train_loss'][-1]:.4f} | "
                f"{h['val_loss'][-1]:.4f} | {sum(h['epoch_seconds']):.0f}s |")
table = ("| model | test accuracy | course (CIFAR-10) | final train loss | final val loss | time |\n"
         "|---|---|---|---|---|---|\n" + "\n".join(rows))
print("\n" + table)
write_json(f"{out}/results.json", {"dataset": dataset, "epochs": args.epochs,
                                   "batch_size": args.batch_size, "lr": args.lr, "runs": results})
write_text(f"{out}/summary.md", f"# LeNet-5 with and without BatchNorm on {dataset}\n\n"
           f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr}, momentum {MOMENTUM}, "
           f"weight decay {WEIGHT_DECAY}, cosine schedule, seed {args.seed}; the same initial "
           "weights and data order for all three runs.\n\n" + table +
           "\n\n![loss](loss.png) ![accuracy](accuracy.png) ![running stats](running_stats.png)\n")
print(f"plots, results.json and summary.md in {out}/")
