"""What every lesson shares: its settings and flags, its output folder, output
for a person (progress bars, tables, Markdown), the guard on verdicts, the
identity of a run it resumes, and the data and training loop the comparison
lessons use."""
import argparse
import json
import os
import shlex
import sys
import warnings

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


def settings(name, defaults, quick=None, doc=None, help=None, banner=QUICK_BANNER, runs=False):
    """A lesson's settings with its flags applied: ``defaults`` are the constants
    at the lesson's top ({setting: default}); each becomes a flag
    ``--setting-name`` typed by its default (bool: a switch, list: one or more
    values, None: a string). ``quick`` holds what ``--quick`` changes (the one
    source of quick settings); a flag the user gave wins over it. Every lesson
    also has ``--out`` (default runs/<name>, or runs/<name>-quick) and ``--fresh``
    (ignore finished runs in --out); with ``runs``, ``--workers`` too (how many
    independent runs go at once; default: one per core, 1 on the CuPy backend).

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
    if runs:
        p.add_argument("--workers", type=int, help="independent runs at once, each in its own process (default: "
                       "one per core, 1 on the CuPy backend; 1: one after another in this process)")
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
    s = dict(defaults, quick=given.pop("quick", False), fresh=given.pop("fresh", False),
             workers=given.pop("workers", None))
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


class Shown(str):
    """Text that was already shown (a table's Markdown): a notebook does not echo
    it again when it is a cell's last value."""

    def _ipython_display_(self):
        pass


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
    return Shown(markdown)


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


# ---- independent runs, on every core -------------------------------------------
def default_workers():
    """How many runs go at once by default: the cores this process may use
    (``os.sched_getaffinity`` where it exists), 1 on the CuPy backend (one GPU)."""
    if md.get_backend() == "cupy":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Every run multiplies with one BLAS thread, however many runs share the machine:
# OpenBLAS's results change in their last bits with its thread count (measured:
# a LeNet-5 run's final loss 1.0327963 on 1 thread, 1.0327965 on 2), and short
# runs amplify that. One thread costs a run nothing measurable here: minidl's
# products are too small to gain from a second thread, and the cores go to runs.
BLAS_THREADS_PER_RUN = 1


def _start_worker(blas_threads):
    """In each worker process: its share of the BLAS threads, and no progress bars
    (the parent shows one line per run)."""
    global _limits
    from threadpoolctl import threadpool_limits
    os.environ["MINIDL_PROGRESS"] = "0"
    # a forked worker must not write through the parent's streams (a notebook kernel's
    # are sockets served by threads the child does not have): what it has to say, it returns
    sys.stdout = sys.stderr = open(os.devnull, "w")
    _limits = threadpool_limits(blas_threads)       # kept alive for the worker's life


_FORKED_RUNS = {}   # the runs a forked pool's workers find by key (a lesson's functions need no pickling)


def _run_forked(key, blas_threads):
    function, args = _FORKED_RUNS[key]
    return _run_one(function, args, blas_threads)


def _run_one(function, args, blas_threads):
    """One run where it executes: with a fixed number of BLAS threads, so its numbers
    do not depend on how many runs share the machine."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(blas_threads):
        return function(*args)


def _note(error, text):
    """Say where an exception came from (its notes print under the traceback; Python 3.11+)."""
    if hasattr(error, "add_note"):
        error.add_note(text)


class RunsProgress:
    """One line per run in progress and a count of finished runs: updated in place
    in a notebook or a terminal, nothing in a pipe or a log, nothing left when done."""

    def __init__(self, total, desc):
        self.total, self.desc, self.finished, self.running = total, desc or "runs", 0, {}
        self.show = os.environ.get("MINIDL_PROGRESS") != "0" and (in_notebook() or sys.stderr.isatty())
        self.handle, self.lines = None, 0
        if self.show and in_notebook():
            from IPython.display import display
            self.handle = display({"text/plain": ""}, raw=True, display_id=True)

    def update(self):
        if not self.show:
            return
        import time
        now = time.time()
        text = [f"{self.desc}: {self.finished}/{self.total} finished"] + [
            f"  running {key} ({now - t0:.0f} s)" for key, t0 in self.running.items()]
        if self.handle is not None:
            self.handle.update({"text/plain": "\n".join(text)}, raw=True)
        else:
            sys.stderr.write("\x1b[1A\x1b[2K" * self.lines + "\n".join(text) + "\n")
            sys.stderr.flush()
            self.lines = len(text)

    def start(self, key):
        import time
        self.running[key] = time.time()
        self.update()

    def done(self, key):
        self.running.pop(key, None)
        self.finished += 1
        self.update()

    def close(self):
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)
        elif self.show and self.lines:
            sys.stderr.write("\x1b[1A\x1b[2K" * self.lines)
            sys.stderr.flush()


def run_all(runs, store, workers=None, executor=None, desc=None):
    """Run every one of ``runs``, a dict {key: (function, args)}, that ``store``
    (a RunStore, or any dict) does not hold yet, and store each result under its
    key as it finishes. ``function(*args)`` trains one model and returns its
    result; it seeds itself from its arguments, so a run's numbers do not depend
    on the number of workers or the order runs finish.

    ``workers=1`` runs them here, one after another (None: ``default_workers()``). More runs them in that many
    worker processes of the standard library's pool (forked: they share this
    process's data), each run with one BLAS thread (``BLAS_THREADS_PER_RUN``). ``executor``,
    any ``concurrent.futures.Executor`` (a thread pool, or a cluster's, such as
    Dask's ``Client(...).get_executor()``), is used instead of the local pool.
    An exception in a run stops everything: it is raised here, noting the run's
    key and the worker's traceback;
    Ctrl-C stops the workers, and the runs finished so far stay stored."""
    import concurrent.futures as cf
    import multiprocessing
    import traceback
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"run_all: workers must be >= 1, got {workers}")
    if executor is None and workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        print(f"{desc or 'run_all'}: this system cannot fork worker processes (Windows): running the runs "
              "one after another; pass executor= to use a pool of your own")
        workers = 1
    todo = [key for key in runs if key not in store]
    progress_line = RunsProgress(len(runs), desc)
    progress_line.finished = len(runs) - len(todo)
    if executor is None and workers <= 1:
        try:
            for key in todo:
                function, args = runs[key]
                progress_line.start(key)
                try:
                    store[key] = _run_one(function, args, BLAS_THREADS_PER_RUN)
                except BaseException as error:
                    _note(error, f"in run {key!r} of {desc or 'run_all'}")
                    raise
                progress_line.done(key)
        finally:
            progress_line.close()
        return store
    threads = BLAS_THREADS_PER_RUN
    own = executor is None
    if own:
        _FORKED_RUNS.clear()
        _FORKED_RUNS.update(runs)              # before the fork: each worker inherits it
        # fork: the workers share this process's data and the lesson's functions, even a
        # notebook's; they only compute, so the parent's threads they lack are never needed
        executor = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                          initializer=_start_worker, initargs=(threads,))
    futures, queued = {}, list(todo)        # a pool starts its tasks in the order they were submitted
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            for key in todo:
                function, args = runs[key]
                futures[executor.submit(_run_forked, key, threads) if own else
                        executor.submit(_run_one, function, args, threads)] = key
        for key in queued[:workers]:
            progress_line.start(key)
        del queued[:workers]
        for future in cf.as_completed(futures):
            key = futures[future]
            error = future.exception()
            if error is not None:              # the run's own exception, with its key and the worker's traceback
                _note(error, f"in run {key!r} of {desc or 'run_all'}; in its worker:\n"
                             + "".join(traceback.format_exception(error)).rstrip())
                raise error
            store[key] = future.result()
            progress_line.done(key)
            if queued:
                progress_line.start(queued.pop(0))
    except BaseException as stop:
        for future in futures:
            future.cancel()
        if own:
            for process in list(getattr(executor, "_processes", {}).values()):   # stop the runs in flight
                process.terminate()
            executor.shutdown(wait=True, cancel_futures=True)
        if isinstance(stop, KeyboardInterrupt):
            raise KeyboardInterrupt(f"stopped; {sum(k in store for k in runs)} finished run(s) are stored") from None
        raise
    finally:
        progress_line.close()
    if own:
        executor.shutdown()
    return store


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
