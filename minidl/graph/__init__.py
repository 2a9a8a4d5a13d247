"""Showing a graph and its backward pass: ``md.draw_graph(y)``,
``md.step_through(y)``, ``md.steps_table(steps)``; ``label(t)``, the one label
of a tensor wherever it is shown.

The graph is walked exactly as ``backward()`` walks it (each tensor's ``creator``
and that op's inputs), and drawn one box per tensor, left to right. Only what
autograd records is drawn: ops whose inputs require a gradient (a computation
under ``no_grad()``, or on constants alone, leaves no graph). One concern per
module:

- ``labels``: a tensor's label ("x − μ", "Σ (x − μ)²", "γ reshaped"; constants
  folded into their op: "+ ε", "× 1/4"), the boxes of a graph, the words for
  an op's local derivative, ``steps_table``.
- ``layout``: where the boxes go, left to right.
- ``render``: the boxes as SVG, as Graphviz's DOT (``draw_graph``; Graphviz
  renders it where installed), and through matplotlib where it is not.
- ``stepper``: ``step_through``, the interactive page; its style, script and
  markup are the files ``stepper.css``, ``stepper.js`` and ``stepper.html``.
"""
from .labels import label, local_derivative, steps_table
from .render import Graph, draw_graph
from .stepper import StepThrough, step_through

__all__ = ["Graph", "StepThrough", "draw_graph", "label", "local_derivative", "step_through", "steps_table"]
