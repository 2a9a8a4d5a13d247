"""The BatchNorm homework grader behind ``python -m lessons.batchnorm_backward --check``.

A student's backward is a NumPy function

    def batchnorm_backward(dy, x, gamma, beta, eps):
        return dx, dgamma, dbeta

called on an (N, D) batch (BatchNorm after a Linear layer; gamma, beta: (D,))
and on an (N, C, H, W) batch (after a convolution; gamma, beta: (C,), one per
channel). Each gradient is compared, element by element, with finite
differences of the forward and with minidl's hand-derived backward, by
CS231n's relative error |a − b| / max(1e-8, |a| + |b|).
"""
import importlib
import importlib.util
import os
import sys
import traceback

import numpy as np

import minidl as md
from minidl.ops import norm as N

BANDS = """The bands (relative error of the worst element):
  fine   < 1e-7   what float64 arithmetic gives a correct backward
  check  1e-7 .. 1e-2   a correct backward computed in float32 lands here (float32 keeps
         about 7 digits, and BN's backward subtracts nearly equal sums); so do small
         slips such as a missing ε in one term. A float64 answer here is a FAIL,
         a float32 answer a PASS.
  wrong  > 1e-2   a term is missing, has the wrong sign, or the wrong count m"""

CASES = (("(N, D) = (4, 3)", (4, 3)), ("(N, C, H, W) = (4, 3, 2, 2)", (4, 3, 2, 2)))
EPS = 1e-5
NAMES = ("dx", "dgamma", "dbeta")


def load_function(spec):
    """``path/to/file.py:function`` or ``module:function`` (function defaults to
    batchnorm_backward). Raises SystemExit with a message when it cannot."""
    target, _, name = spec.partition(":")
    name = name or "batchnorm_backward"
    try:
        if target.endswith(".py") or os.sep in target:
            if not os.path.exists(target):
                raise SystemExit(f"--check: no file {target}")
            loader = importlib.util.spec_from_file_location("student_backward", target)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())    # the student's module sits where they run from
            module = importlib.import_module(target)
    except SystemExit:
        raise
    except Exception as e:
        raise SystemExit(f"--check: importing {target} failed: {type(e).__name__}: {e}") from None
    if not callable(getattr(module, name, None)):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise SystemExit(f"--check: {target} has no function {name!r} (it has: {', '.join(found) or 'none'})")
    return getattr(module, name)


def _relative_error(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))) if a.size else 0.0


def _band(rel):
    return "wrong" if rel > 1e-2 else "fine" if rel < 1e-7 else "check"


def _student_frames(exc):
    """The lines of the student's own code in a traceback (not the grader's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return "".join(traceback.format_list(frames)).rstrip()


def grade_case(fn, label, shape, seed):
    """One input shape: a list of (gradient, problem or None, relative error, band)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    C = shape[1]
    gamma, beta = 1 + 0.5 * rng.standard_normal(C), rng.standard_normal(C)
    dy = rng.standard_normal(shape)
    axes = (0,) + tuple(range(2, len(shape)))
    cs = (1, C) + (1,) * (len(shape) - 2)
    t = N.backward_staged(dy, x, gamma.reshape(cs), EPS, axes)
    reference = (t.g_x, t.g_gamma.reshape(C), t.g_beta.reshape(C))

    def forward(xx, g, b):
        return N.batch_norm_reference(xx, g.reshape(cs), b.reshape(cs), EPS, axes)
    numeric = (md.numerical_grad(lambda v: forward(v, md.Tensor(gamma), md.Tensor(beta)), x, dy),
               md.numerical_grad(lambda v: forward(md.Tensor(x), v, md.Tensor(beta)), gamma, dy),
               md.numerical_grad(lambda v: forward(md.Tensor(x), md.Tensor(gamma), v), beta, dy))
    try:
        theirs = fn(dy.copy(), x.copy(), gamma.copy(), beta.copy(), EPS)
    except Exception as e:
        return [("your function", f"raised {type(e).__name__}: {e}\n{_student_frames(e)}", None, None)]
    if not isinstance(theirs, (tuple, list)) or len(theirs) != 3:
        n = len(theirs) if isinstance(theirs, (tuple, list)) else f"one {type(theirs).__name__}"
        return [("your function", f"returned {n} value(s); expected three: (dx, dgamma, dbeta)",
                 None, None)]
    rows = []
    for name, mine, ref, num in zip(NAMES, theirs, reference, numeric):
        try:
            mine = np.asarray(mine)
            values = mine.astype(np.float64)
        except (TypeError, ValueError) as e:
            rows.append((name, f"is not an array of numbers ({e})", None, None))
            continue
        # dgamma, dbeta may keep gamma's broadcast shape, (1, C) or (1, C, 1, 1)
        if values.shape != ref.shape and not (name != "dx" and values.size == C
                                              and values.squeeze().shape == (C,)):
            rows.append((name, f"has shape {values.shape}, expected {ref.shape}", None, None))
            continue
        values = values.reshape(ref.shape)
        rel = max(_relative_error(values, num), _relative_error(values, ref))
        band = _band(rel)
        low_precision = mine.dtype.kind == "f" and mine.dtype.itemsize < 8
        problem = None
        if band == "wrong":
            problem = f"relative error {rel:.1e} (wrong > 1e-2)"
        elif band == "check" and not low_precision:
            problem = (f"relative error {rel:.1e} in float64 (fine < 1e-7): close, but not "
                       "float64 rounding; look for a missing or extra ε or a slightly wrong term")
        rows.append((name, problem, rel, band + (" (float32)" if low_precision else "")))
    return rows


def grade(fn, seed=0):
    """Grade ``fn`` on every case; print a table and return (passed, verdict line)."""
    print(BANDS + "\n")
    print(f"{'input':<28} {'gradient':<9} {'rel. error':>10}  band")
    failures = []
    for k, (label, shape) in enumerate(CASES):
        for name, problem, rel, band in grade_case(fn, label, shape, seed + k):
            if rel is None:
                print(f"{label:<28} {name}: {problem}")
            else:
                print(f"{label:<28} {name:<9} {rel:>10.2e}  {band}" + (f"   <- {problem}" if problem else ""))
            if problem:
                failures.append(f"{name} on {label}: {problem.splitlines()[0]}")
    verdict = "PASS" if not failures else "FAIL: " + failures[0] + (
        f" (and {len(failures) - 1} more above)" if len(failures) > 1 else "")
    print(verdict)
    return not failures, verdict
