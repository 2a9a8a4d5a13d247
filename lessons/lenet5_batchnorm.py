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
# # LeNet-5 with and without BatchNorm
#
# The course's experiment (deck 002 of its slides): LeNet-5 on CIFAR-10 without BatchNorm,
# with BN at EMA decay 0.99, and with BN at decay 0.9. Its result table:
#
# | | no BN | BN, decay 0.99 | BN, decay 0.9 |
# |---|---|---|---|
# | test accuracy (CIFAR-10) | 74.33 % | 78.16 % | 78.26 % |
#
# In training, BN normalizes each channel with its batch's statistics,
# $\hat z = (z - \mu_B)/\sqrt{\sigma_B^2 + \epsilon}$, $\tilde z = \gamma \hat z + \beta$.
# At test time there is no batch to average over, so it uses estimates of the
# whole training set's $\mu$ and $\sigma^2$, kept during training as
# exponential moving averages:
#
# $$v_t = \text{decay}\cdot v_{t-1} + (1 - \text{decay})\cdot y_t .$$
#
# A larger decay remembers more of the past: smoother, but slower to follow the
# statistics as the weights change. The homework asks for the training and
# validation loss curves with and without BN, and the test accuracy.
#
# All three runs start from the same weights and see the same data in the same
# order. CIFAR-10 is read from `--data-root` (downloaded where there is internet);
# without it the lesson uses Fashion-MNIST.
#
# **The homework with your own module:** `--norm my_bn.py:BatchNorm2d` puts your
# class (the skeleton's constructor, `BatchNorm2d(num_features, num_dims)`)
# wherever BN goes, and trains it beside the no-BN model and beside minidl's own
# BN at decay 0.9 as a reference. Check the module first with
# `python -m lessons.homework check my_bn.py:BatchNorm2d`.

# %%
"""LeNet-5 without BN, with BN at decay 0.99 and 0.9 (the course's slides, deck 002).

    python -m lessons.lenet5_batchnorm                        # CIFAR-10 if present or downloadable
    python -m lessons.lenet5_batchnorm --dataset fashion-mnist --epochs 5
    python -m lessons.lenet5_batchnorm --quick                # seconds, synthetic data
    python -m lessons.lenet5_batchnorm --norm my_bn.py:BatchNorm2d   # the homework: your module

Default run on Fashion-MNIST (no CIFAR-10 here): 20 epochs × 3 models; its wall time and
results are recorded in docs/results/lenet5_batchnorm.md. Interrupted runs resume from their last epoch's
checkpoint in --out, only when made with the same data and settings.
"""
import contextlib
import hashlib
import inspect
import io
import json
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons import homework as grader
from lessons.chapter import integer_ticks, say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header
from lessons.verdicts import verdict
from lessons.runs import check_resume, run_all, run_identity
from lessons.training import evaluate, synthetic_images, train_classifier

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4      # SGD, with a cosine learning-rate schedule
VALIDATION = 5000                       # training images held out for the validation curve (at most a tenth)
RUNS = {"no BN": None, "BN decay=0.99": 0.99, "BN decay=0.9": 0.9}
COURSE_CIFAR10 = {"no BN": 74.33, "BN decay=0.99": 78.16, "BN decay=0.9": 78.26}
PROBES_PER_EPOCH = 10                   # running-statistics lag measurements per epoch

s = settings("lenet5_batchnorm", dict(
    dataset=None, data_root="data", epochs=20, batch_size=64, lr=0.01, subset=None, seed=0,
    biased_running_var=False, backend=None, norm=None, force=False),
    quick=dict(epochs=2, batch_size=32), doc=__doc__,
    help=dict(dataset="cifar10 or fashion-mnist (default: CIFAR-10 where present or downloadable)",
              data_root="the folder holding cifar-10-batches-py", subset="train on this many images only",
              biased_running_var="store the biased batch variance in running_var, as the homework does",
              backend="numpy or cupy", norm="FILE.py:CLASS, your BatchNorm module, used wherever BN goes",
              force="with --norm: train your module even where it fails the homework's check"),
    types=dict(dataset=str, subset=int, backend=str, norm=str), runs=True)
