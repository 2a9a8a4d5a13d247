"""Grading in this process, where the code is the student's own: ``check``, the
hand-out notebook's check cells, and the lessons' ``--norm`` and ``--check``.

The runner's protocol runs here, unsandboxed (the student runs their own code),
on a fresh exam, and the same judge marks it as ``grade`` marks a class."""
import contextlib
import importlib
import io
import os
import sys
import traceback

import minidl
from lessons.homework import runner
from lessons.homework.judge import Exam

DEFAULT_TARGETS = ("batchnorm_backward", "BatchNorm2d")


def load_target(spec, flag="check"):
    """``path/to/file.py:NAME`` or ``module:NAME``: the student's function or
    class (NAME defaults to batchnorm_backward, else BatchNorm2d). Raises
    SystemExit with a message (naming ``--flag``) when it cannot."""
    target, _, name = spec.partition(":")
    try:
        if target.endswith(".py") or os.sep in target:
            if not os.path.isfile(target):
                raise SystemExit(f"--{flag}: no file {target}")
            module = _import_file(target)
        else:
            sys.path.insert(0, os.getcwd())    # the student's module sits where they run from
            module = importlib.import_module(target)
    except SystemExit:
        raise
    except Exception as e:
        where = _student_frames(e)
        raise SystemExit(f"--{flag}: importing {target} failed: {type(e).__name__}: {e}"
                         + (f"\n{where}" if where else "")) from None
    name = name or next((n for n in DEFAULT_TARGETS if hasattr(module, n)), DEFAULT_TARGETS[0])
    if not callable(getattr(module, name, None)):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise SystemExit(f"--{flag}: {target} has no function {name!r} (it has: {', '.join(found) or 'none'})")
    return getattr(module, name)


def _import_file(path):
    spec = importlib.util.spec_from_file_location("student_homework", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module              # so its classes know their source file
    spec.loader.exec_module(module)
    return module


def kind_of(target):
    """"module" for a class, "backward" for a function: what ``check`` grades it as."""
    return "module" if isinstance(target, type) else "backward"


def grade(target, lines=None, seed=None, quiet=False):
    """Grade ``target`` (a module class or a backward function) here on a fresh
    exam; print the report (unless ``quiet``) and return it. ``lines``: only those
    of a module's lines, each printed on its own."""
    exam = Exam(kind_of(target), target.__name__, seed)
    records = {}
    plan = exam.plan(lines)

    def keep(record):
        records.setdefault(record["step"], record)
    runner.run_plan(target, plan, keep, files=_source_files(target))
    report = exam.mark(records, lines)
    if not quiet:
        print(report)
    return report


def _source_files(target):
    module = sys.modules.get(getattr(target, "__module__", None))
    path = getattr(module, "__file__", None)
    return [path] if path else []


def check_line(cls, line):
    """One of the module's lines (e.g. "moving averages") on both shapes, printed
    PASS or FAIL with its hint: the hand-out's check cells. Never raises (an
    unfinished notebook runs top to bottom)."""
    try:
        grade(cls, lines=[line])
    except Exception as e:
        print(f"FAIL  {line}: could not be checked: {short_error(e)}")


def module_passes(cls):
    """Whether the module passes every line (nothing printed), and the failed lines."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            report = grade(cls, quiet=True)
    except Exception as e:
        return False, [f"{type(e).__name__}: {e}"]
    return report.passed, sorted({line["name"] for line in report.failures})


def check(spec):
    """``FILE.py:NAME`` (or ``FILE.ipynb[:NAME]``) graded here, as a student checks
    their own work; returns the exit status (0 on PASS)."""
    from lessons.homework.submissions import notebook_code
    path, _, name = spec.partition(":")
    print("(check runs your code in this process, unsandboxed: it is yours. The teacher's grade runs it "
          "sandboxed, on other inputs.)\n")
    if path.endswith(".ipynb"):
        try:
            with open(path, "rb") as f:
                code = notebook_code(f.read(), os.path.basename(path))
        except (OSError, ValueError) as e:
            raise SystemExit(f"check: {e}") from None
        import tempfile
        with tempfile.TemporaryDirectory(prefix="homework-") as folder:
            script = os.path.join(folder, os.path.basename(path)[:-len(".ipynb")] + ".py")
            with open(script, "w") as f:
                f.write(code)
            return check(f"{script}:{name or 'BatchNorm2d'}")
    return 0 if grade(load_target(spec)).passed else 1


# ---- the student's code where the lessons run it -------------------------------------------
_OURS = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (
    os.path.dirname(__file__),                    # lessons/
    minidl.__file__,                              # minidl/
    os.__file__))                                 # the standard library and site-packages


def _student_frames(exc):
    """The innermost line of the student's own code in a traceback (not ours, minidl's or Python's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_OURS) and not f.filename.startswith("<frozen")]
    return "".join(traceback.format_list(frames[-1:])).rstrip()


class StudentError(Exception):
    """The student's code raised where the lessons run it (a worker's training run):
    its message is already short and names their file and line."""


def short_error(exc):
    """One exception in a few lines: what was raised and where in the student's
    code (not the 89 lines of a worker's traceback)."""
    where = _student_frames(exc)
    return f"{type(exc).__name__}: {exc}" + (f"\n{where}" if where else "")
