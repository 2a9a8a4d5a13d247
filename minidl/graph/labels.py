"""One label for a tensor wherever minidl shows it (boxes, the stepper's panel,
``steps_table``, a printed step), the boxes of a graph with their constants
folded into their ops, and the words for an op's local derivative."""
import re
from fractions import Fraction

import numpy as np

from .. import backend
from ..ops.elementwise import Pow
from ..tensor import _topological_order


def received(step):
    """(input, the gradient it receives, how many of the op's inputs it is), each
    input once: ``x * x`` sends its two parts to the same x, which receives their sum."""
    out = {}
    for x, g in zip(step.inputs, step.grad_inputs):
        if g is not None:
            t, total, parts = out.get(id(x), (x, None, []))
            out[id(x)] = (t, g if total is None else total + g, parts + [g])
    return [(x, g, parts) for x, g, parts in out.values()]


def as_inputs(parts):
    return "" if len(parts) == 1 else " (both inputs)" if len(parts) == 2 else f" ({len(parts)} inputs)"


def steps_table(steps):
    """A backward pass (a list of BackwardStep) as an aligned text table, its
    steps numbered from 1."""
    rows = [("step", "op", "output", "sends gradients to")] + [tuple(map(str, s.row())) for s in steps]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def describe(t):
    return f"{label(t)} {tuple(t.shape)}"


def grad_name(text):
    """dl/dx̂, dl/dσ², but dl/d(x − μ), dl/d(1/σ)."""
    return f"dl/d{text}" if re.fullmatch(r"[\w\u0300-\u036f²]+", text) else f"dl/d({text})"


def values_text(a, small=12):
    a = backend.as_numpy(a)
    if a.size <= small:
        return np.array2string(a, precision=4, suppress_small=True).replace("\n", "")
    return f"shape {a.shape}, norm {norm(a):.4g}"


def norm(a):
    a = backend.as_numpy(a).astype(np.float64)
    return float(np.sqrt((a ** 2).sum()))


LOCAL_DERIVATIVE = {   # what each op multiplies the gradient arriving at its output by
    "Add": "1, towards each input (summed over broadcast axes)",
    "Neg": "−1", "Mul": "the other factor, towards each input (summed over broadcast axes)",
    "Sum": "1, copied to every input value", "MatMul": "Bᵀ towards A, Aᵀ towards B, for A @ B",
    "Exp": "exp(u) itself", "Log": "1/u", "Tanh": "1 − tanh²(u)", "Sigmoid": "σ(u)·(1 − σ(u))",
    "ReLU": "1 where the input was > 0, else 0",
    "Normalize": "the compact form: (γ/σ)·(I − P), P = (11ᵀ + x̂x̂ᵀ)/m; x̂ towards γ; 1 towards β",
    "Conv2d": "W, as a transposed convolution, towards x; x towards W; 1 (summed) towards b",
    "Reshape": "1 (only the shape changes)", "Transpose": "1, the axes put back",
}


def local_derivative(function):
    """The op's local derivative in words: what its backward multiplies the
    gradient arriving at its output by."""
    op = type(function).__name__
    if op == "Mul" and function.inputs[0] is function.inputs[1]:
        return "2·u, for u × u (both factors are the same tensor u: it receives both parts)"
    if op == "Pow":
        c = function.c
        power = _number(c - 1) if c - 1 >= 0 else f"({_number(c - 1)})"
        return (f"{_number(c)}·u^{power}, for u^{_number(c)}" if c != -1
                else "−1/u², for 1/u (a / b is a × b^−1)")
    return LOCAL_DERIVATIVE.get(op, f"what {op}.backward computes")


# ---- the graph: one box per tensor, constants folded into their op ----------
def _number(v):
    """A constant as a reader writes it: 4, ½, 1/4, −1, 1e-05."""
    v = float(v)
    if v == int(v) and abs(v) < 1e6:
        text = str(int(v))
    elif Fraction(v).limit_denominator(64) == v or abs(Fraction(v).limit_denominator(1000) - v) < 1e-12 * abs(v):
        f = Fraction(v).limit_denominator(1000)
        text = {Fraction(1, 2): "½", Fraction(-1, 2): "-½", Fraction(3, 2): "3/2",
                Fraction(-3, 2): "-3/2"}.get(f, f"{f.numerator}/{f.denominator}")
    else:
        text = f"{v:.4g}"
    return text.replace("-", "−")


def _folds(t):
    """A constant that needs no gradient and reads as a number or a name folds
    into its op's label instead of standing as a box."""
    return not t.requires_grad and t.creator is None and (t.size == 1 or bool(t.name))


def constant_label(t):
    return t.name or _number(backend.as_numpy(t.data).reshape(-1)[0])


def is_constant(t):
    return not t.requires_grad and t.creator is None


# ---- one label for a tensor, wherever it is shown -----------------------------
LONGEST = 22     # characters: an expression longer than this shows its long inputs as "…"


def label(t, names=None):
    """What minidl calls tensor ``t`` wherever it shows it: the stepper's boxes
    and panel, ``steps_table``, a printed ``BackwardStep``, a lesson's tables.
    Its ``name`` (or its key in ``names``, e.g. ``dict(model.named_parameters())``);
    unnamed, an expression of its inputs' labels ("x − μ", "1/σ", "Σ (x − μ)²",
    "(σ² + ε)^−½", "γ reshaped", "y × w"); a leaf is "leaf", a constant array
    "constant", a constant number reads as itself."""
    return _label(t, {id(v): k for k, v in (names or {}).items()}, {})