if s.backend:
    md.use_backend(s.backend)
if s.norm:                  # the homework: the student's module beside no BN and minidl's BN
    student = grader.load_target(s.norm, flag="norm")
    if not (isinstance(student, type) and issubclass(student, md.nn.Module)):
        raise SystemExit(f"--norm: {s.norm} is not a minidl Module class; expected the homework's "
                         "BatchNorm2d(num_features, num_dims, momentum=0.9, eps=1e-5)")
    with contextlib.redirect_stdout(io.StringIO()) as graded:     # graded first: training hides a wrong line
        report = grader.grade(student)
    if not report.passed:
        print(f"--norm: your {student.__name__} fails {len(report.failures)} of the homework's {report.max_score} "
              "checked lines:\n" + "\n".join(f"  FAIL  {where}: {cause}" for cause, where in report.causes.items()))
        if not s.force:
            raise SystemExit(f"Fix them (python -m lessons.homework check {s.norm} shows every line), "
                             "or train it anyway with --force.")
    RUNS = {"no BN": None, f"your {student.__name__}": student, "minidl BN decay=0.9": 0.9}
    with open(inspect.getsourcefile(student), "rb") as f:
        norm_source = hashlib.sha256(f.read()).hexdigest()[:16]    # a changed module is a different run

# %% [markdown]
# ## 1. Data
#
# A fixed part of the training set is held out for the validation curve; the
# rest is normalized with its own channel statistics (and, on CIFAR-10,
# augmented with random crops and flips).

# %%
dataset, augment = s.dataset, []
if s.quick:
    dataset, train, test = "synthetic", synthetic_images(600, 1), synthetic_images(200, 2)
else:
    if dataset is None:
        try:
            md.data.CIFAR10(s.data_root, train=False, download=True)
            dataset = "cifar10"
        except md.data.DataError:   # no copy on disk and no internet
            print(f"CIFAR-10 is not in {s.data_root}/cifar-10-batches-py and cannot be downloaded here: "
                  "using Fashion-MNIST")
            dataset = "fashion-mnist"
    if dataset == "cifar10":
        try:
            train = md.data.CIFAR10(s.data_root, train=True, download=True)
            test = md.data.CIFAR10(s.data_root, train=False)
        except md.data.DataError as e:
            raise SystemExit(str(e)) from None
        augment = [md.data.RandomCrop(32, padding=4), md.data.RandomHorizontalFlip()]
    elif dataset == "fashion-mnist":
        train, test = md.data.FashionMNIST(None, train=True), md.data.FashionMNIST(None, train=False)
    else:
        raise SystemExit(f"--dataset: expected cifar10 or fashion-mnist, got {dataset!r}")
if s.subset:
    train = train.subset(s.subset, seed=s.seed)
train, val = train.split(100 if s.quick else min(VALIDATION, len(train) // 10), seed=s.seed)
if not s.quick:
    norm = md.data.Normalize(*md.data.channel_stats(train))
    train.transform = md.data.Compose(*augment, norm)
    val.transform = test.transform = norm
in_channels, size = train.images.shape[1], train.images.shape[2]
print(f"{dataset}: {len(train)} training, {len(val)} validation, {len(test)} test images; {s.epochs} epochs, "
      f"batch {s.batch_size}, SGD lr {s.lr}, momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}; "
      f"backend {md.get_backend()}")

# %% [markdown]
# ## 2. The three runs
#
# Besides the losses, every tenth of an epoch we measure how far the first BN
# layer's running statistics are from the true statistics of its input over
# 2000 training images with the current weights: that lag is what the decay
# changes.

# %%
def population_stats(model, probe):
    """The true mean and variance of the first BN layer's input over the probe images."""
    with md.no_grad():
        z = model.features[0](probe).numpy()           # (n, 6, H, W)
    return z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3), ddof=0 if s.biased_running_var else 1)


