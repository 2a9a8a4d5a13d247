"""The BatchNorm homework, from hand-out to gradebook, in one command.

    python -m lessons.homework handout --out handout        # the student's notebook
    python -m lessons.homework check my_bn.py:BatchNorm2d   # a student's self-check
    python -m lessons.homework grade submissions/ --out grades   # a class's submissions

``handout`` writes ``homework.ipynb``: the course's task, the skeleton as one
code cell tagged ``homework``, cells that check the class line by line (PASS or
FAIL with a hint, never an exception, so an unfinished notebook runs top to
bottom), and the experiment: LeNet-5 with and without the student's module on
Fashion-MNIST, the loss curves and the test-accuracy table.

``check FILE.py:NAME`` grades a module class (default BatchNorm2d) or a backward
function (``batchnorm_backward``) in this process, prints every line and exits 1
on any FAIL. A hand-out notebook works too: ``check homework.ipynb``.

``grade FOLDER --out DIR`` grades every ``.py`` and hand-out ``.ipynb`` in FOLDER,
each as untrusted code in its own process with a time and a memory limit, inside
bubblewrap where it is installed (``lessons.homework.sandbox``); on every core
(``--workers``) or on a Dask cluster (``--scheduler``). It writes ``DIR/grades.csv``
(one row per submission) and ``DIR/feedback/<submission>.txt`` (the report
``check`` prints), and grading again skips submissions already graded and
unchanged unless ``--fresh``. It exits 0 when every submission got a row.
"""
import argparse
import collections
import concurrent.futures as cf
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import time

GRADES_COLUMNS = ("submission", "score", "max_score", "status", "failed_lines", "sandboxed", "seconds", "sha256")
MAX_SCORES = {"module": 14, "backward": 6}     # 7 lines × 2 shapes; 3 gradients × 2 shapes


# ---- submissions: a .py file, or the homework-tagged cells of a hand-out notebook ----
def notebook_code(path):
    """The source of a notebook's cells tagged ``homework``, read as data (JSON),
    never run; IPython's magics (``%``, ``!``) become comments. Raises ValueError
    when no cell is tagged."""
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    cells = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"
             and "homework" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"{os.path.basename(path)} has no code cell tagged 'homework' (the hand-out's first "
                         "code cell carries the tag; keep your class in it)")
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    return "\n\n".join("\n".join("# " + line if line.lstrip().startswith(("%", "!")) else line
                                 for line in source.splitlines()) for source in sources) + "\n"


