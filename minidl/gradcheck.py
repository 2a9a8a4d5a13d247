"""Gradient checking: compare backward() with central finite differences.

    report = md.gradcheck(lambda a, b: (a * b).sum(axis=0), [a, b])
    print(report)

The scalar being differentiated is ``L = sum(u * f(inputs))`` with ``u`` a
**random** upstream gradient. Backpropagating ``sum(f)`` (u = 1) would prove
nothing for a normalization layer: there dL/dx is exactly zero whatever the
backward computes.

Every input is promoted to float64 in place for the duration of the check and
restored after; every op computes in float64 while it probes (so a closure over
a float32 layer, ``lambda x: bn(x)``, is checked in float64 too); layers do not
update running statistics while it probes. ``fn`` may be a layer itself:

    md.gradcheck(bn, [x])     # checks x and every parameter of bn, by name
"""
import warnings

import numpy as np

from . import backend
from .tensor import Tensor, frozen_state, no_grad, promote_float64


class GradcheckError(AssertionError):
    def __init__(self, report):
        super().__init__("gradient check failed\n" + str(report))
        self.report = report


FINE, WRONG = 1e-7, 1e-2     # the bands of the relative error (CS231n's)


def relative_error(a, b):
    """The worst element's relative error as CS231n defines it: |a − b| / max(1e-8, |a| + |b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))) if a.size else 0.0


def band(rel):
    """"fine" below 1e-7 (float64 rounding), "wrong" above 1e-2 (a wrong term),
    "check" between (kinks, float32 noise, or a slip: look closer)."""
    return "wrong" if rel > WRONG else "fine" if rel < FINE else "check"


class InputReport:
    """One input's comparison: the worst element and its numbers."""

    def __init__(self, name, analytic, numeric, atol, rtol, kinks):
        self.name, self.shape = name, analytic.shape
        self.analytic_grad, self.numeric_grad = analytic, numeric
        diff = np.abs(analytic - numeric)
        excess = diff / (atol + rtol * np.abs(numeric))
        i = int(np.argmax(excess)) if excess.size else 0
        self.index = np.unravel_index(i, analytic.shape) if analytic.size else ()
        self.analytic = float(analytic.flat[i]) if analytic.size else 0.0
        self.numeric = float(numeric.flat[i]) if analytic.size else 0.0
        self.rel_error = relative_error(self.analytic, self.numeric)
        self.max_abs_diff = float(diff.max()) if diff.size else 0.0
        self.passed = bool((excess <= 1).all())
        self.band = band(self.rel_error)
        self.kinks = kinks
        self.vacuous = bool(np.abs(numeric).max() < atol) if numeric.size else True

    def __str__(self):
        status = "ok" if self.passed else "FAILED"
        line = (f"{self.name:<8} {str(self.shape):<16} {str(tuple(int(j) for j in self.index)):<14}"
                f"{self.analytic:>+14.6e} {self.numeric:>+14.6e} {self.rel_error:>10.2e} "
                f"{self.band:<6} {status}")
        if self.kinks:
            line += f"  ({self.kinks} probe(s) crossed a kink)"
        if self.vacuous:
            line += "  (gradient is ~0 everywhere: the check proves little)"
        return line


class GradcheckReport:
    header = (f"{'input':<8} {'shape':<16} {'worst at':<14}{'analytic':>14} {'numeric':>14} "
              f"{'rel.error':>10} band")

    def __init__(self, inputs):
        self.inputs = inputs
        self.passed = all(r.passed for r in inputs)

    def __str__(self):
        return "\n".join([self.header] + [str(r) for r in self.inputs])

    __repr__ = __str__

    def __bool__(self):
        return self.passed


def _objective(fn, inputs, upstream):
    y = fn(*inputs)
    return float((backend.as_numpy(y.data).astype(np.float64) * upstream).sum())