def make_model(decay):
    """LeNet-5 without BN (None), with minidl's BN at this decay, or with a BN module class."""
    md.manual_seed(s.seed)                   # the same initial conv/linear weights for every run
    if isinstance(decay, type):
        bn = lambda c, dims: decay(c, dims)                  # the homework's constructor
    else:
        bn = None if decay is None else (lambda c, dims: md.nn.BatchNorm(
            c, dims, decay=decay, unbiased_running_var=not s.biased_running_var))
    return md.models.LeNet5(in_channels=in_channels, input_size=size, norm=bn)


def running_stats(layer):
    """A BN layer's (running mean, running variance), by minidl's or the homework's names."""
    mean, var = (getattr(layer, name) for name in (("running_mean", "running_var") if hasattr(layer, "running_mean")
                                                     else ("moving_mean", "moving_var")))
    return md.backend.as_numpy(mean.data).ravel(), md.backend.as_numpy(var.data).ravel()


def resume(ckpt, identity, model, opt):
    """(first epoch, history) from this run's checkpoint; refuses another run's."""
    if s.fresh or not os.path.exists(ckpt):
        return 0, None
    state = md.load(ckpt)
    check_resume(ckpt, state.get("run"), identity)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return int(state["epoch"]), {k: [float(v) for v in np.atleast_1d(a)] if np.size(a) else []
                                 for k, a in state["history"].items()}


HISTORY = ("step_loss", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc",
           "lag_step", "lag_mean", "lag_var", "epoch_seconds")
def train_run(label):
    """One model trained (or resumed from its checkpoint) to the end: its history."""
    decay = RUNS[label]
    model = make_model(decay)
    opt = md.optim.SGD(model.parameters(), lr=s.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = md.optim.CosineAnnealingLR(opt, T_max=s.epochs)
    ckpt = os.path.join(s.out, label.replace(" ", "_").replace("=", "") + ".npz")
    identity = run_identity(dataset=dataset, model=label, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                            seed=s.seed, subset=s.subset, quick=s.quick, biased_running_var=s.biased_running_var,
                            **({"norm": s.norm, "norm_source": norm_source} if s.norm else {}))
    start, history = resume(ckpt, identity, model, opt)
    history = history or {k: [] for k in HISTORY}
    sched.epoch = start
    probe = md.Tensor(train.get_batch(np.arange(min(2000, len(train))))[0])
    probe_every = max(1, len(train) // s.batch_size // PROBES_PER_EPOCH)
    epoch_sums = dict(loss=0.0, correct=0, seen=0, start=time.time())

    def on_batch(logits, y, loss):
        history["step_loss"].append(loss)
        epoch_sums["loss"] += loss * len(y)
        epoch_sums["correct"] += (logits.argmax(axis=1) == y).sum().item()
        epoch_sums["seen"] += len(y)

    def measure_lag(step, model):
        """How far the first BN layer's running statistics are from its input's."""
        if decay is not None and step % probe_every == 0:
            mean, var = population_stats(model, probe)
            running_mean, running_var = running_stats(model.features[1])
            history["lag_step"].append(step)
            history["lag_mean"].append(float(np.abs(running_mean - mean).mean()))
            history["lag_var"].append(float(np.abs(running_var - var).mean()))

    def end_of_epoch(epoch, model):
        """Evaluate, record the epoch, and save a checkpoint to resume from."""
        sched.step()
        val_loss, val_acc = evaluate(model, val)
        seen = epoch_sums["seen"]
        for key, v in (("train_loss", epoch_sums["loss"] / seen), ("train_acc", 100.0 * epoch_sums["correct"] / seen),
                       ("val_loss", val_loss), ("val_acc", val_acc), ("test_acc", evaluate(model, test)[1]),
                       ("epoch_seconds", time.time() - epoch_sums["start"])):
            history[key].append(v)
        md.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                 "run": json.dumps(identity),
                 "history": {key: np.asarray(v, dtype=float) for key, v in history.items()}}, ckpt)
        epoch_sums.update(loss=0.0, correct=0, seen=0, start=time.time())

    train_classifier(model, train, s.epochs, s.batch_size, s.lr, s.seed, desc=label, opt=opt, start_epoch=start,
                     on_batch=on_batch, after_step=measure_lag, after_epoch=end_of_epoch, reseed=True)
    return {"history": history, "resumed_after": start}


