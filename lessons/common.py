"""What every lesson shares: its settings and flags, its output folder, output
for a person (progress bars, tables, Markdown), the guard on verdicts, the
identity of a run it resumes, and the data and training loop the comparison
lessons use."""
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


QUICK_BANNER = ("**Quick run: a smoke test.** The data are synthetic and the runs tiny: this proves the "
                "code runs, and its numbers mean nothing. No verdict is drawn from them.")


def settings(name, defaults, quick=None, doc=None, help=None, banner=QUICK_BANNER):
    """A lesson's settings with its flags applied: ``defaults`` are the constants
    at the lesson's top ({setting: default}); each becomes a flag
    ``--setting-name`` typed by its default (bool: a switch, list: one or more
    values, None: a string). ``quick`` holds what ``--quick`` changes (the one
    source of quick settings); a flag the user gave wins over it. Every lesson
    also has ``--out`` (default runs/<name>, or runs/<name>-quick) and ``--fresh``
    (ignore finished runs in --out).

    Flags come from the command line in a script and from the environment
    variable MINIDL_LESSON_ARGS in a notebook (a kernel's argv is not the
    lesson's), e.g. MINIDL_LESSON_ARGS="--quick". Returns a namespace with the
    settings, ``quick``, ``fresh`` and ``out`` (the folder, made)."""
    quick, help = quick or {}, help or {}
    unknown = set(quick) - set(defaults)
    if unknown:
        raise ValueError(f"{name}: quick settings {sorted(unknown)} have no default")
    p = argparse.ArgumentParser(prog=f"python -m lessons.{name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--out", help=f"output folder (default runs/{name}, or runs/{name}-quick with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test in seconds: " + ", ".join(f"{k}={v}" for k, v in quick.items()))
    p.add_argument("--fresh", action="store_true", help="ignore (and overwrite) finished runs in --out")
    for key, default in defaults.items():
        flag, text = "--" + key.replace("_", "-"), help.get(key, "") + f" (default {default})"
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=help.get(key))
        elif isinstance(default, (list, tuple)):
            p.add_argument(flag, type=type(default[0]), nargs="+", help=text)
        else:
            p.add_argument(flag, type=str if default is None else type(default), help=text)
    argv = shlex.split(os.environ.get(ARGS_VARIABLE, "")) if in_notebook() else sys.argv[1:]
    given = vars(p.parse_args(argv))
    s = dict(defaults, quick=given.pop("quick", False), fresh=given.pop("fresh", False))
    if s["quick"]:
        s.update(quick)
    s.update(given)                       # a flag the user gave wins over --quick
    s["out"] = out_dir(s.get("out") or default_out(name, s["quick"]))
    if s["quick"] and banner:
        say(banner)
    return argparse.Namespace(**s)


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


def progress(iterable, desc=None):
    """One progress bar per run that updates in place and leaves nothing behind.
    In a terminal: tqdm on stderr, erased when the run ends. In a notebook: one
    line under the cell, updated in place and emptied when the run ends, so a
    saved or rendered notebook keeps no bar. Elsewhere (logs, pipes, the tests'
    scripts): nothing. MINIDL_PROGRESS=0 silences it, =1 forces it in a terminal."""
    setting = os.environ.get("MINIDL_PROGRESS")
    if setting != "0" and in_notebook():
        return NotebookBar(iterable, desc)
    from tqdm import tqdm
    show = setting == "1" or (setting != "0" and sys.stderr.isatty())
    return tqdm(iterable, desc=desc, leave=False, disable=not show, dynamic_ncols=True, file=sys.stderr)


class NotebookBar:
    """A text progress line in a notebook cell, drawn through one display handle."""

    def __init__(self, iterable, desc=None, width=30, every=0.25):
        self.iterable, self.desc, self.width, self.every = iterable, desc or "", width, every
        self.postfix = ""

    def set_postfix(self, refresh=False, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __len__(self):
        return len(self.iterable)

    def __iter__(self):
        import time
        from IPython.display import display
        total = len(self.iterable) if hasattr(self.iterable, "__len__") else None
        handle, start, shown = display({"text/plain": self.desc}, raw=True, display_id=True), time.time(), 0.0
        try:
            for k, item in enumerate(self.iterable):
                yield item
                now = time.time()
                if now - shown >= self.every:
                    shown = now
                    done = (k + 1) / total if total else 0
                    bar = "█" * int(done * self.width) + "·" * (self.width - int(done * self.width))
                    count = f"{k + 1}/{total}" if total else f"{k + 1}"
                    handle.update({"text/plain": f"{self.desc} {bar} {count} "
                                   f"[{now - start:.0f}s] {self.postfix}"}, raw=True)
        finally:
            handle.update({"text/plain": ""}, raw=True)   # a finished run leaves no bar behind


# ---- output for a person: Markdown where a notebook renders it, text elsewhere ----
def say(markdown):
    """A conclusion or note computed from the run: rendered Markdown in a notebook,
    plain text on the command line."""
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown(markdown))
    else:
        print(markdown.replace("**", "") + "\n")