def submission_code(path):
    """The Python source a submission holds (a .py file, or a notebook's homework cells)."""
    if path.endswith(".ipynb"):
        return notebook_code(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def find_submissions(folder):
    """The submissions in ``folder``: its .py and .ipynb files, by name."""
    if not os.path.isdir(folder):
        raise SystemExit(f"grade: no folder {folder}")
    return sorted(f for f in os.listdir(folder) if f.endswith((".py", ".ipynb")) and not f.startswith("."))


# ---- check: the student's self-check -----------------------------------------------
def check(spec):
    """Grade ``FILE.py:NAME`` (or ``FILE.ipynb[:NAME]``) in this process, as a student
    checks their own work; returns the exit status (0 on PASS)."""
    from lessons import homework as grader
    target, _, name = spec.partition(":")
    if target.endswith(".ipynb"):
        try:
            code = notebook_code(target)
        except (OSError, ValueError) as e:
            raise SystemExit(f"check: {e}") from None
        with tempfile.TemporaryDirectory(prefix="homework-") as folder:
            path = os.path.join(folder, os.path.basename(target)[:-len(".ipynb")] + ".py")
            with open(path, "w") as f:
                f.write(code)
            return check(f"{path}:{name or 'BatchNorm2d'}")
    report = grader.grade_any(grader.load_function(spec))
    return 0 if report.passed else 1


def check_line(cls, line):
    """One of the module's lines (e.g. "moving averages") on both shapes, printed
    PASS or FAIL with its hint: the hand-out's check cells. Never raises (an
    unfinished notebook runs top to bottom)."""
    from lessons.homework import module
    try:
        module.grade_lines(cls, [line])
    except (Exception, SystemExit) as e:     # not a module class at all, for instance
        print(f"FAIL  {line}: could not be checked: {e if isinstance(e, SystemExit) else short_error(e)}")


def module_passes(cls):
    """Whether the module passes every line (nothing printed), and the failed lines."""
    from contextlib import redirect_stdout
    from lessons.homework import grade_module
    try:
        with redirect_stdout(io.StringIO()):
            report = grade_module(cls)
    except Exception as e:
        return False, [f"{type(e).__name__}: {e}"]
    return report.passed, sorted({line["name"] for line in report.failures})


# ---- grade: a class's submissions into a gradebook ------------------------------------
def read_gradebook(path):
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {row["submission"]: row for row in csv.DictReader(f)}


def spreadsheet_text(cell):
    """A cell a spreadsheet shows as text: one that starts with = + - @ would be read
    as a formula (a submission chooses the words of its failed lines)."""
    return "'" + cell if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@") else cell


def write_gradebook(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, GRADES_COLUMNS)
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow({k: spreadsheet_text(rows[name].get(k, "")) for k in GRADES_COLUMNS})
    os.replace(tmp, path)


def row_of(name, sha, result, max_score):
    return dict(submission=name, score=result["score"], max_score=result.get("max_score") or max_score,
                status=result["status"], failed_lines="; ".join(result.get("failed", [])),
                sandboxed=result["sandboxed"], seconds=result.get("seconds", ""), sha256=sha)


def summarize(rows, names):
    """The lines printed (and saved) after grading."""
    graded = [rows[n] for n in names if n in rows]
    full = sum(1 for r in graded if r["status"] == "graded" and int(r["score"]) == int(r["max_score"]))
    statuses = collections.Counter(r["status"] for r in graded)
    failed = collections.Counter(line.split(" on ")[0] for r in graded if r["status"] == "graded"
                                 for line in {f.split(" on ")[0] for f in r["failed_lines"].split("; ") if f})
    lines = [f"{len(graded)} of {len(names)} submissions graded into the gradebook: {full} at full marks, "
             f"{statuses['graded'] - full} with partial marks; "
             + ", ".join(f"{statuses[s]} {s}" for s in ("error", "time limit", "memory limit")) + "."]
    if failed:
        line, count = failed.most_common(1)[0]
        lines.append(f"Most frequent failed line: {line!r} ({count} submission{'s' * (count > 1)}).")
    unsandboxed = sorted({r["sandboxed"] for r in graded if r["sandboxed"] != "yes"})
    lines += [f"{sum(r['sandboxed'] == why for r in graded)} submission(s) {why}" for why in unsandboxed]
    if not unsandboxed and graded:
        lines.append("Every submission ran sandboxed (bubblewrap: no network, only its own file and a scratch folder).")
    return lines


def grade_folder(folder, out, name="BatchNorm2d", workers=None, scheduler=None, time_limit=None,
                 memory_limit=None, fresh=False):
    """Grade every submission in ``folder`` into ``out``/grades.csv and
    ``out``/feedback/; returns (rows, summary lines)."""
    from lessons.chapter import progress
    from lessons.homework import sandbox
    from lessons.runs import cluster_executor, default_workers
    time_limit = sandbox.TIME_LIMIT if time_limit is None else time_limit
    memory_limit = sandbox.MEMORY_LIMIT if memory_limit is None else memory_limit
    names = find_submissions(folder)
    os.makedirs(os.path.join(out, "feedback"), exist_ok=True)
    gradebook = os.path.join(out, "grades.csv")
    rows = {} if fresh else read_gradebook(gradebook)
    kind = "module" if name[:1].isupper() else "backward"        # a class is CapWords, a function is not
    todo, codes = [], {}
    for n in names:
        path = os.path.join(folder, n)
        try:
            code = submission_code(path)
        except (OSError, ValueError) as e:
            code = None
            error = str(e)
        sha = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
        if n in rows and rows[n]["status"] == "graded" and rows[n].get("sha256") == sha:
            continue                                    # graded already, and unchanged
        if code is None:                                # a notebook without a homework cell
            rows[n] = row_of(n, sha, dict(status="error", score=0, failed=[], sandboxed="not run"),
                             MAX_SCORES[kind])
            _write_feedback(out, n, error + "\n")
            continue
        todo.append(n)
        codes[n] = (code, sha)
    for n in list(rows):
        if n not in names:
            del rows[n]                                 # a submission no longer in the folder
    if len(todo) < len(names):
        print(f"{len(names) - len(todo)} of {len(names)} submission(s) already in {gradebook} (graded and unchanged, "
              f"or unreadable): grading the other {len(todo)} (--fresh: all)")
    workers = default_workers() if workers is None else workers
    if scheduler is None and workers < 1:
        raise SystemExit(f"grade: --workers must be >= 1, got {workers}")
    import contextlib
    with (cluster_executor(scheduler) if scheduler else
          contextlib.nullcontext(cf.ThreadPoolExecutor(workers))) as executor:
        futures = {executor.submit(sandbox.grade_submission, n, codes[n][0], name, time_limit, memory_limit): n
                   for n in todo}
        try:
            for future in progress(cf.as_completed(futures), desc="grading") if todo else ():
                n = futures[future]
                result = future.result()
                rows[n] = row_of(n, codes[n][1], result, MAX_SCORES[kind])
                _write_feedback(out, n, result["report"])
                write_gradebook(gradebook, rows)
        finally:
            if scheduler is None:
                executor.shutdown(wait=True, cancel_futures=True)
    write_gradebook(gradebook, rows)
    summary = summarize(rows, names)
    if any(r["sandboxed"] != "yes" for r in rows.values()) and sandbox.sandbox_problem():
        summary.append(sandbox.INSTALL_BWRAP.capitalize() + ".")
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    return rows, summary


def _write_feedback(out, name, text):
    with open(os.path.join(out, "feedback", name + ".txt"), "w") as f:
        f.write(text)


# ---- handout: the student's notebook -------------------------------------------------
SKELETON = '''import numpy as np
import minidl as md


class BatchNorm2d(md.nn.Module):
    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__()
        if num_dims == 2:
            shape = (1, num_features)
        else:
            shape = (1, num_features, 1, 1)
        self.gamma = md.nn.Parameter(np.ones(shape, np.float32))
        self.beta = md.nn.Parameter(np.zeros(shape, np.float32))
        self.register_buffer("moving_mean", np.zeros(shape, np.float32))
        self.register_buffer("moving_var", np.ones(shape, np.float32))
        self.momentum = momentum
        self.eps = eps

    def forward(self, X):
        # TODO implement BN: in training, normalize with the batch's mean and variance
        # and update the moving ones; in eval mode (not self.training), use the moving ones.
        raise NotImplementedError("BatchNorm2d.forward is your homework")
'''

TASK = r"""# Homework: Batch Normalization

From the course's slides (deck 002, 课后作业):

> 使用pytorch实现Batch Normalization模块，针对CIFAR-10数据集
> - 对比有/无Batch Normalization的训练集和验证集loss曲线
> - 对比有/无Batch Normalization的测试集准确率

*Implement a Batch Normalization module and, on an image dataset, compare the
training and validation loss curves with and without Batch Normalization, and
the test accuracy with and without it.*

This notebook hands out the skeleton in minidl (a PyTorch module as the slides
write it is graded the same way: `python -m lessons.homework check my_bn.py:BatchNorm2d`),
and runs the comparison on Fashion-MNIST, small enough to finish in a minute.

**Training** normalizes each channel $i$ with its batch's statistics,

$$\mu_i = \frac{1}{B}\sum_{b=1}^{B} z_{b,i}, \qquad \sigma_i^2 = \frac{1}{B}\sum_{b=1}^{B} (z_{b,i} - \mu_i)^2,$$

$$\hat z_i = \frac{z_i - \mu_i}{\sqrt{\sigma_i^2 + \epsilon}}, \qquad \tilde z_i = \gamma_i \hat z_i + \beta_i ,$$

over the batch for a fully connected layer (`num_dims=2`, X is (N, C)) and over
the batch and both spatial axes for a convolution (`num_dims=4`, X is (N, C, H, W)).

**At test time** there is no batch: BN uses estimates of the whole training
set's $\mu$ and $\sigma^2$, kept during training as exponential moving averages,

$$v_t = \text{momentum}\cdot v_{t-1} + (1 - \text{momentum})\cdot y_t ,$$

so `momentum` weighs the **old** value (PyTorch's `momentum` weighs the new
one), and the moving variance is the batch's biased $\sigma^2$, as above.

Write your class in the next cell (keep it in that cell: it carries the tag
`homework`, and the grader reads that cell only). Then run the notebook top to
bottom: the check cells say PASS or FAIL with a hint for each line, and the
experiment trains LeNet-5 with and without your module."""

CHECKS_INTRO = """## Check your module, line by line

Each cell checks one line of the homework on an (N, D) batch and an
(N, C, H, W) batch with large per-channel offsets and scales, and prints PASS or
FAIL with what to change. The teacher's grader runs the same lines."""

EXPERIMENT_INTRO = """## The experiment: LeNet-5 with and without your BatchNorm

LeNet-5 trains on a part of Fashion-MNIST (synthetic images where it is not
installed: `apt-get install dataset-fashion-mnist`), once without normalization
and once with your `BatchNorm2d` after every convolution and hidden linear layer,
from the same initial weights and the same data order. The settings below are
small so that the notebook runs in about a minute; raise them for a real
comparison (the slides used CIFAR-10 for many epochs)."""

EXPERIMENT_SETTINGS = """EPOCHS = 2              # passes over the training images
TRAIN_IMAGES = 2000     # of Fashion-MNIST's 60000
TEST_IMAGES = 1000      # of its 10000
BATCH_SIZE, LR = 64, 0.05"""

EXPERIMENT_DATA = """import minidl as md
from threadpoolctl import threadpool_limits
from lessons import homework
from lessons.training import fashion_mnist

threadpool_limits(1)    # one BLAS thread: LeNet-5's products are small, and more threads only contend

try:
    dataset, train, test = fashion_mnist(False, TRAIN_IMAGES + 500, TEST_IMAGES)
except md.data.DataError as e:
    print(f"Fashion-MNIST is not installed ({e.__class__.__name__}): synthetic images instead")
    dataset, train, test = fashion_mnist(True, TRAIN_IMAGES + 500, TEST_IMAGES)
train, val = train.split(500, seed=0)
val.transform = train.transform
print(f"{dataset}: {len(train)} training, {len(val)} validation, {len(test)} test images")

models = {"no BN": None}
works, failing = homework.module_passes(BatchNorm2d)
if works:
    models["your BatchNorm2d"] = BatchNorm2d
else:
    print("Your BatchNorm2d does not pass the checks yet (" + ", ".join(failing) + "): "
          "the experiment trains LeNet-5 without BN only. Fix those lines and run again.")"""

EXPERIMENT_TRAIN = """from lessons.training import evaluate, train_classifier

histories = {}
for label, norm in models.items():
    md.manual_seed(0)                         # the same initial weights for every model
    model = md.models.LeNet5(in_channels=1, input_size=28,
                             norm=None if norm is None else (lambda c, dims: norm(c, dims)))
    val_loss = []
    try:
        train_loss = train_classifier(model, train, EPOCHS, BATCH_SIZE, LR, seed=0, desc=label,
                                      after_epoch=lambda epoch, m: val_loss.append(evaluate(m, val)[0]))
    except Exception as e:                    # your module broke while training: say where, go on
        print(f"{label}: training stopped: {homework.short_error(e)}")
        continue
    histories[label] = dict(train_loss=train_loss, val_loss=val_loss, test_acc=evaluate(model, test)[1])"""

EXPERIMENT_PLOT = """import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(8, 4))
for (label, h), color in zip(histories.items(), ["tab:gray", "tab:blue"]):
    steps_per_epoch = len(h["train_loss"]) // max(1, len(h["val_loss"]))
    window = max(1, steps_per_epoch // 5)
    smooth = np.convolve(h["train_loss"], np.ones(window) / window, mode="valid")
    ax.plot(np.arange(len(smooth)) + window, smooth, color=color, label=f"{label}, training (per step)")
    ax.plot(steps_per_epoch * np.arange(1, len(h["val_loss"]) + 1), h["val_loss"], "o--", color=color,
            label=f"{label}, validation (per epoch)")
ax.set(xlabel="training step", ylabel="cross-entropy loss", title=f"LeNet-5 on {dataset}")
ax.legend()
plt.show()"""

EXPERIMENT_TABLE = """from lessons.chapter import show_table

show_table(["model", f"test accuracy ({dataset})", "final training loss", "final validation loss"],
           [[label, f"{h['test_acc']:.2f} %", f"{h['train_loss'][-1]:.3f}", f"{h['val_loss'][-1]:.3f}"]
            for label, h in histories.items()])"""

HAND_IN = """## Hand it in

Hand in this notebook (the grader reads the cell tagged `homework`), or your
class in a `.py` file. The grader builds it as
`BatchNorm2d(num_features, num_dims, momentum=0.8, eps=1e-5)`, so use the
momentum and ε you are given."""


def handout_notebook():
    """The student's notebook (an nbformat NotebookNode)."""
    import nbformat
    from lessons.homework.module import MODULE_CHECKS
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell(TASK),
             v4.new_code_cell(SKELETON, metadata={"tags": ["homework"]}),
             v4.new_markdown_cell(CHECKS_INTRO),
             v4.new_code_cell("from lessons.homework import check_line")]
    cells += [v4.new_code_cell(f"check_line(BatchNorm2d, {line!r})") for line, _ in MODULE_CHECKS]
    cells += [v4.new_markdown_cell(EXPERIMENT_INTRO)]
    cells += [v4.new_code_cell(src) for src in (EXPERIMENT_SETTINGS, EXPERIMENT_DATA, EXPERIMENT_TRAIN,
                                                EXPERIMENT_PLOT, EXPERIMENT_TABLE)]
    cells += [v4.new_markdown_cell(HAND_IN)]
    notebook = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                       "name": "python3"}
    return notebook