def student_run(label):
    """A run of the student's module: what it raises comes back as a short error
    naming their file and line, not a worker's whole traceback."""
    try:
        return train_run(label)
    except Exception as e:
        raise grader.StudentError(f"--norm: your {student.__name__} raised while training: "
                                  f"{grader.short_error(e)}") from None


try:
    finished = run_all({label: (student_run if s.norm and label == f"your {student.__name__}" else train_run,
                                (label,)) for label in RUNS}, {}, s.workers, s.scheduler, desc="LeNet-5")
except grader.StudentError as e:
    raise SystemExit(str(e)) from None
results = {label: finished[label]["history"] for label in RUNS}   # in the table's order, whichever finished first
for label, h in results.items():
    if finished[label]["resumed_after"]:
        print(f"{label}: resumed after epoch {finished[label]['resumed_after']} from its checkpoint")
    print(f"{label}: test accuracy {h['test_acc'][-1]:.2f}% after {s.epochs} epochs ({sum(h['epoch_seconds']):.0f} s)")

# %% [markdown]
# ## 3. Training and validation loss: the homework's plot
#
# The training loss is drawn as a moving average over a tenth of an epoch (the
# legend gives the window), the validation loss once per epoch. One thing to
# expect: **the two BN curves should lie on top of each other in training.** The
# decay only changes the running statistics, and training never uses them, so
# two BN runs from the same weights on the same batches compute the same numbers;
# they can part only in eval mode, in the validation curve and the test accuracy.
# The line under the plot checks that on this run.

# %%
colors = dict(zip(results, ["tab:gray", "tab:blue", "tab:red"]))
styles = dict(zip(results, ["-", "-", ":"]))     # the BN runs can coincide: the second is dotted
steps_per_epoch = len(results["no BN"]["step_loss"]) // max(1, len(results["no BN"]["val_loss"]))
window = max(1, steps_per_epoch // 10)
fig, ax = plt.subplots(figsize=(11, 4.8))
for label, h in results.items():
    smooth = np.convolve(h["step_loss"], np.ones(window) / window, mode="valid")
    ax.plot(np.arange(len(smooth)) + window, smooth, styles[label], color=colors[label], lw=1.4,
            label=f"{label}, training " + (f"(mean of the last {window} steps)" if window > 1 else "(per step)"))
    at = steps_per_epoch * np.arange(1, len(h["val_loss"]) + 1)
    ax.plot(at, h["val_loss"], "o--", color=colors[label], ms=5, label=f"{label}, validation (per epoch)")
ax.set(xlabel="training step", ylabel="cross-entropy loss", title=f"LeNet-5 on {dataset}: training and validation loss")
integer_ticks(ax.xaxis)
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))       # beside the curves, not over them
plots = {"loss": show_figure(fig, f"{s.out}/loss.png")}
bn_runs = [label for label in results if label != "no BN"]
findings = []                 # what the chapter says of this run, repeated in summary.md
if len(bn_runs) == 2:
    gap = np.max(np.abs(np.subtract(*[results[label]["step_loss"] for label in bn_runs])))
    val_gap = np.max(np.abs(np.subtract(*[results[label]["val_loss"] for label in bn_runs])))
    same = "are identical" if gap == 0 else f"differ by at most {gap:.3g}"
    findings.append(f"{bn_runs[0]} and {bn_runs[1]}: the training losses {same} over "
                    f"{len(results[bn_runs[0]]['step_loss'])} steps; the validation losses differ by up to "
                    f"{val_gap:.3g}.")
    say(findings[-1])

# %% [markdown]
# ## 4. Accuracy per epoch

# %%
fig, ax = plt.subplots(figsize=(11, 4.5))
for label, h in results.items():
    epochs = np.arange(1, len(h["train_acc"]) + 1)
    ax.plot(epochs, h["train_acc"], styles[label], marker="o", color=colors[label], label=f"{label}, training")
    ax.plot(epochs, h["test_acc"], "--", marker="s", color=colors[label], label=f"{label}, test")
ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (training: during the epoch, in train mode)")
integer_ticks(ax.xaxis)
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
plots["accuracy"] = show_figure(fig, f"{s.out}/accuracy.png")

