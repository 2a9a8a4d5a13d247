"""Showing a graph and its backward pass: ``md.draw_graph(y)``, ``md.step_through(y)``,
``md.steps_table(steps)`` and the record of one step, ``md.BackwardStep``.

The graph is walked exactly as ``backward()`` walks it (each tensor's ``creator``
and that op's inputs), and drawn one box per tensor, left to right. A tensor
has one label wherever it is shown (boxes, the stepper's panel, ``steps_table``,
a printed step): ``label(t)``, its ``name``, or unnamed, its op on its inputs'
labels ("x − μ", "Σ (x − μ)²", "γ reshaped").
Constants that need no gradient (ε, 1/m, an exponent, a scalar factor) are no
boxes of their own: they fold into their op's label ("+ ε", "× 1/4", "^ ½").
``a / b`` (``a * b**-1``) reads as a division.

Only what autograd records is drawn: ops whose inputs require a gradient (a
computation under ``no_grad()``, or on constants alone, leaves no graph).

Two pictures come from the same boxes:

- ``draw_graph`` returns Graphviz's DOT source. Where Graphviz's ``dot`` is
  installed it renders it (its routing of edges around boxes is better than
  ours on large graphs); elsewhere the small layered layout below draws it,
  through matplotlib, so a fresh ``pip install`` draws too.
- ``step_through`` always uses the layout below: the page needs a hook on every
  box and a size it can promise (the BN graph of basic ops fits a 1280×720
  projector, text at least 11 px tall; a tall, narrow graph gets its panel
  beside it, so both fit). The layout is ~80 lines: layers by
  longest path, crossings reduced by barycentres, each box on the row of what
  feeds it. The graphs a lesson steps through have tens of ops, where a layout
  library (grandalf, igraph's Sugiyama, networkx) would do no better and would
  still need our box sizes, columns and edge routing around it.
"""
import html
import itertools
import json
import math
import os
import re
import shutil
import subprocess
from fractions import Fraction

import numpy as np

from . import backend
from .ops.elementwise import Pow
from .tensor import BackwardStep, _topological_order, backward_steps


# ---- one step of a backward pass, as text -------------------------------------
# How a step of a backward pass prints belongs with the pictures of a graph; the
# step itself (what md.backward_steps yields) is the engine's, in tensor.py.
def _step_repr(step):
    lines = [f"step {step.number}: {step.op} -> {_describe(step.output)}",
             f"  upstream {_grad_name(label(step.output))} {_values(step.grad_output)}"]
    for x, g, parts in _received(step):
        lines.append(f"  sends {_grad_name(label(x))} {_values(g)}" + _as_inputs(parts))
    return "\n".join(lines)


def _step_row(step):
    """(step number, op, output, sends to): one line of the table of a pass."""
    return (step.number, step.op, _describe(step.output),
            ", ".join(_describe(x) + _as_inputs(parts) for x, _, parts in _received(step)))


BackwardStep.__repr__ = _step_repr      # print(step): a short block
BackwardStep.row = _step_row


def _received(step):
    """(input, the gradient it receives, how many of the op's inputs it is), each
    input once: ``x * x`` sends its two parts to the same x, which receives their sum."""
    out = {}
    for x, g in zip(step.inputs, step.grad_inputs):
        if g is not None:
            t, total, parts = out.get(id(x), (x, None, []))
            out[id(x)] = (t, g if total is None else total + g, parts + [g])
    return [(x, g, parts) for x, g, parts in out.values()]


def _as_inputs(parts):
    return "" if len(parts) == 1 else " (both inputs)" if len(parts) == 2 else f" ({len(parts)} inputs)"


def steps_table(steps):
    """A backward pass (a list of BackwardStep) as an aligned text table, its
    steps numbered from 1."""
    rows = [("step", "op", "output", "sends gradients to")] + [tuple(map(str, s.row())) for s in steps]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _describe(t):
    return f"{label(t)} {tuple(t.shape)}"


def _grad_name(text):
    """dl/dx̂, dl/dσ², but dl/d(x − μ), dl/d(1/σ)."""
    return f"dl/d{text}" if re.fullmatch(r"[\w\u0300-\u036f²]+", text) else f"dl/d({text})"


def _values(a, small=12):
    a = backend.as_numpy(a)
    if a.size <= small:
        return np.array2string(a, precision=4, suppress_small=True).replace("\n", "")
    return f"shape {a.shape}, norm {_norm(a):.4g}"


def _norm(a):
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


def _constant(t):
    return t.name or _number(backend.as_numpy(t.data).reshape(-1)[0])


def _is_constant(t):
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
        return _constant(t) if _folds(t) else "leaf" if t.requires_grad else "constant"
    if depth == 0:
        return "…"
    if id(t) not in seen:
        inner = [_label(x, names, seen, depth - 1) for x in f.inputs]
        text = _expression(f, inner)
        short = [u if len(u) <= 6 else "−…" if u.startswith("−") else "…" for u in inner]
        seen[id(t)] = text if len(text) <= LONGEST else _expression(f, short)
    return seen[id(t)]


