"""What both graders share: loading the student's code, one tolerance scheme,
and one report that turns checked lines into a verdict, a score and a list of
failed lines (the gradebook's columns)."""
import importlib
import importlib.util
import os
import sys
import traceback

import numpy as np

from minidl.gradcheck import FINE, WRONG, band

# One tolerance scheme for both graders. The bands are gradcheck's (CS231n's):
# below FINE is float64 rounding, above WRONG a wrong term. Between them lands a
# correct answer computed in float32 (about 7 digits, and BN subtracts nearly equal
# sums), so a float32 answer passes below FLOAT32, a float64 answer only below FINE.
FLOAT32 = 1e-3


def judge(rel, low_precision):
    """(band label, problem or None) for a relative error ``rel`` of an answer
    computed in float32 (``low_precision``) or float64."""
    shown = band(rel) + (" (float32)" if low_precision else "")
    if rel < FINE or (low_precision and rel < FLOAT32):
        return shown, None
    if rel > WRONG:
        return shown, f"relative error {rel:.1e} (wrong > {WRONG:g})"
    if low_precision:
        return shown, f"relative error {rel:.1e}: above float32's rounding (< {FLOAT32:g}), below a wrong term"
    return shown, (f"relative error {rel:.1e} in float64 (fine < {FINE:g}): close, but not float64 rounding; "
                   "look for a missing or extra ε or a slightly wrong term")


def relative(got, want):
    """The largest difference relative to the largest value compared: the measure
    for a float32 module's outputs, whose elements near zero make an element-wise
    relative error meaningless."""
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-8))


class Report:
    """The lines a grader checked, as it prints them: PASS, FAIL or SKIP with a
    message, each worth ``points``. A failure whose message repeats an earlier
    one (one cause, such as a float64 γ, breaking several lines) is printed once;
    the later lines point back to it."""

    def __init__(self):
        self.lines, self.causes = [], {}

    def add(self, case, name, status, message, points=1):
        """Record a line; returns the text to print for it."""
        shown = message
        if status == "FAIL":
            key = message.splitlines()[0]
            if key in self.causes:
                shown = f"the same cause as {self.causes[key]} (above)"
            else:
                self.causes[key] = f"{name!r} on {case}"
        self.lines.append(dict(case=case, name=name, status=status, message=message, points=points))
        return shown

    @property
    def failures(self):
        return [line for line in self.lines if line["status"] == "FAIL"]

    @property
    def passed(self):
        return not self.failures

    @property
    def score(self):
        return sum(line["points"] for line in self.lines if line["status"] == "PASS")

    @property
    def max_score(self):
        return sum(line["points"] for line in self.lines)

    @property
    def verdict(self):
        """``PASS``, or ``FAIL: <line> on <case>: <first line of its message>``,
        with how many more lines failed and from how many causes."""
        failures = self.failures
        if not failures:
            return "PASS"
        first, more, causes = failures[0], len(failures) - 1, len(self.causes)
        tail = "" if not more else (f" (and {more} more above)" if causes == len(failures) else
                                    f" (and {more} more above, from {causes} cause{'s' * (causes > 1)})")
        return f"FAIL: {first['name']} on {first['case']}: {first['message'].splitlines()[0]}{tail}"

    def result(self):
        """The gradebook's view: score, max_score, failed lines."""
        return dict(score=self.score, max_score=self.max_score,
                    failed=[f"{line['name']} on {line['case']}" for line in self.failures])


def load_function(spec, flag="check"):
    """``path/to/file.py:NAME`` or ``module:NAME``: the student's function or
    class (NAME defaults to batchnorm_backward, else BatchNorm2d). Raises
    SystemExit with a message (naming ``--flag``) when it cannot; a MemoryError
    passes through (the sandbox reports it as the memory limit)."""
    target, _, name = spec.partition(":")
    try:
        if target.endswith(".py") or os.sep in target:
            if not os.path.exists(target):
                raise SystemExit(f"--{flag}: no file {target}")
            loader = importlib.util.spec_from_file_location("student_homework", target)
            module = importlib.util.module_from_spec(loader)
            sys.modules[loader.name] = module       # so its classes know their source file
            loader.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())    # the student's module sits where they run from
            module = importlib.import_module(target)
    except (SystemExit, MemoryError):
        raise
    except Exception as e:
        where = student_frames(e, last_only=True)
        raise SystemExit(f"--{flag}: importing {target} failed: {type(e).__name__}: {e}"
                         + (f"\n{where}" if where else "")) from None
    name = name or next((n for n in ("batchnorm_backward", "BatchNorm2d") if hasattr(module, n)),
                        "batchnorm_backward")
    if not callable(getattr(module, name, None)):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise SystemExit(f"--{flag}: {target} has no function {name!r} (it has: {', '.join(found) or 'none'})")
    return getattr(module, name)


_OURS = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (
    os.path.dirname(__file__),                 # lessons/
    sys.modules["minidl"].__file__,            # minidl/
    os.__file__))                              # the standard library and site-packages


def student_frames(exc, last_only=False):
    """The lines of the student's own code in a traceback (not the grader's,
    minidl's or Python's); with ``last_only`` the innermost one."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_OURS) and not f.filename.startswith("<frozen")]
    if last_only:
        frames = frames[-1:]
    return "".join(traceback.format_list(frames)).rstrip()


class StudentError(Exception):
    """The student's code raised where the lessons run it (a worker's training run):
    its message is already short and names their file and line."""


def short_error(exc):
    """One exception in a few lines: what was raised and where in the student's
    code (not the 89 lines of a worker's traceback)."""
    where = student_frames(exc, last_only=True)
    return f"{type(exc).__name__}: {exc}" + (f"\n{where}" if where else "")
