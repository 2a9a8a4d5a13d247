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

Interrupted runs resume from their last epoch's checkpoint in --out (--fresh to restart).
"""
# %% Settings (flags override them)
import argparse
import os
import time

import numpy as np

import minidl as md
import minidl.functional as F
from lessons.common import Progress, out_dir, write_json, write_text

DATASET = None          # None: CIFAR-10 where present or downloadable, else Fashion-MNIST
DATA_ROOT = "data"
EPOCHS = 20
BATCH_SIZE = 64
LR = 0.01               # SGD with momentum 0.9 and weight decay 5e-4, cosine schedule
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
VALIDATION = 5000       # training images held out for the validation curve
SEED = 0
RUNS = [("no BN", None), ("BN decay=0.99", 0.99), ("BN decay=0.9", 0.9)]
COURSE = {"no BN": 74.33, "BN decay=0.99": 78.16, "BN decay=0.9": 78.26}
PROBES_PER_EPOCH = 10   # running-statistics lag measurements per epoch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["cifar10", "fashion-mnist"], default=DATASET)
    p.add_argument("--data-root", default=DATA_ROOT, help="folder holding cifar-10-batches-py")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--subset", type=int, default=None, help="train on this many images only")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", default="runs/lenet5_batchnorm")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints in --out")
    p.add_argument("--quick", action="store_true", help="tiny synthetic data, 2 epochs (for the tests)")
    return p.parse_args(argv)


# %% 1. Data: the same held-out split and data order for all three runs
def synthetic(n, seed):
    """Ten classes of 1x28x28 images, each a noisy copy of its own random template."""
    templates = np.random.default_rng(0).random((10, 1, 28, 28))   # shared by train and test
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.clip(templates[y] + 0.35 * rng.standard_normal((n, 1, 28, 28)), 0, 1)
    return md.data.ArrayDataset((x * 255).astype(np.uint8), y)


def load_data(args):
    if args.quick:
        return "synthetic", synthetic(600, 1), synthetic(200, 2), 100, [], None
    name = args.dataset
    if name is None:
        try:
            md.data.CIFAR10(args.data_root, train=False, download=True)
            name = "cifar10"
        except Exception as e:   # no copy on disk and no internet
            print(f"CIFAR-10 is not available ({e}); using Fashion-MNIST")
            name = "fashion-mnist"
    if name == "cifar10":
        train = md.data.CIFAR10(args.data_root, train=True, download=True)
        test = md.data.CIFAR10(args.data_root, train=False)
        augment = [md.data.RandomCrop(32, padding=4), md.data.RandomHorizontalFlip()]
    else:
        train = md.data.FashionMNIST(None, train=True)
        test = md.data.FashionMNIST(None, train=False)
        augment = []
    return name, train, test, VALIDATION, augment, md.data.Normalize(*md.data.channel_stats(train))


# %% 2. Training one model, with evaluation and the running-statistics probe
def evaluate(model, dataset, batch_size=500):
    model.eval()
    loss_sum, correct = 0.0, 0
    with md.no_grad():
        for x, y in md.data.DataLoader(dataset, batch_size):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y).item() * len(y)
            correct += int((logits.numpy().argmax(1) == y.numpy()).sum())
    model.train()
    return loss_sum / len(dataset), 100.0 * correct / len(dataset)


def population_stats(model, probe):
    """The true mean and variance of the first BN layer's input (the first conv's
    output) over the probe images, with the current weights."""
    with md.no_grad():
        z = model.features[0](probe).numpy()           # (n, 6, H, W)
    return z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3), ddof=1)


def train_run(label, decay, data, args, ckpt):
    train, val, test, in_ch, size = data
    md.manual_seed(args.seed)                 # the same initial conv/linear weights for all runs
    model = md.models.LeNet5(in_channels=in_ch, input_size=size,
                             norm=None if decay is None else "batch", decay=decay or 0.9)
    opt = md.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = md.optim.CosineAnnealingLR(opt, T_max=args.epochs)
    history = {k: [] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc",
                               "lag_step", "lag_mean", "lag_var", "epoch_seconds")}
    start = 0
    if os.path.exists(ckpt) and not args.fresh:
        state = md.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = {k: list(np.atleast_1d(v)) if np.size(v) else [] for k, v in state["history"].items()}
        start = int(state["epoch"])
        sched.epoch = start
        print(f"{label}: resumed after epoch {start} from {ckpt}")
    loader = md.data.DataLoader(train, args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    probe = md.Tensor(train.get_batch(np.arange(min(2000, len(train))))[0])
    probe_every = max(1, len(loader) // PROBES_PER_EPOCH)
    for epoch in range(start, args.epochs):
        loader.rng = np.random.default_rng([args.seed, epoch])   # same order in every run, resumable
        md.manual_seed([args.seed, epoch])                        # same augmentation draws too
        bar = Progress(len(loader), f"{label} epoch {epoch + 1}/{args.epochs}")
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        for step, (x, y) in enumerate(loader):
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
            if step % 20 == 0 or step == len(loader) - 1:
                bar.update(step + 1 - bar.done, f"loss {loss_sum / seen:.3f}")
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
                 "history": {k: np.asarray(v, dtype=float) for k, v in history.items()}}, ckpt)
    return {k: [float(x) for x in v] for k, v in history.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        md.use_backend(args.backend)
    if args.quick:
        args.epochs, args.batch_size = min(args.epochs, 2), 32
    out = out_dir(args.out)
    name, train, test, n_val, augment, norm = load_data(args)
    if args.subset:
        train = train.subset(args.subset, seed=args.seed)
    train, val = train.split(n_val, seed=args.seed)
    if norm is not None:    # augment only the training part; normalize everything alike
        train.transform = md.data.Compose(*augment, norm)
        val.transform = test.transform = norm
    data = (train, val, test, train.images.shape[1], train.images.shape[2])
    print(f"{name}: {len(train)} training, {len(val)} validation, {len(test)} test images; "
          f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} momentum {MOMENTUM} "
          f"weight decay {WEIGHT_DECAY}, cosine schedule; backend {md.get_backend()}")

    # %% 3. The three runs
    results = {}
    for label, decay in RUNS:
        ckpt = os.path.join(out, label.replace(" ", "_").replace("=", "") + ".npz")
        results[label] = train_run(label, decay, data, args, ckpt)

    # %% 4. Plots and the table beside the course's
    plot(results, out)
    rows = []
    for label, h in results.items():
        course = f"{COURSE[label]:.2f}%" if name == "cifar10" else "(CIFAR-10 only)"
        rows.append(f"| {label} | {h['test_acc'][-1]:.2f}% | {course} | {h['train_loss'][-1]:.4f} | "
                    f"{h['val_loss'][-1]:.4f} | {sum(h['epoch_seconds']):.0f}s |")
    table = ("| model | test accuracy | course (CIFAR-10) | final train loss | final val loss | time |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows))
    print("\n" + table)
    write_json(f"{out}/results.json", {"dataset": name, "epochs": args.epochs,
                                       "batch_size": args.batch_size, "lr": args.lr,
                                       "runs": results})
    write_text(f"{out}/summary.md", f"# LeNet-5 with and without BatchNorm on {name}\n\n"
               f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr}, momentum {MOMENTUM}, "
               f"weight decay {WEIGHT_DECAY}, cosine schedule, seed {args.seed}; the same initial "
               "weights and data order for all three runs.\n\n" + table +
               "\n\n![loss](loss.png) ![accuracy](accuracy.png) ![running stats](running_stats.png)\n")
    print(f"plots, results.json and summary.md in {out}/")
    return results


def plot(results, out):
    import matplotlib.pyplot as plt
    colors = dict(zip(results, ["tab:gray", "tab:blue", "tab:red"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, h in results.items():
        epochs = np.arange(1, len(h["train_loss"]) + 1)
        ax.plot(epochs, h["train_loss"], "-o", color=colors[label], label=f"{label} train")
        ax.plot(epochs, h["val_loss"], "--s", color=colors[label], label=f"{label} validation")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Train (solid) and validation (dashed) loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/loss.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, h in results.items():
        epochs = np.arange(1, len(h["train_acc"]) + 1)
        ax.plot(epochs, h["train_acc"], "-o", color=colors[label], label=f"{label} train")
        ax.plot(epochs, h["test_acc"], "--s", color=colors[label], label=f"{label} test")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/accuracy.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, h in results.items():
        if h["lag_step"]:
            axes[0].semilogy(h["lag_step"], h["lag_mean"], color=colors[label], label=label)
            axes[1].semilogy(h["lag_step"], h["lag_var"], color=colors[label], label=label)
    axes[0].set(xlabel="training step", ylabel="mean |running − population|", title="running_mean lag (first BN)")
    axes[1].set(xlabel="training step", ylabel="mean |running − population|", title="running_var lag (first BN)")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(f"{out}/running_stats.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