# %% [markdown]
# ## 5. What the decay changes: how far the running statistics lag
#
# After $t$ updates the starting value still weighs $\text{decay}^t$ in the
# running average: $0.99^{100} \approx 0.37$ but $0.9^{100} \approx 3\times10^{-5}$.
# A high decay needs hundreds of steps to forget its initial $\mu = 0$,
# $\sigma^2 = 1$, and then follows the moving weights with a delay. In a short
# run that delay is what eval mode sees.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for label, h in results.items():
    if h["lag_step"]:
        axes[0].semilogy(h["lag_step"], h["lag_mean"], color=colors[label], label=label)
        axes[1].semilogy(h["lag_step"], h["lag_var"], color=colors[label], label=label)
for ax, what in zip(axes, ("running_mean", "running_var")):
    ax.set(xlabel="training step", ylabel="mean |running − population| (log scale)", title=f"{what} lag (first BN)")
    integer_ticks(ax.xaxis)
    ax.legend()
plots["running stats"] = show_figure(fig, f"{s.out}/running_stats.png")
total_steps = len(results["no BN"]["step_loss"])
findings.append(f"This run made {total_steps} updates: the initial running statistics still weigh "
                f"{0.99 ** total_steps:.2g} at decay 0.99 and {0.9 ** total_steps:.2g} at decay 0.9."
                + (" At decay 0.99 that is far from negligible, so eval mode normalizes with stale statistics: "
                   "this is why decay 0.99 can score far below decay 0.9 in a short run."
                   if 0.99 ** total_steps > 0.05 and not s.quick else ""))
say(findings[-1])

# %% [markdown]
# ## 6. The result table beside the course's
#
# This run's models on this run's data first, then the course's own three
# models with its CIFAR-10 figures (deck 002). Where this run used another
# dataset the two are not comparable in value, only in ordering; a model the
# course did not train (your module, with `--norm`) has no course figure.

# %%
rows = [[label, f"{h['test_acc'][-1]:.2f}%", f"{dataset}, this run", f"{h['train_loss'][-1]:.4f}",
         f"{h['val_loss'][-1]:.4f}", f"{sum(h['epoch_seconds']):.0f} s"] for label, h in results.items()]
rows += [[f"the course's {label}", f"{acc:.2f}%", "CIFAR-10, deck 002", "–", "–", "–"]
         for label, acc in COURSE_CIFAR10.items()]
table = show_table(["model", "test accuracy", "data", "final training loss", "final validation loss", "time"], rows)
ranked = sorted(results, key=lambda label: -results[label]["test_acc"][-1])
ranking = (f"Ours, by test accuracy on {dataset}: {' > '.join(ranked)}; the course's three on CIFAR-10: "
           f"{' > '.join(sorted(COURSE_CIFAR10, key=lambda label: -COURSE_CIFAR10[label]))}.")
findings.append(verdict(ranking + " One run each: whether this order would hold over other random seeds, "
                        "this lesson does not measure (the BN-placement lesson shows how far seeds move such "
                        "numbers).", [h["test_acc"][-1] for h in results.values()], s.quick))
say(findings[-1])
write_json(f"{s.out}/results.json", {"dataset": dataset, "epochs": s.epochs, "batch_size": s.batch_size,
                                     "lr": s.lr, "runs": results})
write_text(f"{s.out}/summary.md", summary_header(s, f"LeNet-5 with and without BatchNorm on {dataset}") +
           f"{s.epochs} epochs, batch {s.batch_size}, SGD lr {s.lr}, momentum {MOMENTUM}, weight decay "
           f"{WEIGHT_DECAY}, cosine schedule, seed {s.seed}; the same initial weights and data order for all "
           f"three runs.\n\n{table}\n\n" + "".join(f + "\n\n" for f in findings if f) +
           " ".join(f"![{k}]({v})" for k, v in plots.items()) + "\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/lenet5_batchnorm.md, which the README quotes