def _wrap(text, power=False):
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
    u = _wrap(inner[0])
    if op == "Pow":
        p = _wrap(inner[0], power=True)
        return {-1: f"1/{p}", 0.5: f"√{p}", 2: f"{p}²", 3: f"{p}³"}.get(f.c, f"{p}^{_number(f.c)}")
    if op == "Neg":
        return f"−{u}"
    if op == "Sum":
        return f"Σ {u}"
    if op == "Add":            # x + (−μ) reads x − μ
        return inner[0] + "".join(f" − {v[1:]}" if v.startswith("−") else f" + {v}" for v in inner[1:])
    if op == "Mul" and inputs[0] is inputs[1]:
        return f"{_wrap(inner[0], power=True)}²"
    if op == "Mul":            # a / b  ==  a * b**-1
        for k in (1, 0):
            if _is_reciprocal(inputs[k]) and inner[k].startswith("1/"):
                return f"{_wrap(inner[1 - k])} / {inner[k][2:]}"
        return f"{u} × {_wrap(inner[1])}"
    if op == "MatMul":
        return f"{u} @ {_wrap(inner[1])}"
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


def _walk(y, names):
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
    consts = [_constant(x) for x in f.inputs if _folds(x)]
    if op == "Pow":
        return f"^ {_number(f.c)}"
    if op == "Mul" and any(_is_reciprocal(x) for x in f.inputs):
        return "÷" + "".join(f" {c}" for c in consts)      # a / b  ==  a * b**-1
    if op == "Sum" and getattr(f, "axes", None) is not None and len(f.axes) < len(f.inputs[0].shape):
        return f"Σ axis {', '.join(map(str, f.axes))}"
    symbol = SYMBOL.get(op, op)
    return symbol + "".join(f" {c}" for c in consts) if op in SYMBOL else \
        symbol + (f" ({', '.join(consts)})" if consts else "")


