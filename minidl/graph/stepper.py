"""``md.step_through``: the backward pass as a page to step through, in a
notebook's output or saved as a file. The page's style, script and markup are
the package's files ``stepper.css``, ``stepper.js`` and ``stepper.html``.

Sized for a projector: the graph is drawn at its own size (its smallest text
12 px) and never shrunk to fit; where the space it gets is narrower, it scrolls
sideways and follows the current step, and where it is wider (or the graph is
small), it grows. A tall, narrow graph gets its panel beside it where the width
allows. The script decides both from the width and height the page gives it.
"""
import html
import io
import itertools
import json
import os
import re
from importlib import resources

import numpy as np

from .. import backend
from ..tensor import Tensor, backward_steps
from .labels import constant_label, grad_name, is_constant, local_derivative, norm, received, walk, wrap
from .render import SMALL_PX, box_lines, draw_svg, text_width

SMALL = 24             # a gradient of at most this many values is shown whole
BESIDE = 560           # px: a graph at most this wide (a tall, narrow one) may get its panel beside it
FORMULA_PX = 20        # a term's formula, as tall as the panel's headings


def _asset(name):
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _values_html(a, name):
    """A gradient as the panel shows it: every value of a small one, an excerpt
    with shape and norm of a large one. data-norm and data-shape for scripts."""
    a = backend.as_numpy(a).astype(np.float64)
    fmt = lambda v: f"{v + 0.0:.4g}".replace("-", "−")          # + 0.0: no "−0"
    head = (f'<div class="values" data-tensor="{html.escape(name)}" data-norm="{norm(a)!r}" '
            f'data-shape="{",".join(map(str, a.shape))}">')
    if a.size <= SMALL:
        rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
        cells = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
        return head + f'<table class="grid">{cells}</table><span class="meta">shape {a.shape}, norm {norm(a):.4g}</span></div>'
    flat = a.ravel()
    excerpt = " ".join(fmt(v) for v in flat[:6]) + " … " + " ".join(fmt(v) for v in flat[-2:])
    return head + (f'<span class="excerpt">{excerpt}</span>'
                   f'<span class="meta">shape {a.shape}, {a.size} values, norm {norm(a):.4g}</span></div>')


def _formula_svg(term, formula):
    """A term's formula (matplotlib's mathtext: LaTeX's math subset) as inline SVG,
    its glyphs drawn as paths: the page needs no fonts and no network."""
    import matplotlib
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties
    buf = io.BytesIO()
    display = re.sub(r"\\frac(?![a-z])", r"\\dfrac", formula)    # display style, as a lesson's $$...$$
    try:
        with matplotlib.rc_context({"mathtext.fontset": "cm", "svg.fonttype": "path", "svg.hashsalt": term}):
            mathtext.math_to_image(f"${display}$", buf, prop=FontProperties(size=FORMULA_PX), format="svg")
    except ValueError as e:
        raise ValueError(f"step_through: the formula of the term {term!r} is not one matplotlib's mathtext "
                         f"(LaTeX's math subset) can draw: {formula!r}\n{e}") from None
    svg = buf.getvalue().decode()
    svg = svg[svg.index("<svg"):]
    # the figure's metadata, its style sheet (a `*` rule that would restyle the page) and its white
    # background: not the formula's
    svg = re.sub(r"<metadata>.*?</metadata>|<style[^>]*>.*?</style>|<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r'<g id="patch_1">.*?</g>', "", svg, count=1, flags=re.S)
    # user units are points at FORMULA_PX "points" per em: drawn in px, an em is FORMULA_PX px
    svg = re.sub(r'width="([\d.]+)pt" height="([\d.]+)pt"',
                 lambda m: f'width="{m.group(1)}" height="{m.group(2)}" role="img" aria-label="{html.escape(formula)}"'
                           f' class="formula" data-em-px="{FORMULA_PX}"', svg, count=1)
    return re.sub(r"\n\s*", "\n", svg).strip()


def _terms(terms, box_of):
    """{box index: (term name, formula or None)} from ``step_through``'s ``terms``, checked."""
    if terms is None:
        return {}
    if not isinstance(terms, dict):
        raise TypeError(f"step_through: terms should be a dict {{name: (tensor, formula)}}, got {type(terms).__name__}")
    out = {}
    for name, spec in terms.items():
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], Tensor)
                and (spec[1] is None or isinstance(spec[1], str))):
            raise TypeError(f"step_through: terms[{name!r}] should be (tensor, formula), the formula a str "
                            f"or None; got {spec!r:.80}")
        t, formula = spec
        box = box_of.get(id(t))
        if box is None or not t.requires_grad:
            raise ValueError(f"step_through: the term {name!r} names a tensor {tuple(t.shape)} that is not in "
                             "the graph whose backward pass is shown, or needs no gradient")
        if box.index in out:
            raise ValueError(f"step_through: the terms {out[box.index][0]!r} and {name!r} name the same tensor")
        out[box.index] = (str(name), formula)
    return out


