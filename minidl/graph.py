"""The computational graph as a picture: ``md.draw_graph(y)``.

Walks the graph below ``y`` exactly as ``backward()`` does (through each
tensor's ``creator`` and that op's inputs) and writes it in Graphviz's DOT
language: a box per tensor (name, shape, dtype and, after ``backward()``, the
norm of its gradient), an ellipse per op. The DOT source is always returned;
Graphviz's ``dot`` program renders it to PNG or SVG where it is installed, and a
notebook shows it inline.

Only what autograd records is drawn: ops whose inputs require a gradient (a
computation under ``no_grad()``, or on constants alone, leaves no graph).
"""
import os
import shutil
import subprocess
import warnings

import numpy as np

from . import backend

INSTALL_HINT = ("Graphviz's `dot` program is not installed, so the graph is not rendered "
                "(its DOT source is still returned). Install it: `apt-get install graphviz` "
                "(Debian/Ubuntu), `brew install graphviz` (macOS), `conda install graphviz`, "
                "or paste the source into any Graphviz viewer.")


class Graph(str):
    """DOT source (a str) that renders itself: ``.render("g.png")``, and inline
    in a notebook where ``dot`` is installed."""

    @property
    def source(self):
        return str(self)

    def render(self, path):
        """Write the picture to ``path`` (format from its extension: .png, .svg,
        .pdf) and the source beside it as .dot. Returns the picture's path, or
        None (with a warning saying how to install Graphviz) where ``dot`` is
        missing."""
        root, ext = os.path.splitext(path)
        with open(root + ".dot", "w") as f:
            f.write(self)
        if shutil.which("dot") is None:
            warnings.warn(f"draw_graph: {INSTALL_HINT} Wrote {root}.dot instead.", RuntimeWarning,
                          stacklevel=2)
            return None
        subprocess.run(["dot", f"-T{ext.lstrip('.') or 'png'}", "-o", path], input=self.encode(),
                       check=True)
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        if shutil.which("dot") is None:
            return {"text/plain": f"{INSTALL_HINT}\n\n{self}"}
        svg = subprocess.run(["dot", "-Tsvg"], input=self.encode(), capture_output=True, check=True)
        return {"image/svg+xml": svg.stdout.decode()}


def _label(t, names, grad=None):
    """A tensor's box: its name, shape and dtype, and its gradient where known
    (the values when there are at most 6 of them, else the norm)."""
    name = names.get(id(t)) or t.name
    rows = ([name] if name else []) + [f"{tuple(t.shape)} {t.dtype}"]
    g = t.grad if grad is None else grad
    if g is not None:
        g = backend.as_numpy(g).astype(np.float64)
        rows.append(f"grad {np.array2string(g.ravel(), precision=3, separator=' ')}" if g.size <= 6
                    else f"‖grad‖ = {float(np.sqrt((g ** 2).sum())):.4g}")
    return "\\n".join(rows)


def draw_graph(y, path=None, names=None, rankdir="LR", step=None):
    """The graph below tensor ``y`` as DOT source (a :class:`Graph`); rendered to
    ``path`` too when given. Tensors are labelled with their ``name`` or by
    ``names``, e.g. ``dict(model.named_parameters(), x=x)``. ``rankdir`` "TB"
    draws it top to bottom (narrow enough for a page).
    ``step``, one step of ``md.backward_steps(y)``, is marked: its op filled,
    its output labelled with the upstream gradient and its inputs with the
    gradients it sends them."""
    if not hasattr(y, "creator"):
        raise TypeError(f"draw_graph: expected the Tensor whose graph to draw, got {type(y).__name__}")
    names = {id(t): n for n, t in (names or {}).items()}
    at_step = {}
    if step is not None:
        at_step[id(step.output)] = step.grad_output
        at_step.update({id(x): g for x, g in zip(step.inputs, step.grad_inputs) if g is not None})
    nodes, edges, seen = [], [], set()
    stack = [y]
    while stack:                      # iterative, like backward(): deep graphs are fine
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        leaf_style = "filled" if t.creator is None and t.requires_grad else "solid"
        color = "#fde2c0" if id(t) in at_step else "#dbe9f6"
        nodes.append(f'  t{id(t)} [shape=box, style="{"filled" if id(t) in at_step else leaf_style}", '
                     f'fillcolor="{color}", label="{_label(t, names, at_step.get(id(t)))}"];')
        f = t.creator
        if f is None:
            continue
        marked = step is not None and f is step.function
        nodes.append(f'  f{id(f)} [shape=ellipse, label="{type(f).__name__}"'
                     + (', style="filled", fillcolor="#f4a259"' if marked else "") + "];")
        edges.append(f"  f{id(f)} -> t{id(t)};")
        for x in f.inputs:
            edges.append(f"  t{id(x)} -> f{id(f)};")
            stack.append(x)
    graph = Graph("digraph minidl {\n"
                  f'  rankdir={rankdir}; node [fontname="Helvetica", fontsize=10];\n'
                  + "\n".join(nodes[::-1] + edges[::-1]) + "\n}\n")
    if path is not None:
        graph.render(path)
    return graph
