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
function (``batchnorm_backward``) in this process (the student's own code, so
unsandboxed), prints every line and exits 1 on any FAIL. A hand-out notebook
works too: ``check homework.ipynb``.

``grade FOLDER --out DIR`` grades every ``.py`` and hand-out ``.ipynb`` in FOLDER:
each runs in the sandbox (``lessons.homework.sandbox``; where it cannot start,
``grade`` refuses unless ``--no-sandbox``) on inputs drawn for this grading run,
and the judge marks its raw results in this process; on every core
(``--workers``) or on a Dask cluster (``--scheduler``). It writes ``DIR/grades.csv``
(one row per file), ``DIR/feedback/<submission>.txt`` and ``DIR/summary.txt``, and
grading again skips submissions already graded and unchanged unless ``--fresh``.
It exits 0 when every file got a row.
"""
import argparse
import os
import sys
import time

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notebook.py")


def handout_notebook():
    """The student's notebook (an nbformat NotebookNode), from its Jupytext source,
    ``lessons/homework/notebook.py``: its first code cell is tagged ``homework``."""
    try:
        import jupytext
    except ImportError:
        raise SystemExit("handout: the hand-out is written from a Jupytext file: pip install -e '.[notebook]'") from None
    notebook = jupytext.read(NOTEBOOK)
    notebook.metadata.pop("jupytext", None)
    for cell in notebook.cells:
        cell.metadata.pop("lines_to_next_cell", None)
    return notebook


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
    g.add_argument("--name", default="BatchNorm2d", help="the target: the class (or backward function) each "
                   "submission defines (default BatchNorm2d; batchnorm_backward grades the derivation part)")
    g.add_argument("--workers", type=int, help="submissions graded at once (default: one per core)")
    g.add_argument("--scheduler", help="a Dask scheduler's address (e.g. tcp://10.0.0.5:8786): grade on its "
                   "workers, each submission still in its own limited, sandboxed process (pip install -e '.[cluster]')")
    from lessons.homework.sandbox import MEMORY_LIMIT, TIME_LIMIT
    g.add_argument("--time-limit", type=float, default=TIME_LIMIT, help=f"seconds per submission (default {TIME_LIMIT})")
    g.add_argument("--memory-limit", type=float, default=MEMORY_LIMIT,
                   help=f"MB of memory per submission, all its processes together (default {MEMORY_LIMIT})")
    g.add_argument("--fresh", action="store_true", help="grade every submission again")
    g.add_argument("--seed", type=int, help="the exam of an earlier run (its gradebook's seed column), to "
                   "reproduce a row; default: a fresh one, which no submission can know")
    g.add_argument("--no-sandbox", action="store_true", help="grade where the sandbox cannot start, each "
                   "submission unsandboxed with your rights (every row and the summary say so)")
    args = p.parse_args(argv)
    if args.command == "handout":
        import nbformat
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "homework.ipynb")
        nbformat.write(handout_notebook(), path)
        print(f"wrote {path}")
        return 0
    if args.command == "check":
        from lessons.homework.check import check
        return check(args.spec)
    from lessons.homework.grading import grade_folder
    start = time.time()
    rows, summary, entries = grade_folder(args.folder, args.out, args.name, args.workers, args.scheduler,
                                          args.time_limit, args.memory_limit, args.fresh, not args.no_sandbox,
                                          args.seed)
    print("\n".join(summary))
    print(f"gradebook {os.path.join(args.out, 'grades.csv')}, feedback in {os.path.join(args.out, 'feedback')}/ "
          f"({time.time() - start:.1f} s)")
    return 0 if all(e.shown in rows for e in entries) else 1


if __name__ == "__main__":
    sys.exit(main())
