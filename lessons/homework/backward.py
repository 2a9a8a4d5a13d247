"""The judge's lines for a backward function, the derivation part of the homework:

    def batchnorm_backward(dy, x, gamma, beta, eps):
        return dx, dgamma, dbeta

called on an (N, D) batch (BatchNorm after a Linear layer; gamma, beta: (D,))
and on an (N, C, H, W) batch (after a convolution; gamma, beta: (C,), one per
channel), drawn afresh for each exam. Each gradient is compared, element by
element, with minidl's hand-derived backward in float64 (which the test suite
checks against finite differences), by CS231n's relative error
|a − b| / max(1e-8, |a| + |b|), and judged by the one tolerance scheme
(``judge.judge_error``). Finite differences themselves are no reference here:
their own error (about 1e-9) would fail a correct float64 answer on a small
element of a freshly drawn input. A wrong dx is compared with the
staged backward missing each of its terms, so the hint names the missing one."""
import numpy as np

from minidl.gradcheck import FINE, WRONG, relative_error
from minidl.ops import norm as N
from lessons.homework.judge import FLOAT32, NoResult, array, judge_error, low_precision

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


def draw(seed):
    """The two calls' inputs, and the references the judge keeps: the staged
    backward, finite differences, and dx with each term left out."""
    steps, inputs, kept = [], {}, {}
    for k, (label, shape) in enumerate(CASES):
        rng = np.random.default_rng([seed, k])
        C = shape[1]
        x = rng.standard_normal(shape) * 2 + 1
        gamma, beta = 1 + 0.5 * rng.standard_normal(C), rng.standard_normal(C)
        dy = rng.standard_normal(shape)
        key = f"{k}/call"
        names = [f"{key}/{n}" for n in ("dy", "x", "gamma", "beta")]
        inputs.update(zip(names, (dy, x, gamma, beta)))
        axes, cs = (0,) + tuple(range(2, len(shape))), N.channel_shape(shape)
        t = N.backward_staged(dy, x, gamma.reshape(cs), EPS, axes)
        kept[key] = dict(reference=(t.g_x, t.g_gamma.reshape(C), t.g_beta.reshape(C)),
                         missing=missing_terms(dy, x, gamma.reshape(cs), axes))
        steps.append({"key": key, "line": "call", "case": label, "shape": shape, "points": len(NAMES),
                      "args": {"arrays": names, "eps": EPS}, "inputs": names})
    return steps, inputs, kept


def missing_terms(dy, x, gamma, axes):
    """dx as the staged backward gives it with one of its paths left out, and with
    the unbiased variance: {what the hint says: dx}."""
    t = N.backward_staged(dy, x, gamma, EPS, axes)
    m = N.count(x.shape, axes)
    x_mu = x - t.mu
    direct = t.g_xhat / t.sigma                              # dl/dx̂ · ∂x̂/∂x
    through_var = t.g_var * 2 * x_mu / m                     # dl/dσ² · ∂σ²/∂x
    through_mu = t.g_mu / m                                  # dl/dμ · ∂μ/∂x
    # the unbiased variance, σ² = Σ(x − μ)²/(m − 1), through the same three paths
    var_u = t.var * m / (m - 1)
    sigma_u = (var_u + EPS) ** 0.5
    g_var_u = (t.g_xhat * x_mu).sum(axis=axes, keepdims=True) * -0.5 * sigma_u ** -3
    g_mu_u = (-t.g_xhat / sigma_u).sum(axis=axes, keepdims=True)
    unbiased = t.g_xhat / sigma_u + g_var_u * 2 * x_mu / (m - 1) + g_mu_u / m
    return {
        "dx is missing the term through σ², dl/dσ²·2(x − μ)/m (dl/dσ² = Σ dl/dx̂·(x − μ)·(−½)(σ² + ε)^(−3/2))":
            direct + through_mu,
        "dx is missing the term through μ, dl/dμ/m (dl/dμ = −Σ dl/dx̂/√(σ² + ε) + dl/dσ²·Σ −2(x − μ)/m)":
            direct + through_var,
        "dx is missing both terms through the batch statistics (through μ and through σ²): it treats μ and σ² "
        "as constants, dl/dx̂/√(σ² + ε) only": direct,
        "dx is missing the direct term, dl/dx̂/√(σ² + ε) (x̂ depends on x itself, not only through μ and σ²)":
            through_var + through_mu,
        "dx uses the unbiased variance, Σ(x − μ)²/(m − 1): batch normalization divides by m (the biased one)":
            unbiased,
    }


def mark_call(step, record, kept):
    """The call's lines: [(gradient, problem or None, relative error, band)]."""
    if not isinstance(record, dict):
        raise NoResult("no record")
    if isinstance(record.get("raised"), str):
        return [("your function", f"raised {record['raised'][:3000]}", None, None)]
    ops = record.get("ops")
    if not (isinstance(ops, list) and ops and isinstance(ops[0], dict)):
        raise NoResult("no record of the call")
    returned, C = ops[0], step["shape"][1]
    count = returned.get("count")
    if count != 3:
        n = f"{count}" if type(count) is int else f"one {str(returned.get('type', 'value'))[:40]}"
        return [("your function", f"returned {n} value(s); expected three: (dx, dgamma, dbeta)", None, None)]
    values = returned.get("values")
    if not (isinstance(values, list) and len(values) == 3):
        raise NoResult("no values")
    rows = []
    for name, got, ref in zip(NAMES, values, kept["reference"]):
        if isinstance(got, dict) and isinstance(got.get("error"), str):
            rows.append((name, f"is not an array of numbers ({got['error'][:300]})", None, None))
            continue
        a = array(got)
        # dgamma, dbeta may keep gamma's broadcast shape, (1, C) or (1, C, 1, 1)
        if a.shape != ref.shape and not (name != "dx" and a.size == C and a.squeeze().shape == (C,)):
            rows.append((name, f"has shape {a.shape}, expected {ref.shape}", None, None))
            continue
        a = a.reshape(ref.shape)
        rel = relative_error(a, ref)
        low = low_precision(got)
        shown, problem = judge_error(rel, low)
        if problem and name == "dx":
            problem += "".join(f": {hint}" for hint, dx in kept["missing"].items()
                               if relative_error(a, dx.reshape(ref.shape)) < (FLOAT32 if low else 1e-6))[:400]
        rows.append((name, problem, rel, shown))
    return rows


def mark(exam, steps, records, report, framework, per_line=False):
    """Judge both calls into ``report``: the bands, a table, the verdict."""
    report.say(BANDS + "\n")
    report.say(f"{'input':<28} {'gradient':<9} {'rel. error':>10}  band")
    for step in steps:
        try:
            rows = mark_call(step, records.get(step["key"]), exam.kept[step["key"]])
        except NoResult as e:
            rows = [("your function", f"no result came back ({e}): the run stopped before this call, or sent "
                     "something else", None, None)]
        except Exception as e:     # results of any shape no line foresaw (untrusted data): never a crash
            rows = [("your function", f"its results could not be read ({type(e).__name__}): no result", None, None)]
        label = step["case"]
        for name, problem, rel, shown in rows:
            status = "FAIL" if problem else "PASS"
            points = len(NAMES) if name == "your function" else 1    # a call is worth three gradients
            text = report.add(label, name, status, problem or shown, points)
            if rel is None:
                report.say(f"{label:<28} {name}: {text}")
            else:
                report.say(f"{label:<28} {name:<9} {rel:>10.2e}  {shown}" + (f"   <- {text}" if problem else ""))
    report.say(report.verdict)
