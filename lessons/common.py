"""What every lesson shares: where its flags come from, its output folder,
JSON/Markdown writers, progress bars, and the identity of a run it resumes."""
import json
import os
import shlex
import sys

import matplotlib

import minidl as md

ARGS_VARIABLE = "MINIDL_LESSON_ARGS"


def in_notebook():
    """True inside a Jupyter kernel (not merely where ipykernel was imported)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


if not in_notebook():
    matplotlib.use("Agg")   # a script saves PNGs and needs no display; a notebook keeps its inline backend


def lesson_args(parser):
    """The lesson's flags: from the command line when it runs as a script, from
    the environment variable MINIDL_LESSON_ARGS when it runs as a notebook
    (a kernel's own argv is not the lesson's), e.g. MINIDL_LESSON_ARGS="--quick"."""
    argv = shlex.split(os.environ.get(ARGS_VARIABLE, "")) if in_notebook() else sys.argv[1:]
    return parser.parse_args(argv)


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
    saved = {} if saved is None else json.loads(str(saved))
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {wanted.get(k)!r}"
             for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diffs:
        raise ResumeError(
            f"{path} was made by a different run, so resuming it would report its numbers as "
            "this run's:\n  " + "\n  ".join(diffs) +
            "\nStart afresh with --fresh (overwrites it), or choose another folder with --out.")
