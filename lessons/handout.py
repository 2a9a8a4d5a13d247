"""Write lessons as executed notebooks (and HTML pages) to hand out or project.

    python -m lessons.handout                       # every lesson, default runs, into handouts/
    python -m lessons.handout --quick               # every lesson's quick run (seconds each)
    python -m lessons.handout conditioning normalizers --out /tmp/class

Each lesson runs top to bottom on a Python kernel, exactly as a reader would run
it in Jupyter, and is saved with its outputs as ``<out>/<lesson>.ipynb`` and
``<out>/<lesson>.html``. Its plots and results go to ``<out>/runs/<lesson>``.
Needs the notebook extra: ``pip install -e ".[notebook]"``.
"""
import argparse
import os
import sys
import time

import lessons
from lessons.settings import ARGS_VARIABLE

LESSONS = ["conditioning", "batchnorm_backward", "lenet5_batchnorm", "normalizers", "batch_size",
           "bn_placement", "deep_signal", "smoothness", "weight_init", "bn_regularization"]


def execute(name, folder, quick=False, timeout=None):
    """Run lessons/<name>.py as a notebook in ``folder``; returns the executed notebook."""
    import jupytext
    import nbclient
    notebook = jupytext.read(os.path.join(os.path.dirname(lessons.__file__), f"{name}.py"))
    flags = f"--out {os.path.join(os.path.abspath(folder), 'runs', name)}" + (" --quick" if quick else "")
    previous = os.environ.get(ARGS_VARIABLE)
    os.environ[ARGS_VARIABLE] = flags
    try:
        nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": os.path.abspath(folder)}}).execute()
    finally:
        if previous is None:
            del os.environ[ARGS_VARIABLE]
        else:
            os.environ[ARGS_VARIABLE] = previous
    return notebook


def write(notebook, name, folder, mathjax=None):
    """<folder>/<name>.ipynb, and <folder>/<name>.html where nbconvert is installed
    (formulas typeset by MathJax from ``mathjax``, a URL; default: nbconvert's CDN).

    The notebook leaves without the Jupytext metadata it was read with: that
    pairs it with a ``.py`` in percent format, and Jupytext's contents manager
    (JupyterLab with jupytext installed) then refuses to open an ``.ipynb`` that
    is not one of its paired formats. A hand-out is a notebook of its own."""
    import nbformat
    notebook.metadata.pop("jupytext", None)
    nbformat.write(notebook, os.path.join(folder, f"{name}.ipynb"))
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        print("  (no HTML: pip install nbconvert)")
        return
    exporter = HTMLExporter(mathjax_url=mathjax) if mathjax else HTMLExporter()
    html, _ = exporter.from_notebook_node(notebook)
    with open(os.path.join(folder, f"{name}.html"), "w") as f:
        f.write(html)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lessons.handout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="LESSON", help=f"default: all ({', '.join(LESSONS)})")
    p.add_argument("--out", default="handouts")
    p.add_argument("--quick", action="store_true", help="each lesson's quick run (a smoke test)")
    p.add_argument("--mathjax", metavar="URL", help="where the HTML pages load MathJax from, for a classroom "
                   "without internet, e.g. file:///usr/share/javascript/mathjax/MathJax.js?config=TeX-AMS_CHTML "
                   "(Debian's libjs-mathjax); default: a CDN")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in LESSONS]
    if unknown:
        p.error(f"no lesson {', '.join(unknown)}; the lessons are {', '.join(LESSONS)}")
    os.makedirs(args.out, exist_ok=True)
    for name in args.names or LESSONS:
        start = time.time()
        print(f"{name}: running ...", flush=True)
        write(execute(name, args.out, args.quick), name, args.out, args.mathjax)
        print(f"{name}: {args.out}/{name}.ipynb ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
