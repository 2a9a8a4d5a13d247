"""A lesson's settings: the constants at its top, each a flag (from the command
line in a script, from MINIDL_LESSON_ARGS in a notebook), ``--quick`` as the one
source of smoke-test settings, and the folder its run writes to."""
import argparse
import os
import shlex
import sys

from lessons import chapter, verdicts
from lessons.chapter import in_notebook, say

ARGS_VARIABLE = "MINIDL_LESSON_ARGS"

QUICK_BANNER = ("**Quick run: a smoke test.** The data are synthetic and the runs tiny: this proves the "
                "code runs, and its numbers mean nothing. No verdict is drawn from them.")
FULL_RUN_NOTE = ("**Quick run:** this lesson has no smaller settings, so its quick run is its full run, "
                 "on the same data.")


def settings(name, defaults, quick=None, doc=None, help=None, banner=QUICK_BANNER, runs=False, types=None):
    """A lesson's settings with its flags applied: ``defaults`` are the constants
    at the lesson's top ({setting: default}); each becomes a flag
    ``--setting-name`` typed by its default (bool: a switch, list: one or more
    values). A default of None says no type, so ``types`` gives it
    ({setting: int}); one left out is an error here, not a string compared with
    a number later (``--subset 1000`` once crashed that way). ``quick`` holds what ``--quick`` changes (the one
    source of quick settings); a flag the user gave wins over it. Every lesson
    also has ``--out`` (default runs/<name>, or runs/<name>-quick) and ``--fresh``
    (ignore finished runs in --out); with ``runs``, ``--workers`` (how many
    independent runs go at once; default: one per core, 1 on the CuPy backend)
    and ``--scheduler`` (a Dask scheduler's address: the runs go to its cluster).

    Flags come from the command line in a script and from the environment
    variable MINIDL_LESSON_ARGS in a notebook (a kernel's argv is not the
    lesson's), e.g. MINIDL_LESSON_ARGS="--quick". Returns a namespace with the
    settings, ``quick``, ``fresh``, ``workers``, ``scheduler`` and ``out`` (the
    folder, made)."""
    quick, help, types = quick or {}, help or {}, types or {}
    unknown = set(quick) - set(defaults)
    if unknown:
        raise ValueError(f"{name}: quick settings {sorted(unknown)} have no default")
    untyped = sorted(k for k, v in defaults.items() if v is None and k not in types)
    if untyped:
        raise ValueError(f"{name}: settings {untyped} default to None and have no type; "
                         "give it in types={setting: type}")
    p = argparse.ArgumentParser(prog=f"python -m lessons.{name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--out", help=f"output folder (default runs/{name}, or runs/{name}-quick with --quick)")
    changes = ", ".join(f"{k}={v}" for k, v in quick.items())
    p.add_argument("--quick", action="store_true", help="a smoke test in seconds on synthetic data" +
                   (f" ({changes})" if changes else " (the same settings: this lesson is already quick)"))
    p.add_argument("--fresh", action="store_true", help="ignore (and overwrite) finished runs in --out")
    p.add_argument("--record", action="store_true", help=f"a default run, afresh, whose results go to "
                   f"docs/results/{name}.md (the file the README quotes), with the command, commit and machine")
    if runs:
        p.add_argument("--workers", type=int, help="independent runs at once, each in its own process (default: "
                       "one per core, 1 on the CuPy backend; 1: one after another in this process)")
        p.add_argument("--scheduler", help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786): "
                       "the runs go to its workers instead of this machine's cores (pip install -e '.[cluster]')")
    for key, default in defaults.items():
        flag, text = "--" + key.replace("_", "-"), help.get(key, "") + f" (default {default})"
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=help.get(key))
        elif isinstance(default, (list, tuple)):
            p.add_argument(flag, type=type(default[0]), nargs="+", help=text)
        else:
            p.add_argument(flag, type=types.get(key, type(default)), help=text)
    argv = shlex.split(os.environ.get(ARGS_VARIABLE, "")) if in_notebook() else sys.argv[1:]
    given = vars(p.parse_args(argv))
    s = dict(defaults, quick=given.pop("quick", False), fresh=given.pop("fresh", False),
             workers=given.pop("workers", None), scheduler=given.pop("scheduler", None))
    s["record"] = None
    if given.pop("record", False):        # refused here, before a long run, if it could not be recorded
        from lessons.record import start
        try:
            s["record"] = start(name, argv, s["quick"], [k for k in given if k in defaults], in_notebook())
        except ValueError as why:
            p.error(str(why))
        s["fresh"] = True                 # a recorded wall time is a whole run's, not a resumed one's
    if s["quick"]:
        s.update(quick)
    s.update(given)                       # a flag the user gave wins over --quick
    s["out"] = out_dir(s.get("out") or default_out(name, s["quick"]))
    s["quick_note"] = (banner or QUICK_BANNER) if quick else FULL_RUN_NOTE
    chapter.STAMP["text"] = "quick run: a smoke test" if s["quick"] and quick else None
    verdicts.SAID.clear()
    if s["quick"] and banner:
        say(banner)
        verdicts.SAID.add(verdicts.QUICK_REASON)     # the banner said it: no verdict repeats it
    return argparse.Namespace(**s)


def summary_header(s, title):
    """The first lines of a run's summary.md: its title, and for a quick run the
    smoke-test line (or, in a lesson whose quick run is its full run, that line),
    so a summary read on its own never passes for what it is not."""
    return f"# {title}\n\n" + (s.quick_note + "\n\n" if s.quick else "")


def out_dir(path):
    os.makedirs(path, exist_ok=True)
    return path


def default_out(name, quick):
    """runs/<name>, or runs/<name>-quick: a quick run never lands in (or resumes) a real run's folder."""
    return os.path.join("runs", name + ("-quick" if quick else ""))