# ---- the layout: layers left to right, boxes aligned with their neighbours ---
def _layout(sizes, inputs, hgap=20, vgap=12, margin=6):
    """Boxes of ``sizes`` (width, height), ``inputs[k]`` feeding box k (every
    input before its outputs), laid out in columns left to right. Returns the
    boxes' centres, each edge's points, and the drawing's width and height."""
    n = len(sizes)
    outputs = [[] for _ in range(n)]
    for k, ins in enumerate(inputs):
        for i in ins:
            outputs[i].append(k)
    layer = [0] * n
    for k in range(n):                            # longest path from the leaves
        layer[k] = 1 + max((layer[i] for i in inputs[k]), default=-1)
    for k in reversed(range(n)):                  # a leaf sits just before its first use
        if not inputs[k] and outputs[k]:
            layer[k] = min(layer[o] for o in outputs[k]) - 1
    # an edge across several columns passes through a point in each (a "dummy" box of height 0)
    columns = [[] for _ in range(max(layer) + 1)]
    col_of, height, chains, links = list(layer), [h for _, h in sizes], [], set()
    for k in range(n):
        columns[layer[k]].append(k)
    for k in range(n):
        for i in dict.fromkeys(inputs[k]):
            chain = [i]
            for c in range(layer[i] + 1, layer[k]):
                col_of.append(c)
                height.append(0)
                columns[c].append(len(col_of) - 1)
                chain.append(len(col_of) - 1)
            chains.append(chain + [k])
            links.update(zip(chain, chain[1:] + [k]))
    left = [[] for _ in col_of]
    right = [[] for _ in col_of]
    for a, b in links:
        right[a].append(b)
        left[b].append(a)
    place = {v: i for c in columns for i, v in enumerate(c)}
    for sweep in range(8):                        # barycentres: fewer crossings
        forward = sweep % 2 == 0
        for c in (range(1, len(columns)) if forward else range(len(columns) - 2, -1, -1)):
            near = left if forward else right
            key = lambda v: (sum(place[u] for u in near[v]) / len(near[v]) if near[v] else place[v])
            columns[c].sort(key=key)
            place.update({v: i for i, v in enumerate(columns[c])})
    # rows: each box on the row of (the median of) what feeds it, below the box above it;
    # a leaf then moves to the row of what it feeds where the column leaves room
    row = {}
    for c in columns:
        for j, v in enumerate(c):
            fed = sorted(row[u] for u in left[v])
            row[v] = max(fed[(len(fed) - 1) // 2] if fed else 0, row[c[j - 1]] + 1 if j else 0)
    for c in reversed(columns):
        for j, v in enumerate(c):
            if not left[v] and right[v]:
                feeds = sorted(row[u] for u in right[v])
                low = row[c[j - 1]] + 1 if j else 0
                high = row[c[j + 1]] - 1 if j + 1 < len(c) else float("inf")
                row[v] = min(max(feeds[(len(feeds) - 1) // 2], low), high) if low <= high else row[v]
    tall = [0.0] * (max(row.values()) + 1)           # a row of bends alone is thin
    for v, r in row.items():
        tall[r] = max(tall[r], height[v])
    centre = [t / 2 + sum(tall[:r]) + vgap * r for r, t in enumerate(tall)]
    y = [centre[row[v]] + margin for v in range(len(col_of))]
    widths = [max((sizes[v][0] for v in c if v < n), default=0) for c in columns]
    x_left = list(itertools.accumulate([margin] + [w + hgap for w in widths]))
    x = [x_left[col_of[v]] + widths[col_of[v]] / 2 for v in range(len(col_of))]
    paths = {}
    for chain in chains:
        i, k = chain[0], chain[-1]
        points = [(x[i] + sizes[i][0] / 2, y[i])]
        for v in chain[1:-1]:                     # straight through a column it only crosses
            points += [(x_left[col_of[v]], y[v]), (x_left[col_of[v]] + widths[col_of[v]], y[v])]
        points.append((x[k] - sizes[k][0] / 2, y[k]))
        paths[(i, k)] = points
    width = x_left[-1] - hgap + margin
    bottom = max(y[v] + height[v] / 2 for v in range(len(col_of))) + margin
    return [(x[k], y[k]) for k in range(n)], paths, width, bottom


# ---- box sizes and SVG --------------------------------------------------------
FONT = "'DejaVu Sans', Verdana, 'Segoe UI', Arial, sans-serif"
MATH = "'DejaVu Serif', Georgia, 'Times New Roman', serif"   # names: γ must not read as y
FIT = "max-width:100%;height:auto"     # no wider than a notebook: a wide graph shrinks, never scrolls sideways
TITLE_PX, SMALL_PX = 17, 12        # on a 1280×720 projector the smallest text stays above 11 px
NARROW = set("il.,:;'|!()[]ı ·ftrj−")


def _text_width(text, size):
    """About how wide ``text`` is in DejaVu Sans (the widest of the usual fonts)."""
    return size * sum(0.36 if c in NARROW else 0.82 if c in "mwMW×÷" else 0.64 for c in text)


def _box_lines(box, grad_rows, dtype=False):
    """(text, css class, font size) rows of a box: its op above a name, the name
    (or the op that made it), its shape (and dtype), and ``grad_rows`` rows of gradients."""
    rows = []
    if box.op is not None and box.name:
        rows.append((box.op, "op", SMALL_PX))
    rows.append((box.title, "title", TITLE_PX))
    shape = str(box.shape) if box.shape else "scalar"
    rows.append((f"{shape} {box.tensor.dtype}" if dtype else shape, "shape", SMALL_PX))
    return rows + grad_rows


def _svg(boxes, lines, marks=None, edge_marks=None):
    """An SVG of the boxes, each with its ``lines[k]`` (rows of text, class, size)."""
    pad, leading = 5, 1.25
    sizes = [(max(_text_width(t, s) for t, _, s in rows) + 2 * pad,
              sum(s * leading for _, _, s in rows) + 2 * pad) for rows in lines]
    centres, paths, width, height = _layout(sizes, [b.inputs for b in boxes])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" style="{FIT}" '
           f'width="{width:.0f}" height="{height:.0f}" font-family="{html.escape(FONT)}" '
           f'role="img" aria-label="the computational graph">',
           '<defs><marker id="minidl-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
           'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#6b7280"/></marker></defs>']
    for (i, k), points in paths.items():
        d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            dx = (x1 - x0) / 2
            d += f" C{x0 + dx:.1f},{y0:.1f} {x1 - dx:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
        cls = " ".join(["edge"] + ((edge_marks or {}).get((i, k), [])))
        out.append(f'<path class="{cls}" data-from="{i}" data-to="{k}" d="{d}" fill="none" '
                   'stroke="#6b7280" stroke-width="1.3" marker-end="url(#minidl-arrow)"/>')
    for b, rows, (cx, cy), (w, h) in zip(boxes, lines, centres, sizes):
        leaf = b.tensor.creator is None
        cls = " ".join(["node", "leaf" if leaf else "computed",
                        "grad" if b.tensor.requires_grad else "constant"] + ((marks or {}).get(b.index, [])))
        out.append(f'<g class="{cls}" data-node="{b.index}" data-name="{html.escape(b.name or "")}">'
                   f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
                   f'rx="4" fill="{"#dbe9f6" if leaf and b.tensor.requires_grad else "#ffffff"}" '
                   'stroke="#374151" stroke-width="1.2"/>')
        top = cy - h / 2 + pad
        for text, role, size in rows:
            top += size * leading
            weight = f' font-weight="bold" font-family="{html.escape(MATH)}"' if role == "title" else ""
            fill = {"op": "#4b5563", "shape": "#4b5563", "acc": "#1d4ed8", "sent": "#b45309"}.get(role, "#111827")
            out.append(f'<text class="{role}" x="{cx:.1f}" y="{top - size * 0.3:.1f}" font-size="{size}" '
                       f'text-anchor="middle" fill="{fill}"{weight}>{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out), (width, height), centres, sizes, paths


def _grad_text(g):
    """A gradient as a box shows it: the values when there are at most 6, else the
    norm (in words: Graphviz's fonts draw ‖ as "ll")."""
    g = backend.as_numpy(g).astype(np.float64)
    return (f"grad {np.array2string(g.ravel(), precision=3, separator=' ')}" if g.size <= 6
            else f"grad norm {_norm(g):.4g}")


# ---- draw_graph -------------------------------------------------------------
PROJECTOR_WIDTH = 900     # pixels: a PNG narrower than this is blurred when projected across a room


class Graph(str):
    """DOT source (a str) that renders itself: ``.render("g.png")``, and inline
    in a notebook. Graphviz's ``dot`` draws it where installed, minidl's own
    layout (through matplotlib) elsewhere."""

    @property
    def source(self):
        return str(self)

    def render(self, path):
        """Write the picture to ``path`` (format from its extension: .png, .svg,
        .pdf) and the DOT source beside it as .dot. Returns ``path``."""
        root, ext = os.path.splitext(path)
        with open(root + ".dot", "w") as f:
            f.write(self)
        if shutil.which("dot") is not None:
            options = []
            if ext in (".png", ""):        # a projected PNG is at least PROJECTOR_WIDTH pixels wide
                svg = subprocess.run(["dot", "-Tsvg"], input=self.encode(), capture_output=True, check=True)
                points = float(re.search(rb'width="([\d.]+)pt"', svg.stdout).group(1))
                options = [f"-Gdpi={max(150, min(600, math.ceil(PROJECTOR_WIDTH * 72 / points)))}"]
            subprocess.run(["dot", f"-T{ext.lstrip('.') or 'png'}", *options, "-o", path], input=self.encode(),
                           check=True)
        elif ext == ".svg":
            with open(path, "w") as f:
                f.write(self.svg)
        else:
            _matplotlib(self._drawing, path)
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        if shutil.which("dot") is None:
            return {"image/svg+xml": self.svg}
        svg = subprocess.run(["dot", "-Tsvg"], input=self.encode(), capture_output=True, check=True)
        return {"image/svg+xml": re.sub(r"<svg\b", f'<svg style="{FIT}"', svg.stdout.decode(), count=1)}

    @property
    def svg(self):
        """The picture as SVG, from minidl's own layout (no Graphviz needed)."""
        return self._drawing[0]


def draw_graph(y, path=None, names=None, rankdir="LR", step=None):
    """The graph below tensor ``y`` as DOT source (a :class:`Graph`); rendered to
    ``path`` too when given. Boxes are tensors, labelled with their ``name``
    (or by ``names``, e.g. ``dict(model.named_parameters(), x=x)``), or with
    the op that made them; shape, dtype and, after ``backward()``, the gradient.
    ``rankdir`` "TB" draws it top to bottom in Graphviz (narrow enough for a
    printed page). In a notebook it is never wider than the notebook.
    ``step``, one step of ``md.backward_steps(y)``, is marked: its output
    filled and labelled with the upstream gradient, its inputs outlined and
    labelled with the gradients it sends them."""
    if not hasattr(y, "creator"):
        raise TypeError(f"draw_graph: expected the Tensor whose graph to draw, got {type(y).__name__}")
    boxes = _walk(y, names)
    at_step = {}
    if step is not None:
        at_step[id(step.output)] = step.grad_output
        at_step.update({id(x): g for x, g, _ in _received(step)})     # x * x: the sum of both parts
    lines, marks, nodes, edges = [], {}, [], []
    for b in boxes:
        t = b.tensor
        g = at_step.get(id(t), t.grad)
        rows = _box_lines(b, [(_grad_text(g), "grad", SMALL_PX)] if g is not None else [], dtype=True)
        lines.append(rows)
        marked = step is not None and (t is step.output)
        sent = step is not None and id(t) in at_step and not marked
        marks[b.index] = ["current"] * marked + ["target"] * sent
        style = ('style="filled", fillcolor="#f4a259"' if marked else
                 'style="filled,bold", fillcolor="#fde2c0"' if sent else
                 'style="filled", fillcolor="#dbe9f6"' if t.creator is None and t.requires_grad else
                 'style="solid"')
        text = "\\n".join(text for text, _, _ in rows)
        nodes.append(f'  t{id(t)} [shape=box, {style}, label="{text}"];')
        edges += [f"  t{id(boxes[i].tensor)} -> t{id(t)};" for i in b.inputs]
    graph = Graph("digraph minidl {\n"
                  f'  rankdir={rankdir}; node [fontname="Helvetica", fontsize=11];\n'
                  + "\n".join(nodes + edges) + "\n}\n")
    graph._drawing = _svg(boxes, lines, marks) + (boxes, lines)
    if path is not None:
        graph.render(path)
    return graph


def _matplotlib(drawing, path):
    """The SVG's boxes and edges again through matplotlib (PNG, PDF), for
    machines without Graphviz."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch
    from matplotlib.path import Path
    _, (width, height), centres, sizes, paths, boxes, lines = drawing
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.axis("off")
    for points in paths.values():
        verts, codes = [points[0]], [Path.MOVETO]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            dx = (x1 - x0) / 2
            verts += [(x0 + dx, y0), (x1 - dx, y1), (x1, y1)]
            codes += [Path.CURVE4] * 3
        ax.add_patch(PathPatch(Path(verts, codes), fill=False, edgecolor="#6b7280", lw=1))
        ax.annotate("", xy=points[-1], xytext=(points[-1][0] - 6, points[-1][1]),
                    arrowprops=dict(arrowstyle="-|>", color="#6b7280", lw=1))
    for b, rows, (cx, cy), (w, h) in zip(boxes, lines, centres, sizes):
        leaf = b.tensor.creator is None and b.tensor.requires_grad
        ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=4",
                                    facecolor="#dbe9f6" if leaf else "white", edgecolor="#374151", lw=1))
        top = cy - h / 2 + 5
        for text, role, size in rows:
            top += size * 1.25
            ax.text(cx, top - size * 0.3, text, fontsize=size * 0.75, ha="center", va="baseline",
                    fontweight="bold" if role == "title" else "normal",
                    family="DejaVu Serif" if role == "title" else "DejaVu Sans",
                    color="#111827" if role == "title" else "#4b5563")
    fig.savefig(path, dpi=max(200, math.ceil(PROJECTOR_WIDTH / fig.get_figwidth())))


# ---- step_through -----------------------------------------------------------
SMALL = 24             # a gradient of at most this many values is shown whole


def _values_html(a, name):
    """A gradient as the panel shows it: every value of a small one, an excerpt
    with shape and norm of a large one. data-norm and data-shape for scripts."""
    a = backend.as_numpy(a).astype(np.float64)
    fmt = lambda v: f"{v + 0.0:.4g}".replace("-", "−")          # + 0.0: no "−0"
    head = (f'<div class="values" data-tensor="{html.escape(name)}" data-norm="{_norm(a)!r}" '
            f'data-shape="{",".join(map(str, a.shape))}">')
    if a.size <= SMALL:
        rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
        cells = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
        return head + f'<table class="grid">{cells}</table><span class="meta">shape {a.shape}, norm {_norm(a):.4g}</span></div>'
    flat = a.ravel()
    excerpt = " ".join(fmt(v) for v in flat[:6]) + " … " + " ".join(fmt(v) for v in flat[-2:])
    return head + (f'<span class="excerpt">{excerpt}</span>'
                   f'<span class="meta">shape {a.shape}, {a.size} values, norm {_norm(a):.4g}</span></div>')


BESIDE = 560           # px: a graph at most this wide (a tall, narrow one) gets its panel beside it


class StepThrough:
    """A backward pass as an interactive page: ``_repr_html_`` in a notebook,
    ``.save(path)`` as a standalone HTML file. ``.steps`` are the BackwardSteps."""

    _count = itertools.count()

    def __init__(self, y, grad=None, names=None, title=None):
        boxes = _walk(y, names)
        box_of = {id(b.tensor): b for b in boxes}
        kept = {id(b.tensor): b.tensor.grad for b in boxes}
        try:
            self.steps = list(backward_steps(y, grad))
        finally:                          # a helper leaves the world as it found it: no .grad written
            for b in boxes:
                b.tensor.grad = kept[id(b.tensor)]
        self.title = title or "Backward pass, one op at a time"
        self.id = f"minidl-steps-{os.getpid()}-{next(self._count)}"
        self._html = self._build(y, boxes, box_of)

    def _build(self, y, boxes, box_of):
        steps, root = self.steps, box_of[id(y)]
        last = {root.index: -1}                    # the last step that sends to each box
        for s in steps:
            for x, _, _ in _received(s):
                last[box_of[id(x)].index] = s.index
        acc = {root.index: backend.as_numpy(steps[0].grad_output).astype(np.float64)} if steps else {}
        per_step, texts = [], {b.index: set() for b in boxes}
        for s in steps:
            out = box_of[id(s.output)]
            # one entry per input tensor: x * x sends its two parts to x at once
            sends = [(box_of[id(x)], backend.as_numpy(g).astype(np.float64), parts) for x, g, parts in _received(s)]
            before = {k: v.copy() for k, v in acc.items()}
            for b, g, _ in sends:
                acc[b.index] = acc[b.index] + g if b.index in acc else g
            boxes_text = {k: [f"Σ {_norm(v):.3g}", ""] for k, v in before.items()}
            for b, g, _ in sends:
                boxes_text.setdefault(b.index, ["", ""])[1] = f"+ {_norm(g):.3g}"
            for k, (a, b_) in boxes_text.items():
                texts[k].update([a, b_])
            done = sorted(k for k, v in last.items() if v <= s.index)
            newly = [boxes[k] for k, v in last.items() if v == s.index and boxes[k].name]
            per_step.append(dict(node=out.index, targets=[b.index for b, _, _ in sends], done=done,
                                 text={str(k): v for k, v in boxes_text.items()},
                                 panel=self._panel(s, out, sends, before, newly, len(steps), box_of),
                                 complete=self._complete([boxes[k] for k in done])))
        lines = []
        for b in boxes:
            wide = max(texts[b.index] | {""}, key=lambda t: _text_width(t, SMALL_PX))
            lines.append(_box_lines(b, [(wide, "acc", SMALL_PX), (wide, "sent", SMALL_PX)]))
        svg, (width, height), *_ = _svg(boxes, lines)
        data = json.dumps(dict(steps=per_step)).replace("</", "<\\/")
        return TEMPLATE.format(id=self.id, n=len(steps), max=len(steps) - 1, svg=svg, data=data, css=CSS,
                               js=JS.replace("ROOT_ID", json.dumps(self.id)),
                               title=html.escape(self.title), width=f"{width:.0f}",
                               layout="beside" if width <= BESIDE else "below", legend=LEGEND)

    @staticmethod
    def _panel(s, out, sends, before, newly, n, box_of):
        name = lambda b: f'<span class="name">{html.escape(b.title)}</span>'
        words = local_derivative(s.function)
        if s.op == "Mul" and s.inputs[0] is s.inputs[1]:   # (x − μ)²: one tensor, both factors
            u = box_of[id(s.inputs[0])].title
            words = (f"2·{_wrap(u)} towards {u}: both factors are the same tensor {u}, each sends it "
                     f"{_wrap(u)}·g (g: the gradient arriving here), so it receives 2·{_wrap(u)}·g")
        elif s.op == "Mul":                 # the other factor, named: "γ towards x̂, x̂ towards γ"
            a, b = (_factor(x, box_of) for x in s.inputs)
            words = ", ".join(f"{other} towards {this}" for this, other, x in ((a, b, s.inputs[0]), (b, a, s.inputs[1]))
                              if x.requires_grad)
        op = f'<span class="opname">{html.escape(out.op)}</span>' + ("" if out.op == s.op else f" ({s.op})")
        rows = [f'<h3>Step {s.number} of {n}: {op} made {name(out)} {out.shape}</h3>',
                f'<p class="local">Local derivative: <b>{html.escape(words)}</b>; '
                'the op multiplies the gradient arriving at its output by it.</p>',
                f'<div class="flow"><div class="arrive"><h4>arrives at {name(out)}: '
                f'{html.escape(_grad_name(out.title))}, complete</h4>{_values_html(s.grad_output, out.title)}</div>']
        for b, g, parts in sends:
            had = before.get(b.index)
            both = ("" if len(parts) == 1 else
                    f'<p class="meta">the sum of its {len(parts)} parts, one per input it is '
                    f'(norms {", ".join(f"{_norm(p):.4g}" for p in parts)})</p>')
            rows.append(f'<div class="send" data-target="{b.index}"><h4>sends to {name(b)}</h4>'
                        f'{_values_html(g, b.title)}{both}<p class="before">accumulated there before this step: '
                        + (f"norm {_norm(had):.4g}" if had is not None else "nothing yet") + "</p></div>")
        rows.append("</div>")
        rows += [f'<p class="completed">{html.escape(_grad_name(b.title))} is complete</p>' for b in newly]
        return "\n".join(rows)

    @staticmethod
    def _complete(done):
        return "".join(f'<li data-tensor="{html.escape(b.title)}">{html.escape(_grad_name(b.title))}</li>'
                       for b in done)

    def __repr__(self):
        # what a terminal (or a notebook's plain-text fallback) shows instead of the page
        return f"<{self.title}: {len(self.steps)} steps; .save(path) writes the page>"

    def _repr_html_(self):
        return self._html

    def save(self, path):
        """A standalone page (no network needed); returns ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                    f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                    f'<title>{html.escape(self.title)}</title></head>\n<body>\n{self._html}\n</body></html>\n')
        return path


def _factor(x, box_of):
    """A factor of a product as the panel names it: its label, and a constant
    array as what it is ("the constant (4, 3) factor w")."""
    if _is_constant(x) and x.size > 1:
        title = box_of[id(x)].title if id(x) in box_of else x.name      # folded where named
        return f"the constant {tuple(x.shape)} factor" + ("" if title in (None, "constant") else f" {title}")
    return box_of[id(x)].title if id(x) in box_of else _constant(x)


def step_through(y, grad=None, names=None, title=None):
    """The backward pass of ``y`` (upstream gradient ``grad``, as in
    ``y.backward(grad)``) as an interactive page: the graph left to right, the
    current op highlighted, its gradients in a panel, buttons, arrow keys and a
    slider to move. Shows itself in a notebook; ``.save("steps.html")`` writes a
    page that needs no kernel and no network. Writes no ``.grad``."""
    if not hasattr(y, "creator"):
        raise TypeError(f"step_through: expected the Tensor whose backward pass to show, got {type(y).__name__}")
    return StepThrough(y, grad, names, title)


LEGEND = ('<span class="key"><svg width="14" height="14"><rect x="1" y="1" width="12" height="12" '
          'fill="#f4a259" stroke="#374151"/></svg> the op of this step (its output)</span>'
          '<span class="key"><svg width="14" height="14"><rect x="1" y="1" width="12" height="12" '
          'fill="#fff7ed" stroke="#b45309" stroke-width="2.5"/></svg> receives a gradient now</span>'
          '<span class="key"><svg width="14" height="14"><rect x="1" y="1" width="12" height="12" '
          'fill="#dcfce7" stroke="#15803d" stroke-width="2"/></svg> gradient complete</span>'
          '<span class="key acc">Σ 1.23 = norm of the gradient accumulated before this step</span>'
          '<span class="key sent">+ 0.45 = norm of the part this step sends</span>')

CSS = """
.minidl-steps{font-family:'DejaVu Sans',Verdana,'Segoe UI',Arial,sans-serif;font-size:14px;color:#111827;
  max-width:100%;box-sizing:border-box;padding:4px;outline:none;line-height:1.3}
.minidl-steps:focus-visible{outline:2px solid #2563eb}
.minidl-steps .bar{display:flex;align-items:center;gap:8px;flex-wrap:wrap;margin:2px 0 4px}
.minidl-steps .bar button{font-size:15px;padding:2px 12px;cursor:pointer}
.minidl-steps .bar input[type=range]{flex:1 1 200px;max-width:420px}
.minidl-steps .where{font-weight:bold}
.minidl-steps .graph{overflow:hidden}
.minidl-steps .graph svg{max-width:100%;height:auto;display:block}
.minidl-steps.beside .main{display:flex;gap:16px;align-items:flex-start}
.minidl-steps.beside .graph{flex:0 1 auto;max-width:50%}
.minidl-steps.beside .side{flex:1 1 0;min-width:0}
.minidl-steps .legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin:2px 0 6px}
.minidl-steps .legend .acc{color:#1d4ed8}.minidl-steps .legend .sent{color:#b45309}
.minidl-steps .key svg{vertical-align:middle;margin-right:3px}
.minidl-steps g.node.done rect{fill:#dcfce7;stroke:#15803d;stroke-width:2}
.minidl-steps g.node.target rect{fill:#fff7ed;stroke:#b45309;stroke-width:2.5}
.minidl-steps g.node.current rect{fill:#f4a259;stroke:#111827;stroke-width:2.5}
.minidl-steps path.edge.flow{stroke:#b45309;stroke-width:2.6}
.minidl-steps [data-role=step-panel]{border-top:1px solid #d1d5db;padding-top:2px}
.minidl-steps h3{font-size:16px;margin:2px 0}.minidl-steps h4{font-size:13px;margin:0 0 2px;font-weight:normal}
.minidl-steps .name{font-family:'DejaVu Serif',Georgia,'Times New Roman',serif;font-weight:bold}
.minidl-steps .opname{font-family:monospace;font-size:16px;background:#fde2c0;padding:0 4px}
.minidl-steps p{margin:2px 0}
.minidl-steps .flow{display:flex;flex-wrap:wrap;gap:6px 22px}
.minidl-steps .send h4{color:#b45309}
.minidl-steps table.grid{border-collapse:collapse;font-family:monospace;font-size:13px}
.minidl-steps table.grid td{padding:0 6px;text-align:right;border:1px solid #e5e7eb}
.minidl-steps .meta,.minidl-steps .before{font-size:12px;color:#4b5563;display:block}
.minidl-steps .excerpt{font-family:monospace;font-size:13px}
.minidl-steps .completed{color:#15803d;font-weight:bold;font-size:16px}
.minidl-steps .done-list{font-size:13px;color:#15803d}
.minidl-steps .done-list,.minidl-steps .completed{font-family:'DejaVu Serif',Georgia,serif}
.minidl-steps [data-role=complete]{display:inline;padding:0;margin:0}
.minidl-steps [data-role=complete] li{display:inline;margin-right:10px}
"""

JS = r"""
(function () {
  var root = document.getElementById(ROOT_ID);
  if (!root || root.getAttribute("data-ready")) return;
  root.setAttribute("data-ready", "1");
  var data = JSON.parse(root.querySelector("script.minidl-data").textContent);
  var steps = data.steps, n = steps.length;
  var panel = root.querySelector("[data-role=step-panel]");
  var done = root.querySelector("[data-role=complete]");
  var slider = root.querySelector("input[type=range]");
  var where = root.querySelector(".where");
  var nodes = root.querySelectorAll("g.node"), edges = root.querySelectorAll("path.edge");
  function show(k) {
    k = Math.max(0, Math.min(n - 1, k));
    var s = steps[k];
    root.setAttribute("data-current", String(k));
    slider.value = String(k);
    where.textContent = "step " + (k + 1) + " of " + n;
    panel.innerHTML = s.panel;
    done.innerHTML = s.complete;
    for (var i = 0; i < nodes.length; i++) {
      var g = nodes[i], v = Number(g.getAttribute("data-node")), t = s.text[String(v)] || ["", ""];
      g.classList.toggle("current", v === s.node);
      g.classList.toggle("target", s.targets.indexOf(v) >= 0);
      g.classList.toggle("done", s.done.indexOf(v) >= 0 && v !== s.node);
      g.querySelector("text.acc").textContent = t[0];
      g.querySelector("text.sent").textContent = t[1];
    }
    for (var e = 0; e < edges.length; e++) {
      var to = Number(edges[e].getAttribute("data-to")), from = Number(edges[e].getAttribute("data-from"));
      edges[e].classList.toggle("flow", to === s.node && s.targets.indexOf(from) >= 0);
    }
  }
  function current() { return Number(root.getAttribute("data-current")); }
  // a mouse click leaves the focus on the stepper, not on its button or slider: Space and
  // Up/Down then scroll the page as ever, instead of clicking the button again or moving the slider
  function refocus(e) { if (e.type === "pointerup" || e.detail) root.focus({preventScroll: true}); }
  root.querySelector("button.prev").addEventListener("click", function (e) { show(current() - 1); refocus(e); });
  root.querySelector("button.next").addEventListener("click", function (e) { show(current() + 1); refocus(e); });
  slider.addEventListener("input", function () { show(Number(slider.value)); });
  slider.addEventListener("pointerup", refocus);
  function visible() {
    var r = root.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight && r.right > 0 && r.left < window.innerWidth;
  }
  // Left/Right/Home/End only, and only on a stepper at least partly on screen; the page keeps
  // Up/Down/Space/PageUp/PageDown for scrolling
  var MOVES = {ArrowRight: function () { return current() + 1; }, ArrowLeft: function () { return current() - 1; },
               Home: function () { return 0; }, End: function () { return n - 1; }};
  function key(e) {
    if (!Object.prototype.hasOwnProperty.call(MOVES, e.key) || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey
        || !visible()) return false;
    show(MOVES[e.key]()); e.preventDefault();
    return true;
  }
  root.__minidlKey = key;
  // keys act on the stepper that has the focus, or (the focus on the page itself) the one last clicked
  root.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t === slider || t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)) return;
    if (key(e)) e.stopPropagation();
  });
  root.addEventListener("pointerdown", function () { window.__minidlLastStepper = root; });
  if (!window.__minidlStepperKeys) {
    window.__minidlStepperKeys = true;
    document.addEventListener("keydown", function (e) {
      var last = window.__minidlLastStepper, t = e.target;
      if (!last || !document.body.contains(last)) return;
      if (t !== document.body && t !== document.documentElement) return;  // typing elsewhere: not ours
      last.__minidlKey(e);
    });
  }
  show(0);
})();
"""

TEMPLATE = """<div class="minidl-steps {layout}" id="{id}" data-minidl-steps="" data-steps="{n}" data-current="0" tabindex="0"
 role="group" aria-label="{title}: step through the backward pass with the left and right arrow keys">
<style>{css}</style>
<div class="bar"><strong>{title}</strong>
<button type="button" class="prev" aria-label="previous step">&#9664;</button>
<input type="range" min="0" max="{max}" value="0" step="1" aria-label="step">
<button type="button" class="next" aria-label="next step">&#9654;</button>
<span class="where" aria-live="polite">step 1 of {n}</span></div>
<div class="main"><div class="graph">{svg}</div>
<div class="side"><div class="legend">{legend}</div>
<div data-role="step-panel"></div>
<div class="done-list">gradients complete: <ul data-role="complete"></ul></div></div></div>
<script type="application/json" class="minidl-data">{data}</script>
<script>{js}</script>
</div>"""