def table(header, rows):
    """A Markdown table (for summary.md), from a header and rows of cells (their
    * _ | written literally, not as Markdown)."""
    escape = lambda c: str(c).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
    cells = [[escape(c) for c in header]] + [[escape(c) for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)] +
                      ["| " + " | ".join(r) + " |" for r in cells[1:]])


def show_table(header, rows, title=None):
    """Show a table: rendered in a notebook, aligned columns on the command line.
    Returns its Markdown, for summary.md."""
    markdown = table(header, rows)
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown((f"**{title}**\n\n" if title else "") + markdown))
    else:
        cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
        widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        print((title + "\n" if title else "") + "\n".join(
            [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]) + "\n")
    return markdown


# ---- verdicts only from models that learned -----------------------------------
LEARNED_FACTOR = 2.0     # a classifier has learned when its accuracy is at least twice chance


def learned(accuracies, chance=10.0):
    """True when every accuracy (%) is at least LEARNED_FACTOR × chance."""
    return all(a is not None and np.isfinite(a) and a >= LEARNED_FACTOR * chance for a in accuracies)


def verdict(text, accuracies, quick, chance=10.0):
    """``text`` where it may be said: never from a quick run (a smoke test), and
    only when every model the verdict rests on learned (accuracy at least twice
    chance); otherwise the reason there is none."""
    if quick:
        return "No verdict: this is a quick run, a smoke test on synthetic data."
    if not learned(accuracies, chance):
        worst = min((a for a in accuracies if a is not None and np.isfinite(a)), default=float("nan"))
        return (f"No verdict: a model it rests on reached {worst:.1f}% accuracy, under "
                f"{LEARNED_FACTOR * chance:.0f}% (twice chance), so it learned too little to compare.")
    return text


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
            correct += (logits.argmax(axis=1) == y).sum().item()
    model.train()
    return loss_sum / len(dataset), 100.0 * correct / len(dataset)


def train_classifier(model, train, epochs, batch_size, lr, seed, momentum=0.9, weight_decay=5e-4,
                     desc=None, after_step=None, on_batch=None, after_epoch=None, opt=None, start_epoch=0,
                     reseed=False):
    """SGD with momentum on cross-entropy, the data order fixed by ``seed`` (and,
    with ``reseed``, minidl's own random draws such as augmentation).

    Hooks: ``on_batch(logits, y, loss)`` sees every batch, ``after_step(step,
    model)`` runs after every update (a probe, a schedule; ``step`` counts from
    the start of training), ``after_epoch(epoch, model)`` after each epoch's
    last update. ``opt`` and ``start_epoch`` resume a run from a checkpoint.
    Returns the training loss of every step; a run that diverges stops there,
    its last loss NaN."""
    import minidl.functional as F
    if opt is None:
        opt = md.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loader = md.data.DataLoader(train, batch_size, shuffle=True, drop_last=True)
    losses, steps = [], len(loader)
    bar = progress(Epochs(loader, epochs, seed, start_epoch, reseed), desc=desc)
    with np.errstate(over="ignore", invalid="ignore"):    # divergence is reported as a NaN loss
        for step, (x, y) in enumerate(bar, start_epoch * steps):
            try:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            except FloatingPointError:       # the loss or a gradient is no longer finite
                losses.append(float("nan"))
                return losses
            losses.append(loss.item())
            if on_batch is not None:
                on_batch(logits, y, losses[-1])
            if after_step is not None:
                after_step(step, model)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if after_epoch is not None and step % steps == steps - 1:
                after_epoch(step // steps, model)
    return losses


class Epochs:
    """The batches of epochs ``start`` … ``epochs − 1`` over ``loader``, each
    epoch's order fixed by (seed, epoch), and with ``reseed`` minidl's own random
    draws (augmentation) too: one iterable, so one progress bar spans a whole
    run, and a resumed run sees the same data as an uninterrupted one."""

    def __init__(self, loader, epochs, seed, start=0, reseed=False):
        self.loader, self.epochs, self.seed, self.start, self.reseed = loader, epochs, seed, start, reseed

    def __len__(self):
        return (self.epochs - self.start) * len(self.loader)

    def __iter__(self):
        for epoch in range(self.start, self.epochs):
            self.loader.rng = np.random.default_rng([self.seed, epoch])
            if self.reseed:
                md.manual_seed([self.seed, epoch])
            yield from self.loader


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
