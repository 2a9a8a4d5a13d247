"""The graph as pictures: SVG from minidl's own layout, DOT for Graphviz
(``draw_graph``), and matplotlib where Graphviz is not installed."""
import html
import math
import os
import re
import shutil
import subprocess

import numpy as np

from .. import backend
from .labels import norm, received, walk
from .layout import layout


# ---- box sizes and SVG --------------------------------------------------------
FONT = "'DejaVu Sans', Verdana, 'Segoe UI', Arial, sans-serif"
MATH = "'DejaVu Serif', Georgia, 'Times New Roman', serif"   # names: γ must not read as y
FIT = "max-width:100%;height:auto"     # draw_graph: no wider than a notebook (a picture, not a page to read)
TITLE_PX, SMALL_PX = 17, 12        # px at the stepper's own size, which it never shrinks
NARROW = set("il.,:;'|!()[]ı ·ftrj−")


def text_width(text, size):
    """About how wide ``text`` is in DejaVu Sans (the widest of the usual fonts)."""
    return size * sum(0.36 if c in NARROW else 0.82 if c in "mwMW×÷" else 0.64 for c in text)


def box_lines(box, grad_rows, dtype=False):
    """(text, css class, font size) rows of a box: its op above a name, the name
    (or the op that made it), its shape (and dtype), and ``grad_rows`` rows of gradients."""
    rows = []
    if box.op is not None and box.name:
        rows.append((box.op, "op", SMALL_PX))
    rows.append((box.title, "title", TITLE_PX))
    shape = str(box.shape) if box.shape else "scalar"
    rows.append((f"{shape} {box.tensor.dtype}" if dtype else shape, "shape", SMALL_PX))
    return rows + grad_rows


def draw_svg(boxes, lines, marks=None, edge_marks=None, fit=True):
    """An SVG of the boxes, each with its ``lines[k]`` (rows of text, class, size);
    ``fit``: never wider than the page (the stepper sizes its own instead)."""
    pad, leading = 5, 1.25
    sizes = [(max(text_width(t, s) for t, _, s in rows) + 2 * pad,
              sum(s * leading for _, _, s in rows) + 2 * pad) for rows in lines]
    centres, paths, width, height = layout(sizes, [b.inputs for b in boxes])
    style = f'style="{FIT}" ' if fit else ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" {style}'
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
        ring = (f'<rect class="term-ring" x="{cx - w / 2 - 4:.1f}" y="{cy - h / 2 - 4:.1f}" width="{w + 8:.1f}" '
                f'height="{h + 8:.1f}" rx="6" fill="none" stroke="#7c3aed" stroke-width="2.5"/>'
                if "term" in (marks or {}).get(b.index, []) else "")
        out.append(f'<g class="{cls}" data-node="{b.index}" data-name="{html.escape(b.name or "")}">{ring}'
                   f'<rect class="box" x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
                   f'rx="4" fill="{"#dbe9f6" if leaf and b.tensor.requires_grad else "#ffffff"}" '
                   'stroke="#374151" stroke-width="1.2"/>')
        top = cy - h / 2 + pad
        for text, role, size in rows:
            top += size * leading
            weight = f' font-weight="bold" font-family="{html.escape(MATH)}"' if role in ("title", "term") else ""
            fill = {"term": "#6d28d9", "op": "#4b5563", "shape": "#4b5563", "acc": "#1d4ed8", "sent": "#b45309"}.get(role, "#111827")
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
            else f"grad norm {norm(g):.4g}")


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
    boxes = walk(y, names)
    at_step = {}
    if step is not None:
        at_step[id(step.output)] = step.grad_output
        at_step.update({id(x): g for x, g, _ in received(step)})     # x * x: the sum of both parts
    lines, marks, nodes, edges = [], {}, [], []
    for b in boxes:
        t = b.tensor
        g = at_step.get(id(t), t.grad)
        rows = box_lines(b, [(_grad_text(g), "grad", SMALL_PX)] if g is not None else [], dtype=True)
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
    graph._drawing = draw_svg(boxes, lines, marks) + (boxes, lines)
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
