"""Grading a backward function, the derivation part of the homework:

    def batchnorm_backward(dy, x, gamma, beta, eps):
        return dx, dgamma, dbeta

called on an (N, D) batch (BatchNorm after a Linear layer; gamma, beta: (D,))
and on an (N, C, H, W) batch (after a convolution; gamma, beta: (C,), one per
channel). Each gradient is compared, element by element, with finite
differences of the forward and with minidl's hand-derived backward, by
CS231n's relative error |a − b| / max(1e-8, |a| + |b|), and judged by the
graders' one tolerance scheme (``common.judge``)."""
import numpy as np

import minidl as md
from minidl.gradcheck import FINE, WRONG, relative_error
from minidl.ops import norm as N
from lessons.homework.common import FLOAT32, Report, judge, student_frames

BANDS = f"""The bands (relative error of the worst element):
  fine   < {FINE:g}   what float64 arithmetic gives a correct backward
  check  {FINE:g} .. {WRONG:g}   a correct backward computed in float32 lands here (float32 keeps
         about 7 digits, and BN's backward subtracts nearly equal sums); so do small
         slips such as a missing ε in one term. A float64 answer here is a FAIL,
         a float32 answer a PASS below {FLOAT32:g}.
  wrong  > {WRONG:g}   a term is missing, has the wrong sign, or the wrong count m"""

CASES = (("(N, D) = (4, 3)", (4, 3)), ("(N, C, H, W) = (4, 3, 2, 2)", (4, 3, 2, 2)))
EPS = 1e-5
NAMES = ("dx", "dgamma", "dbeta")


def grade_case(fn, shape, seed):
    """One input shape: a list of (gradient, problem or None, relative error, band)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    C = shape[1]
    gamma, beta = 1 + 0.5 * rng.standard_normal(C), rng.standard_normal(C)
    dy = rng.standard_normal(shape)
    axes = (0,) + tuple(range(2, len(shape)))
    cs = N.channel_shape(shape)
    t = N.backward_staged(dy, x, gamma.reshape(cs), EPS, axes)
    reference = (t.g_x, t.g_gamma.reshape(C), t.g_beta.reshape(C))

    def forward(xx, g, b):
        return N.batch_norm_reference(xx, g.reshape(cs), b.reshape(cs), EPS, axes)
    numeric = (md.numerical_grad(lambda v: forward(v, md.Tensor(gamma), md.Tensor(beta)), x, dy),
               md.numerical_grad(lambda v: forward(md.Tensor(x), v, md.Tensor(beta)), gamma, dy),
               md.numerical_grad(lambda v: forward(md.Tensor(x), md.Tensor(gamma), v), beta, dy))
    try:
        theirs = fn(dy.copy(), x.copy(), gamma.copy(), beta.copy(), EPS)
    except MemoryError:
        raise
    except Exception as e:
        return [("your function", f"raised {type(e).__name__}: {e}\n{student_frames(e)}", None, None)]
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
        rel = max(relative_error(values, num), relative_error(values, ref))
        shown, problem = judge(rel, mine.dtype.kind == "f" and mine.dtype.itemsize < 8)
        rows.append((name, problem, rel, shown))
    return rows


def grade_backward(fn, seed=0):
    """Grade a backward function on every case; print a table and return its Report."""
    print(BANDS + "\n")
    print(f"{'input':<28} {'gradient':<9} {'rel. error':>10}  band")
    report = Report()
    for k, (label, shape) in enumerate(CASES):
        for name, problem, rel, shown in grade_case(fn, shape, seed + k):
            status = "FAIL" if problem else "PASS"
            points = len(NAMES) if name == "your function" else 1    # a case is worth three gradients
            text = report.add(label, name, status, problem or shown, points)
            if rel is None:
                print(f"{label:<28} {name}: {text}")
            else:
                print(f"{label:<28} {name:<9} {rel:>10.2e}  {shown}" + (f"   <- {text}" if problem else ""))
    print(report.verdict)
    return report