class StepThrough:
    """A backward pass as an interactive page: ``_repr_html_`` in a notebook,
    ``.save(path)`` as a standalone HTML file. ``.steps`` are the BackwardSteps;
    ``.terms`` {term name: the step (a BackwardStep) that completes it}."""

    _count = itertools.count()

    def __init__(self, y, grad=None, names=None, title=None, terms=None):
        boxes = walk(y, names)
        box_of = {id(b.tensor): b for b in boxes}
        term_of = _terms(terms, box_of)
        kept = {id(b.tensor): b.tensor.grad for b in boxes}
        try:
            self.steps = list(backward_steps(y, grad))
        finally:                          # a helper leaves the world as it found it: no .grad written
            for b in boxes:
                b.tensor.grad = kept[id(b.tensor)]
        self.title = title or "Backward pass, one op at a time"
        self.id = f"minidl-steps-{os.getpid()}-{next(self._count)}"
        self._html = self._build(y, boxes, box_of, term_of)

    def _build(self, y, boxes, box_of, term_of):
        steps, root = self.steps, box_of[id(y)]
        last = {root.index: -1}                    # the last step that sends to each box
        for s in steps:
            for x, _, _ in received(s):
                last[box_of[id(x)].index] = s.index
        # a term is complete at the last step that sends to it; y's own gradient arrives complete at step 1
        term_step = {k: max(last.get(k, 0), 0) for k in term_of}
        self.terms = {name: steps[term_step[k]] for k, (name, _) in term_of.items()}
        formulas = {k: _formula_svg(name, f) for k, (name, f) in term_of.items() if f is not None}
        acc = {root.index: backend.as_numpy(steps[0].grad_output).astype(np.float64)} if steps else {}
        per_step, texts = [], {b.index: set() for b in boxes}
        for s in steps:
            out = box_of[id(s.output)]
            # one entry per input tensor: x * x sends its two parts to x at once
            sends = [(box_of[id(x)], backend.as_numpy(g).astype(np.float64), parts) for x, g, parts in received(s)]
            before = {k: v.copy() for k, v in acc.items()}
            for b, g, _ in sends:
                acc[b.index] = acc[b.index] + g if b.index in acc else g
            boxes_text = {k: [f"Σ {norm(v):.3g}", ""] for k, v in before.items()}
            for b, g, _ in sends:
                boxes_text.setdefault(b.index, ["", ""])[1] = f"+ {norm(g):.3g}"
            for k, (a, b_) in boxes_text.items():
                texts[k].update([a, b_])
            done = sorted(k for k, v in last.items() if v <= s.index)
            newly = [boxes[k] for k, v in last.items() if v == s.index and boxes[k].name and k not in term_of]
            completed = [(term_of[k], formulas.get(k), boxes[k], acc[k]) for k in term_of if term_step[k] == s.index]
            panel = self._panel(s, out, sends, before, newly, len(steps), box_of) + self._terms_html(completed)
            per_step.append(dict(node=out.index, targets=[b.index for b, _, _ in sends], done=done,
                                 text={str(k): v for k, v in boxes_text.items()}, panel=panel,
                                 complete=self._complete([boxes[k] for k in done])))
        lines = []
        for b in boxes:
            wide = max(texts[b.index] | {""}, key=lambda t: text_width(t, SMALL_PX))
            rows = [(term_of[b.index][0], "term", SMALL_PX + 1)] if b.index in term_of else []
            lines.append(rows + box_lines(b, [(wide, "acc", SMALL_PX), (wide, "sent", SMALL_PX)]))
        marks = {k: ["term"] for k in term_of}
        svg, (width, height), *_ = draw_svg(boxes, lines, marks, fit=False)
        term_list = "".join(f'<li data-term="{html.escape(name)}" data-step="{term_step[k]}">{html.escape(name)} '
                            f'<span class="at">step {term_step[k] + 1}</span></li>'
                            for k, (name, _) in sorted(term_of.items(), key=lambda kv: term_step[kv[0]]))
        data = json.dumps(dict(steps=per_step)).replace("</", "<\\/")
        return _asset("stepper.html").format(
            id=self.id, n=len(steps), max=len(steps) - 1, svg=svg, data=data, css=_asset("stepper.css"),
            js=_asset("stepper.js"), title=html.escape(self.title), width=f"{width:.0f}", height=f"{height:.0f}",
            narrow="1" if width <= BESIDE else "", terms=term_list, has_terms="" if term_list else " hidden")

    @staticmethod
    def _panel(s, out, sends, before, newly, n, box_of):
        name = lambda b: f'<span class="name">{html.escape(b.title)}</span>'
        words = local_derivative(s.function)
        if s.op == "Mul" and s.inputs[0] is s.inputs[1]:   # (x − μ)²: one tensor, both factors
            u = box_of[id(s.inputs[0])].title
            words = (f"2·{wrap(u)} towards {u}: both factors are the same tensor {u}, each sends it "
                     f"{wrap(u)}·g (g: the gradient arriving here), so it receives 2·{wrap(u)}·g")
        elif s.op == "Mul":                 # the other factor, named: "γ towards x̂, x̂ towards γ"
            a, b = (_factor(x, box_of) for x in s.inputs)
            words = ", ".join(f"{other} towards {this}" for this, other, x in ((a, b, s.inputs[0]), (b, a, s.inputs[1]))
                              if x.requires_grad)
        op = f'<span class="opname">{html.escape(out.op)}</span>' + ("" if out.op == s.op else f" ({s.op})")
        rows = [f'<h3>Step {s.number} of {n}: {op} made {name(out)} {out.shape}</h3>',
                f'<p class="local">Local derivative: <b>{html.escape(words)}</b>; '
                'the op multiplies the gradient arriving at its output by it.</p>',
                f'<div class="flow"><div class="arrive"><h4>arrives at {name(out)}: '
                f'{html.escape(grad_name(out.title))}, complete</h4>{_values_html(s.grad_output, out.title)}</div>']
        for b, g, parts in sends:
            had = before.get(b.index)
            both = ("" if len(parts) == 1 else
                    f'<p class="meta">the sum of its {len(parts)} parts, one per input it is '
                    f'(norms {", ".join(f"{norm(p):.4g}" for p in parts)})</p>')
            rows.append(f'<div class="send" data-target="{b.index}"><h4>sends to {name(b)}</h4>'
                        f'{_values_html(g, b.title)}{both}<p class="before">already there: '
                        + (f"norm {norm(had):.4g}" if had is not None else "nothing yet") + "</p></div>")
        rows.append("</div>")
        rows += [f'<p class="completed">{html.escape(grad_name(b.title))} is complete</p>' for b in newly]
        return "\n".join(rows)

    @staticmethod
    def _terms_html(completed):
        """The terms this step completes: each its name, its formula and its values,
        side by side where the width allows (BN's step 2 completes dl/dγ and dl/dx̂:
        stacked, they took the panel below a 720 px screen)."""
        if not completed:
            return ""
        return '<div class="terms-done">' + "".join(
            f'<div class="term-done" data-term="{html.escape(name)}"><h4><b>{html.escape(name)}</b> is complete'
            f' (the gradient at <span class="name">{html.escape(box.title)}</span>)</h4><div class="term-body">'
            + (f'<div class="formula-box">{formula}</div><span class="equals">=</span>' if formula else "")
            + _values_html(g, box.title) + "</div></div>"
            for (name, _), formula, box, g in completed) + "</div>"

    @staticmethod
    def _complete(done):
        return "".join(f'<li data-tensor="{html.escape(b.title)}">{html.escape(grad_name(b.title))}</li>'
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
    if is_constant(x) and x.size > 1:
        title = box_of[id(x)].title if id(x) in box_of else x.name      # folded where named
        return f"the constant {tuple(x.shape)} factor" + ("" if title in (None, "constant") else f" {title}")
    return box_of[id(x)].title if id(x) in box_of else constant_label(x)


def step_through(y, grad=None, names=None, title=None, terms=None):
    """The backward pass of ``y`` (upstream gradient ``grad``, as in
    ``y.backward(grad)``) as an interactive page: the graph left to right, the
    current op highlighted, its gradients in a panel, buttons, arrow keys and a
    slider to move. Shows itself in a notebook; ``.save("steps.html")`` writes a
    page that needs no kernel and no network. Writes no ``.grad``.

    ``terms`` names the gradients a derivation is about, each with its formula:
    ``{"dl/dx̂": (x_hat, r"\\frac{\\partial l}{\\partial \\hat x_i} = \\frac{\\partial l}{\\partial y_i}\\,\\gamma"), ...}``
    (a tensor of the graph; the formula in matplotlib's mathtext, LaTeX's math
    subset, or None). Their boxes are marked with the term's name, a list shows
    which are complete, and at the step that completes a term the panel shows
    its formula beside its values."""
    if not hasattr(y, "creator"):
        raise TypeError(f"step_through: expected the Tensor whose backward pass to show, got {type(y).__name__}")
    return StepThrough(y, grad, names, title, terms)
