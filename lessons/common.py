"""What every lesson shares: its flags and where they come from, its output folder,
JSON/Markdown writers, progress bars, the identity of a run it resumes, and the
data and training loop the comparison lessons use."""
import argparse
import json
import os
import shlex
import sys

import matplotlib
import numpy as np

import minidl as md

ARGS_VARIABLE = "MINIDL_LESSON_ARGS"


def in_notebook():
    """True inside a Jupyter kernel (not merely where ipykernel was imported)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


if not in_notebook():
    matplotlib.use("Agg")   # a script saves PNGs and needs no display; a notebook keeps its inline backend


def lesson_parser(name, doc, quick_help, seed=None, fresh_help="ignore finished runs in --out"):
    """The flags every lesson has (--out, --quick, and --fresh, --seed where it
    resumes or draws); the lesson adds its own."""
    p = argparse.ArgumentParser(prog=f"python -m lessons.{name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(lesson_name=name)
    p.add_argument("--out", help=f"output folder (default runs/{name}, or runs/{name}-quick with --quick)")
    p.add_argument("--quick", action="store_true", help=f"{quick_help} (the tests run this)")
    if fresh_help:
        p.add_argument("--fresh", action="store_true", help=fresh_help)
    if seed is not None:
        p.add_argument("--seed", type=int, default=seed)
    return p


def lesson_args(parser):
    """The lesson's flags: from the command line when it runs as a script, from
    the environment variable MINIDL_LESSON_ARGS when it runs as a notebook
    (a kernel's own argv is not the lesson's), e.g. MINIDL_LESSON_ARGS="--quick".
    ``args.out`` is the output folder, made: runs/<lesson>, or runs/<lesson>-quick."""
    argv = shlex.split(os.environ.get(ARGS_VARIABLE, "")) if in_notebook() else sys.argv[1:]
    args = parser.parse_args(argv)
    args.out = out_dir(args.out or default_out(args.lesson_name, args.quick))
    return args


def out_dir(path):
    os.makedirs(path, exist_ok=True)
    return path


def default_out(name, quick):
    """runs/<name>, or runs/<name>-quick: a quick run never lands in (or resumes) a real run's folder."""
    return os.path.join("runs", name + ("-quick" if quick else ""))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def show_figure(fig, path):
    """Save the figure; in a notebook also show it under the cell."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    if in_notebook():
        plt.show()
    plt.close(fig)


def progress(iterable=None, total=None, desc=None, leave=True):
    """A tqdm progress bar (rate and ETA) on stderr. Quiet where stderr is not a
    terminal (logs, pipes, the tests) unless in a notebook; MINIDL_PROGRESS=0
    silences it, MINIDL_PROGRESS=1 forces it."""
    from tqdm import tqdm
    setting = os.environ.get("MINIDL_PROGRESS")
    show = setting == "1" or (setting != "0" and (sys.stderr.isatty() or in_notebook()))
    return tqdm(iterable, total=total, desc=desc, leave=leave, disable=not show,
                dynamic_ncols=True, file=sys.stderr)


# ---- the identity of a run -------------------------------------------------
class ResumeError(SystemExit):
    """A checkpoint in the output folder was made by a different run."""


def run_identity(**settings):
    """What a checkpoint records about the run that made it: the settings that
    change training, and the minidl version."""
    return dict(settings, minidl=md.__version__)


def check_resume(path, saved, wanted):
    """Refuse to resume ``path`` when the run that saved it (``saved``, the JSON
    string stored in the checkpoint, None if it stored none) differs from this
    one (``wanted``), naming every difference."""
    saved = {} if saved is None else (json.loads(str(saved)) or {})
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {wanted.get(k)!r}"
             for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diffs:
        raise ResumeError(
            f"{path} was made by a different run, so resuming it would report its numbers as "
            "this run's:\n  " + "\n  ".join(diffs) +
            "\nStart afresh with --fresh (overwrites it), or choose another folder with --out.")


# ---- data and training shared by the comparison lessons ---------------------
def synthetic_images(n, seed):
    """Ten classes of 1x28x28 images, each a noisy copy of its own random template
    (the --quick stand-in for Fashion-MNIST: learnable in seconds, no download)."""
    templates = np.random.default_rng(0).random((10, 1, 28, 28))   # shared by train and test
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.clip(templates[y] + 0.35 * rng.standard_normal((n, 1, 28, 28)), 0, 1)
    return md.data.ArrayDataset((x * 255).astype(np.uint8), y)


def fashion_mnist(quick, train_size, test_size, seed=0):
    """(name, train, test): Fashion-MNIST subsets (normalized with the training
    part's statistics), or synthetic images in quick mode."""
    if quick:
        train, test, name = synthetic_images(train_size, 1), synthetic_images(test_size, 2), "synthetic"
    else:
        train = md.data.FashionMNIST(None, train=True).subset(train_size, seed=seed)
        test = md.data.FashionMNIST(None, train=False).subset(test_size, seed=seed)
        name = "fashion-mnist"
    norm = md.data.Normalize(*md.data.channel_stats(train))
    train.transform = test.transform = norm
    return name, train, test


def evaluate(model, dataset, batch_size=500):
    """(mean cross-entropy, accuracy %) in eval mode."""
    import minidl.functional as F
    model.eval()
    loss_sum, correct = 0.0, 0
    with md.no_grad():
        for x, y in md.data.DataLoader(dataset, batch_size):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y).item() * len(y)
            correct += int((logits.numpy().argmax(1) == y.numpy()).sum())
    model.train()
    return loss_sum / len(dataset), 100.0 * correct / len(dataset)


def train_classifier(model, train, epochs, batch_size, lr, seed, momentum=0.9, weight_decay=5e-4,
                     desc=None, after_step=None):
    """SGD with momentum on cross-entropy, the data order fixed by ``seed``.
    ``after_step(step, model)`` runs after every update (a probe, a schedule).
    Returns the training loss of every step; a run that diverges stops there,
    its last loss NaN."""
    import minidl.functional as F
    opt = md.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loader = md.data.DataLoader(train, batch_size, shuffle=True, drop_last=True)
    losses, step = [], 0
    with np.errstate(over="ignore", invalid="ignore"):    # divergence is reported as a NaN loss
        for epoch in range(epochs):
            loader.rng = np.random.default_rng([seed, epoch])
            bar = progress(loader, desc=desc, leave=False)
            for x, y in bar:
                try:
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                except FloatingPointError:       # the loss or a gradient is no longer finite
                    losses.append(float("nan"))
                    return losses
                losses.append(loss.item())
                if after_step is not None:
                    after_step(step, model)
                step += 1
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return losses


class RunStore:
    """Finished runs of a lesson, kept in ``<out>/runs.json`` with the identity
    of the lesson run that made them: an interrupted lesson resumes at the first
    unfinished run, and a changed setting refuses to mix old runs with new ones
    (--fresh starts over)."""

    def __init__(self, out, identity, fresh=False):
        self.path, self.identity = os.path.join(out, "runs.json"), identity
        self.runs = {}
        if os.path.exists(self.path) and not fresh:
            with open(self.path) as f:
                saved = json.load(f)
            check_resume(self.path, json.dumps(saved.get("identity")), identity)
            self.runs = saved["runs"]
            if self.runs:
                print(f"resuming: {len(self.runs)} finished run(s) in {self.path}")

    def __contains__(self, key):
        return key in self.runs

    def __getitem__(self, key):
        return self.runs[key]

    def __setitem__(self, key, result):
        self.runs[key] = result
        write_json(self.path, {"identity": self.identity, "runs": self.runs})