def short_error(exc):
    from lessons.homework import short_error as short
    return short(exc)


# ---- the command line ------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lessons.homework", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    h = commands.add_parser("handout", help="write the student's notebook, DIR/homework.ipynb")
    h.add_argument("--out", default="handout", help="folder (default handout)")
    c = commands.add_parser("check", help="grade your own FILE.py:NAME (or FILE.ipynb) here and now: a "
                            "BatchNorm module class, or batchnorm_backward(dy, x, gamma, beta, eps) -> (dx, dgamma, "
                            "dbeta) on NumPy arrays, gamma and beta of shape (C,): one value per channel")
    c.add_argument("spec", metavar="FILE.py:NAME")
    g = commands.add_parser("grade", help="grade every submission in FOLDER into DIR/grades.csv")
    g.add_argument("folder")
    g.add_argument("--out", default="grades", help="folder for grades.csv and feedback/ (default grades)")
    g.add_argument("--name", default="BatchNorm2d", help="the class (or backward function) each submission "
                   "holds (default BatchNorm2d; batchnorm_backward grades the derivation part)")
    g.add_argument("--workers", type=int, help="submissions graded at once (default: one per core)")
    g.add_argument("--scheduler", help="a Dask scheduler's address (e.g. tcp://10.0.0.5:8786): grade on its "
                   "workers, each submission still in its own limited, sandboxed process (pip install -e '.[cluster]')")
    from lessons.homework.sandbox import MEMORY_LIMIT, TIME_LIMIT
    g.add_argument("--time-limit", type=float, default=TIME_LIMIT, help=f"seconds per submission (default {TIME_LIMIT})")
    g.add_argument("--memory-limit", type=float, default=MEMORY_LIMIT,
                   help=f"MB of address space per submission (default {MEMORY_LIMIT})")
    g.add_argument("--fresh", action="store_true", help="grade every submission again")
    args = p.parse_args(argv)
    if args.command == "handout":
        import nbformat
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "homework.ipynb")
        nbformat.write(handout_notebook(), path)
        print(f"wrote {path}")
        return 0
    if args.command == "check":
        return check(args.spec)
    start = time.time()
    names = find_submissions(args.folder)
    rows, summary = grade_folder(args.folder, args.out, args.name, args.workers, args.scheduler,
                                 args.time_limit, args.memory_limit, args.fresh)
    print("\n".join(summary))
    print(f"gradebook {os.path.join(args.out, 'grades.csv')}, feedback in {os.path.join(args.out, 'feedback')}/ "
          f"({time.time() - start:.1f} s)")
    return 0 if all(n in rows for n in names) else 1


if __name__ == "__main__":
    sys.exit(main())