def _label(t, names, seen, depth=12):
    """label(t); ``seen`` holds the labels found so far (a graph shares its inputs);
    ``depth`` bounds the recursion (deeper than that, an expression is "…" anyway)."""
    name = names.get(id(t)) or t.name
    if name:
        return name
    f = t.creator
    if f is None:
        return constant_label(t) if _folds(t) else "leaf" if t.requires_grad else "constant"
    if depth == 0:
        return "…"
    if id(t) not in seen:
        inner = [_label(x, names, seen, depth - 1) for x in f.inputs]
        text = _expression(f, inner)
        short = [u if len(u) <= 6 else "−…" if u.startswith("−") else "…" for u in inner]
        seen[id(t)] = text if len(text) <= LONGEST else _expression(f, short)
    return seen[id(t)]


def wrap(text, power=False):
    """Parentheses around a label that is a sum or a phrase (or, raised to a
    ``power``, a quotient) where it stands inside another expression: (x − μ)²,
    Σ (x − μ)², (1/σ)², but Σ x, x × 1/4."""
    depth, top_level = 0, False
    for c in text:
        depth += (c == "(") - (c == ")")
        top_level |= depth == 0 and (c == " " or power and c == "/")
    return f"({text})" if top_level or text.startswith("−") else text


def _expression(f, inner):
    """An unnamed tensor's label from its op and its inputs' labels."""
    op, inputs = type(f).__name__, f.inputs
    u = wrap(inner[0])
    if op == "Pow":
        p = wrap(inner[0], power=True)
        return {-1: f"1/{p}", 0.5: f"√{p}", 2: f"{p}²", 3: f"{p}³"}.get(f.c, f"{p}^{_number(f.c)}")
    if op == "Neg":
        return f"−{u}"
    if op == "Sum":
        return f"Σ {u}"
    if op == "Add":            # x + (−μ) reads x − μ
        return inner[0] + "".join(f" − {v[1:]}" if v.startswith("−") else f" + {v}" for v in inner[1:])
    if op == "Mul" and inputs[0] is inputs[1]:
        return f"{wrap(inner[0], power=True)}²"
    if op == "Mul":            # a / b  ==  a * b**-1
        for k in (1, 0):
            if _is_reciprocal(inputs[k]) and inner[k].startswith("1/"):
                return f"{wrap(inner[1 - k])} / {inner[k][2:]}"
        return f"{u} × {wrap(inner[1])}"
    if op == "MatMul":
        return f"{u} @ {wrap(inner[1])}"
    if op in ("Reshape", "BroadcastTo") and len(inner) == 1:
        return f"{u} {'reshaped' if op == 'Reshape' else 'broadcast'}"
    if op == "Transpose":
        return f"{u}ᵀ"
    return f"{op}({', '.join(inner)})"


def _is_reciprocal(t):
    return isinstance(t.creator, Pow) and t.creator.c == -1


class _Box:
    """One tensor of the graph: what its box says."""

    def __init__(self, index, tensor, name, title):
        self.index, self.tensor, self.name = index, tensor, name
        self.inputs = []                      # indices of the boxes feeding its op
        self.op = None                        # its op's label, "+ ε", "× 1/4", "÷", ...
        self.title = title                    # the first line: label(tensor)

    shape = property(lambda self: tuple(self.tensor.shape))


def walk(y, names):
    """The boxes of the graph below ``y``, every input before its outputs, and
    the op labels with their constants folded in."""
    names = {id(t): n for n, t in (names or {}).items()}
    order = _topological_order(y, follow=lambda x: not _folds(x))
    seen = {}
    boxes = [_Box(k, t, names.get(id(t)) or t.name, _label(t, names, seen)) for k, t in enumerate(order)]
    at = {id(b.tensor): b for b in boxes}
    for b in boxes:
        f = b.tensor.creator
        if f is not None:
            b.inputs = [at[id(x)].index for x in f.inputs if id(x) in at]
            b.op = _op_label(f)
    return boxes


SYMBOL = {"Add": "+", "Mul": "×", "Neg": "−", "Sum": "Σ", "MatMul": "@"}


def _op_label(f):
    """The op as its box's small first line and the panel's heading say it:
    "+ ε", "× 1/4", "÷", "^ ½", "Σ axis 0", "Reshape"."""
    op = type(f).__name__
    consts = [constant_label(x) for x in f.inputs if _folds(x)]
    if op == "Pow":
        return f"^ {_number(f.c)}"
    if op == "Mul" and any(_is_reciprocal(x) for x in f.inputs):
        return "÷" + "".join(f" {c}" for c in consts)      # a / b  ==  a * b**-1
    if op == "Sum" and getattr(f, "axes", None) is not None and len(f.axes) < len(f.inputs[0].shape):
        return f"Σ axis {', '.join(map(str, f.axes))}"
    symbol = SYMBOL.get(op, op)
    return symbol + "".join(f" {c}" for c in consts) if op in SYMBOL else \
        symbol + (f" ({', '.join(consts)})" if consts else "")