def _numeric(fn, inputs, k, upstream, eps):
    """Central differences for input k; also counts probes whose one-sided
    slopes disagree (a kink such as relu at 0 or a tie in max lies in [x-h, x+h])."""
    x = inputs[k]
    flat = x.data.reshape(-1)  # a view: writing it moves the input the fn reads
    grad = np.zeros(x.size)
    f0 = _objective(fn, inputs, upstream)
    kinks = 0
    for i in range(x.size):
        orig = flat[i].item()
        flat[i] = orig + eps
        f_plus = _objective(fn, inputs, upstream)
        flat[i] = orig - eps
        f_minus = _objective(fn, inputs, upstream)
        flat[i] = orig
        grad[i] = (f_plus - f_minus) / (2 * eps)
        forward_slope, backward_slope = (f_plus - f0) / eps, (f0 - f_minus) / eps
        if abs(forward_slope - backward_slope) > 1e-3 * max(1.0, abs(grad[i])):
            kinks += 1
    return grad.reshape(x.shape), kinks


def _upstream(fn, inputs, seed):
    with no_grad():
        y = fn(*inputs)
    return np.random.default_rng(seed).standard_normal(y.shape)


def numerical_grad(fn, x, upstream):
    """dL/dx by central differences, for L = sum(upstream * fn(x)). For lessons."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    upstream = backend.as_numpy(upstream)
    with no_grad(), frozen_state():
        grad, _ = _numeric(fn, [x], 0, upstream, 1e-6)
    return grad


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_on_failure=True):
    """Check the gradient of ``fn(*inputs)`` for every floating input.

    Returns a GradcheckReport (prints as a table); raises GradcheckError with
    that table when an element differs by more than ``atol + rtol*|numeric|``.
    """
    inputs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
    labels = [x.name or f"input{k}" for k, x in enumerate(inputs)]
    n_args, buffers = len(inputs), []
    if hasattr(fn, "named_parameters") and hasattr(fn, "named_buffers"):   # a Module
        for name, p in fn.named_parameters():
            if all(p is not x for x in inputs):
                inputs.append(p)
                labels.append(name)
        buffers = [b for _, b in fn.named_buffers()]
        layer, fn = fn, (lambda *xs: layer(*xs[:n_args]))    # its parameters are probed, not passed
    saved = [(x.data, x.grad, x.requires_grad) for x in inputs]
    saved_buffers = [b.data for b in buffers]
    try:
        for b in buffers:
            if b.dtype.kind == "f":
                b.data = b.data.astype(np.float64)
        for x in inputs:
            if x.dtype.kind == "f":
                x.data = x.data.astype(np.float64)   # a copy: probing never writes the original
                x.requires_grad, x.grad = True, None
        with frozen_state(), promote_float64():
            upstream = _upstream(fn, inputs, seed)
            y = fn(*inputs)
            y.backward(backend.to_device(upstream, y.device))
            reports = []
            with no_grad():
                for k, x in enumerate(inputs):
                    if x.dtype.kind != "f":
                        continue
                    analytic = np.zeros(x.shape) if x.grad is None else backend.as_numpy(x.grad)
                    numeric, kinks = _numeric(fn, inputs, k, upstream, eps)
                    reports.append(InputReport(labels[k], analytic, numeric, atol, rtol, kinks))
    finally:
        for x, (data, grad, req) in zip(inputs, saved):
            x.data, x.grad, x.requires_grad = data, grad, req
        for b, data in zip(buffers, saved_buffers):
            b.data = data
    report = GradcheckReport(reports)
    kinked = [r.name for r in reports if r.kinks]
    if kinked:
        warnings.warn(f"gradcheck: finite differences crossed a kink for {kinked} "
                      "(relu at 0, a tie in max): numeric and analytic may differ there "
                      "legitimately", RuntimeWarning, stacklevel=2)
    if raise_on_failure and not report.passed:
        raise GradcheckError(report)
    return report
