"""The judge: every verdict, decided in the teacher's process.

An ``Exam`` is drawn from a seed (fresh for each grading run; the gradebook
keeps it): the inputs the runner receives as its plan, and the references the
judge keeps. The runner (``lessons.homework.runner``) sends back raw results,
one record per step; :func:`mark` reads them as untrusted data (a malformed or
missing record is no result for its line) and returns the ``Report``: each
line PASS, FAIL or SKIP with its hint, the score, and the maximum, which comes
from the exam's lines. The checks and hints of each kind of target live beside
it: ``lessons.homework.module`` (a BatchNorm module class) and
``lessons.homework.backward`` (a backward function)."""
import json
import os

import numpy as np

from minidl.gradcheck import FINE, WRONG, band

# One tolerance scheme for both kinds. The bands are gradcheck's (CS231n's):
# below FINE is float64 rounding, above WRONG a wrong term. Between them lands a
# correct answer computed in float32 (about 7 digits, and BN subtracts nearly equal
# sums), so a float32 answer passes below FLOAT32, a float64 answer only below FINE.
FLOAT32 = 1e-3
MAX_ELEMENTS = 10 ** 5         # the most values the judge accepts in one array of a result
RECORD_LIMIT = 1 << 20         # the longest result line it parses (bytes)


def judge_error(rel, low_precision):
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
    relative error meaningless. Infinite where ``got`` holds NaN or ∞ (which no
    comparison would catch: NaN > tolerance is False)."""
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):    # want: from the module's own statistics
        return np.inf
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-8))


def draw_seed():
    """A seed for one grading run, from the operating system's entropy: no submission can know it."""
    return int.from_bytes(os.urandom(8), "little")


# ---- results as the judge reads them: untrusted data -----------------------------------
class NoResult(Exception):
    """A record lacks what its line needs, or holds something else: no result for that line."""


def array(d, shape=None):
    """A result's array (float64), or NoResult: a known layout, numbers only, at most
    MAX_ELEMENTS values, and ``shape``'s size when given."""
    try:
        dims, data, dtype = d["shape"], d["data"], d["dtype"]
        if not (isinstance(dims, list) and len(dims) <= 8 and all(type(n) is int and 0 <= n for n in dims)
                and isinstance(data, list) and len(data) <= MAX_ELEMENTS and isinstance(dtype, str)
                and len(dtype) <= 20 and all(type(v) in (int, float) for v in data)):
            raise NoResult("a malformed array")
        a = np.asarray(data, np.float64).reshape(dims)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise NoResult(f"a malformed array ({type(e).__name__})") from None
    if shape is not None and a.size != int(np.prod(shape)):
        raise NoResult(f"an array of {a.size} values where {int(np.prod(shape))} were expected")
    return a


def low_precision(d):
    """Whether an array came from float32 (or narrower) arithmetic."""
    dtype = d.get("dtype", "") if isinstance(d, dict) else ""
    return dtype in ("float32", "float16", "bfloat16")


def field(d, key, kind):
    """``d[key]`` if it is of ``kind`` (bool, str, list of str, dict, or None allowed with ``(kind, None)``)."""
    if not isinstance(d, dict) or key not in d:
        raise NoResult(f"no {key!r}")
    v = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is None and v is None:
            return v
        if k is str and isinstance(v, str) and len(v) <= 5000:
            return v
        if k is bool and isinstance(v, bool):
            return v
        if k is dict and isinstance(v, dict):
            return v
        if k is list and isinstance(v, list) and len(v) <= 200 and all(isinstance(s, str) and len(s) <= 200 for s in v):
            return v
    raise NoResult(f"{key!r} is not a {' or '.join(getattr(k, '__name__', 'None') for k in kinds)}")


def parse_records(raw, keys):
    """The runner's records from the bytes of its results channel: one JSON object a
    line, known step keys only (``keys``, plus "load" and "done"), the first of each
    key kept; anything else is skipped. Returns {key: record}."""
    records = {}
    for line in raw.split(b"\n", len(keys) + 3)[:len(keys) + 3]:      # never a list of 64 MB of empty lines
        if not line or len(line) > RECORD_LIMIT:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        key = record.get("step") if isinstance(record, dict) else None
        if isinstance(key, str) and (key in keys or key in ("load", "done")) and key not in records:
            records[key] = record
    return records


# ---- the report ---------------------------------------------------------------------
class Report:
    """The lines the judge decided, as it prints them: PASS, FAIL or SKIP with a
    message, each worth ``points``, out of ``max_score`` (the exam's). A failure
    whose message repeats an earlier one (one cause, such as a float64 γ, breaking
    several lines) is printed once; the later lines point back to it."""

    def __init__(self, max_score):
        self.lines, self.causes, self.text, self._max = [], {}, [], max_score

    def say(self, text=""):
        self.text.append(text)

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
        return self.score == self.max_score

    @property
    def score(self):
        return sum(line["points"] for line in self.lines if line["status"] == "PASS")

    @property
    def max_score(self):
        return self._max

    @property
    def verdict(self):
        """``PASS``, or ``FAIL: <line> on <case>: <first line of its message>``,
        with how many more lines failed and from how many causes."""
        failures = self.failures
        if self.passed:
            return "PASS"
        if not failures:
            return f"FAIL: {sum(line['status'] == 'SKIP' for line in self.lines)} line(s) could not be checked (SKIP above)"
        first, more, causes = failures[0], len(failures) - 1, len(self.causes)
        tail = "" if not more else (f" (and {more} more above)" if causes == len(failures) else
                                    f" (and {more} more above, from {causes} cause{'s' * (causes > 1)})")
        return f"FAIL: {first['name']} on {first['case']}: {first['message'].splitlines()[0]}{tail}"

    def failed_lines(self):
        return [f"{line['name']} on {line['case']}" for line in self.failures]

    def __str__(self):
        return "\n".join(self.text)


# ---- the exam: inputs out, references kept --------------------------------------------------
class Exam:
    """What one grading run asks of every submission: the plan the runner gets
    (inputs included) and the references only the judge sees. ``kind`` is
    "module" (a BatchNorm module class) or "backward" (a backward function)."""

    def __init__(self, kind, target, seed=None):
        self.kind, self.target = kind, target
        self.seed = draw_seed() if seed is None else seed
        self.steps, self.inputs, self.kept = self.checks.draw(self.seed)
        self.max_score = sum(step["points"] for step in self.steps)
        self._request = None

    @property
    def checks(self):
        """The module that draws and marks this kind's lines."""
        from lessons.homework import backward, module
        return module if self.kind == "module" else backward

    @property
    def keys(self):
        return {step["key"] for step in self.steps}

    def plan(self, lines=None):
        """The runner's plan (JSON-able): the steps of ``lines`` (default all) and their inputs."""
        steps = [s for s in self.steps if lines is None or s["line"] in lines]
        used = {k for s in steps for k in s["inputs"]}
        return {"kind": self.kind, "target": self.target,
                "steps": [{k: v for k, v in s.items() if k in ("key", "ops", "args", "constructor")} for s in steps],
                "inputs": {k: {"shape": list(a.shape), "dtype": "float64", "data": a.ravel().tolist()}
                           for k, a in self.inputs.items() if k in used}}

    def request(self):
        """The plan as the bytes fed to the runner's stdin."""
        if self._request is None:
            self._request = json.dumps(self.plan()).encode()
        return self._request

    def mark(self, records, lines=None):
        """The Report of a submission from its records ({step key: record})."""
        steps = [s for s in self.steps if lines is None or s["line"] in lines]
        report = Report(sum(s["points"] for s in steps))
        load = records.get("load")
        problem = load_problem(load)
        if problem:
            report.say(problem)
            report.say()
            report.say("FAIL: " + problem.splitlines()[0])
            return report
        self.checks.mark(self, steps, records, report, framework(load), per_line=lines is not None)
        return report


def framework(load):
    name = load.get("framework") if isinstance(load, dict) else None
    return name if name in ("minidl", "PyTorch") else None


def load_problem(load):
    """Why the target could not be graded at all (a message), or None."""
    if not isinstance(load, dict):
        return "No result came back: the run ended before the submission had loaded."
    for key, say in (("wrong_kind", "{}"), ("missing_target", "{}"), ("raised", "importing the submission failed: {}")):
        if key in load:
            text = load[key] if isinstance(load[key], str) else "(a malformed message)"
            return say.format(text[:3000])
    return None
