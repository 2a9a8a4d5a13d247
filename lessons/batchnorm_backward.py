# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: -jupytext.text_representation.format_version,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The BatchNorm backward, derived and proven
#
# The course's BN slides (deck 003, "Backprop Beyond the BatchNorm Layer")
# derive the gradients of BatchNorm by the chain rule and leave the last terms
# "as an ungraded HW exercise". This chapter does the whole derivation on a small
# batch, one term per cell, and proves it three ways: against the compact closed
# form, against the engine's autograd of the same forward, and against finite
# differences.
#
# For one feature over a batch of $m$ values $x_1 \dots x_m$, the forward is
#
# $$\mu = \frac{1}{m}\sum_i x_i, \qquad
#   \sigma^2 = \frac{1}{m}\sum_i (x_i - \mu)^2, \qquad
#   \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad
#   y_i = \gamma\,\hat x_i + \beta .$$
#
# $\mu$ and $\sigma^2$ depend on every $x_i$, so the gradient reaching $x_i$ has
# three paths: directly through $\hat x_i$, through $\mu$ and through $\sigma^2$.

# %%
"""The BatchNorm backward derived term by term and proven three ways (the course's slides, deck 003).

    python -m lessons.batchnorm_backward                  # seconds; graphs, plots and step-through pages in runs/
    python -m lessons.batchnorm_backward --check my_bn.py:BatchNorm2d
    python -m lessons.batchnorm_backward --check my_bn.py:batchnorm_backward

--check grades your homework: a module class with the skeleton's constructor
``BatchNorm2d(num_features, num_dims, momentum=0.9, eps=1e-5)`` (minidl, or
PyTorch where installed), line by line; or a NumPy backward function
``batchnorm_backward(dy, x, gamma, beta, eps) -> (dx, dgamma, dbeta)``. It prints
the grading only (--lesson: the lesson too), ends with PASS or FAIL naming what
is wrong, and exits 1 on FAIL.
"""
import os

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from minidl.ops import norm
from lessons import homework as grader
from lessons.chapter import say, show_figure, show_table, table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header

EPS, SEED = 1e-5, 7
np.set_printoptions(precision=4, suppress=True, linewidth=100)

s = settings("batchnorm_backward", dict(batch=4, features=3, check=None, lesson=False), doc=__doc__,
             banner=None, help=dict(check="grade your homework: FILE.py:CLASS (a BatchNorm module) or FILE.py:FUNCTION (a backward)",
                                    lesson="with --check: run the lesson too"), types=dict(check=str))
if s.check:
    report = grader.grade(grader.load_target(s.check))    # = python -m lessons.homework check
    passed, verdict = report.passed, report.verdict
    if not s.lesson:
        raise SystemExit(0 if passed else 1)

# %% [markdown]
# ## 1. The forward, one intermediate per line
#
# Built from the engine's basic ops, each intermediate named as the course names
# it. Autograd will derive the backward of this graph by itself; we derive it by
# hand below and compare.
#
# The slides write the same quantities with other letters. The lesson's names
# are the ones on the graphs and in the code:
#
# | ours | deck 003 | deck 002 | meaning |
# |---|---|---|---|
# | $x_i$ | $z_j^{[i]}$ | $z_i^{l+1}$ | the layer's input (a pre-activation) |
# | $m$ | $n$ | $B$ | values per feature in the batch |
# | $\mu$, $\sigma^2$ | $\mu_j$, $\sigma_j^2$ | $\mu_i$, $\sigma_i^2$ | the batch mean and (biased) variance |
# | $\sigma = \sqrt{\sigma^2+\epsilon}$ | $\sqrt{\sigma_j^2+\epsilon}$ (first slides: $\sigma_j$) | $\sqrt{\sigma_i^2+\epsilon}$ | the standard deviation it divides by |
# | $\hat x_i$ | $z'^{[i]}_j$ | $\hat z_i^{l+1}$ | the normalized value |
# | $y_i = \gamma\hat x_i + \beta$ | $a'^{[i]}_j$ | $\tilde z_i^{l+1}$ | the scaled and shifted output |
#
# (Deck 002 also writes $\hat x := x - \mu$ and $\tilde x := \hat x/\sigma$ on its
# picture of centring and scaling: there $\hat x$ is only centred. Here $\hat x$ is
# always the normalized value, as deck 002's $\hat z$.)

# %%
rng = np.random.default_rng(SEED)
m = s.batch                                      # values per feature
x_np = rng.standard_normal((m, s.features)) * 2 + 1
gamma_np = 1 + 0.5 * rng.standard_normal((1, s.features))
beta_np = rng.standard_normal((1, s.features))
dy = rng.standard_normal(x_np.shape)             # a random upstream gradient dl/dy


def named(t, name):
    t.name = name
    return t


x = named(md.Tensor(x_np, requires_grad=True), "x")
gamma = named(md.Tensor(gamma_np, requires_grad=True), "γ")
beta = named(md.Tensor(beta_np, requires_grad=True), "β")
eps = named(md.Tensor(np.array(EPS)), "ε")       # a constant: the graphs fold it into "+ ε"
mu = named(x.mean(axis=0, keepdims=True), "μ")                       # (1, D)
x_mu = named(x - mu, "x − μ")                                        # (m, D)
var = named((x_mu * x_mu).mean(axis=0, keepdims=True), "σ²")         # (1, D)
sigma = named((var + eps) ** 0.5, "σ")                               # σ = √(σ² + ε), (1, D)
x_hat = named(x_mu / sigma, "x̂")                                     # (m, D)
y = named(x_hat * gamma + beta, "y")                                 # (m, D)
for t in (mu, x_mu, var, sigma, x_hat):
    t.retain_grad()          # keep their gradients too, not only the leaves' (PyTorch's retain_grad)
for t in (x, mu, var, x_hat, y):
    print(f"{t.name} =\n{t.numpy()}\n")

# %% [markdown]
# ## 2. The backward, term by term
#
# Read the forward from the bottom up. $y = \gamma\hat x + \beta$ gives the
# parameters' gradients and the gradient at $\hat x$:
#
# $$\frac{\partial l}{\partial \beta} = \sum_i \frac{\partial l}{\partial y_i}, \qquad
#   \frac{\partial l}{\partial \gamma} = \sum_i \frac{\partial l}{\partial y_i}\,\hat x_i, \qquad
#   \frac{\partial l}{\partial \hat x_i} = \frac{\partial l}{\partial y_i}\,\gamma .$$

# %%
g_y = dy                                                   # dl/dy, (m, D)
g_beta = g_y.sum(axis=0, keepdims=True)                    # dl/dβ, (1, D)
g_gamma = (g_y * x_hat.numpy()).sum(axis=0, keepdims=True) # dl/dγ, (1, D)
g_xhat = g_y * gamma_np                                    # dl/dx̂, (m, D)
print(f"dl/dβ = {g_beta}\ndl/dγ = {g_gamma}\ndl/dx̂ =\n{g_xhat}")

# %% [markdown]
# $\hat x_i = (x_i - \mu)(\sigma^2 + \epsilon)^{-1/2}$ reaches $\sigma^2$ through
# every $i$:
#
# $$\frac{\partial l}{\partial \sigma^2} = \sum_i \frac{\partial l}{\partial \hat x_i}\,(x_i - \mu)\cdot\left(-\tfrac{1}{2}\right)(\sigma^2 + \epsilon)^{-3/2} .$$

# %%
xmu, sig = x_mu.numpy(), sigma.numpy()
g_var = (g_xhat * xmu).sum(axis=0, keepdims=True) * -0.5 * sig ** -3        # dl/dσ², (1, D)
print(f"dl/dσ² = {g_var}")

# %% [markdown]
# $\mu$ reaches $l$ directly through each $\hat x_i$ and through $\sigma^2$
# (whose derivative in $\mu$ is $-\frac{2}{m}\sum_i (x_i - \mu)$, zero here but
# part of the derivation):
#
# $$\frac{\partial l}{\partial \mu} = \sum_i \frac{\partial l}{\partial \hat x_i}\cdot\frac{-1}{\sqrt{\sigma^2+\epsilon}}
#   + \frac{\partial l}{\partial \sigma^2}\cdot\frac{1}{m}\sum_i -2(x_i - \mu) .$$

# %%
g_mu = (-g_xhat / sig).sum(axis=0, keepdims=True) + g_var * (-2 * xmu).sum(axis=0, keepdims=True) / m  # dl/dμ
print(f"dl/dμ = {g_mu}")

# %% [markdown]
# And the three paths into $x_i$, the slide's last line, its terms in the slide's order:
#
# $$\frac{\partial l}{\partial x_i} = \frac{\partial l}{\partial \hat x_i}\cdot\frac{1}{\sqrt{\sigma^2+\epsilon}}
#   + \frac{\partial l}{\partial \mu}\cdot\frac{1}{m}
#   + \frac{\partial l}{\partial \sigma^2}\cdot\frac{2(x_i - \mu)}{m} .$$
#
# (Deck 003's text, as we have it, shows the third term's factor as
# $\frac{1(z_j - \mu_j)}{n}$, where the derivation gives a 2: the derivative of
# $\frac{1}{m}\sum_i (x_i-\mu)^2$ in $x_i$ is $\frac{2(x_i-\mu)}{m}$, and that
# is the factor the checks below confirm.)

# %%
g_x = g_xhat / sig + g_mu / m + g_var * 2 * xmu / m                          # dl/dx, (m, D)
print(f"dl/dx =\n{g_x}")

# %% [markdown]
# The library's `minidl.ops.norm.backward_staged` is the same derivation,
# written once for every normalizer's axes. It must agree with the cells above
# term by term:

# %%
lib = norm.backward_staged(dy, x_np, gamma_np, EPS, (0,))
ours = {"μ": mu.numpy(), "σ²": var.numpy(), "x̂": x_hat.numpy(), "dl/dβ": g_beta, "dl/dγ": g_gamma,
        "dl/dx̂": g_xhat, "dl/dσ²": g_var, "dl/dμ": g_mu, "dl/dx": g_x}
library = dict(zip(ours, (lib.mu, lib.var, lib.x_hat, lib.g_beta, lib.g_gamma, lib.g_xhat, lib.g_var,
                          lib.g_mu, lib.g_x)))
differences = {k: float(np.abs(ours[k] - md.backend.as_numpy(library[k])).max()) for k in ours}
show_table(["term", "max |this chapter − backward_staged|"], [[k, f"{d:.1e}"] for k, d in differences.items()])
assert max(differences.values()) < 1e-12

# %% [markdown]
# ## 3. The compact form, and autograd
#
# Substituting $\partial l/\partial\mu$ and $\partial l/\partial\sigma^2$ into the
# last line and dividing through by $m$ gives one line:
#
# $$\frac{\partial l}{\partial x_i} = \frac{1}{\sqrt{\sigma^2+\epsilon}}\left(
#   \frac{\partial l}{\partial \hat x_i}
#   - \frac{1}{m}\sum_j \frac{\partial l}{\partial \hat x_j}
#   - \hat x_i\,\frac{1}{m}\sum_j \frac{\partial l}{\partial \hat x_j}\,\hat x_j\right).$$
#
# The upstream gradient loses its mean and its component along $\hat x$, then is
# divided by $\sigma$. In code it is as short:

# %%
xh = x_hat.numpy()
compact = (g_xhat - g_xhat.mean(axis=0, keepdims=True)
           - xh * (g_xhat * xh).mean(axis=0, keepdims=True)) / sig             # dl/dx, (m, D)
y.backward(dy)                    # autograd walks the graph of section 1 back from dl/dy
results = {"dl/dx": {"staged vs compact": float(np.abs(g_x - compact).max()),
                     "staged vs autograd": float(np.abs(g_x - md.backend.as_numpy(x.grad)).max())},
           "dl/dγ": {"staged vs autograd": float(np.abs(g_gamma - md.backend.as_numpy(gamma.grad)).max())},
           "dl/dβ": {"staged vs autograd": float(np.abs(g_beta - md.backend.as_numpy(beta.grad)).max())}}
show_table(["gradient", "comparison", "max |difference|"],
           [[g, k, f"{v:.1e}"] for g, d in results.items() for k, v in d.items()])
assert max(v for d in results.values() for v in d.values()) < 1e-10

# %% [markdown]
# ## 4. The course's terms, read off the autograd graph
#
# Section 1 asked autograd to keep the gradient of every intermediate
# (`retain_grad()`). So the graph itself now holds $\partial l/\partial \hat x$,
# $\partial l/\partial \sigma^2$ and $\partial l/\partial \mu$: the total gradient
# reaching each node, summed over every path, which is exactly what the
# derivation's terms are.

# %%
on_graph = {"dl/dx̂": (x_hat, g_xhat), "dl/dσ²": (var, g_var), "dl/dμ": (mu, g_mu), "dl/dx": (x, g_x)}
read_off = {k: float(np.abs(md.backend.as_numpy(t.grad) - term).max()) for k, (t, term) in on_graph.items()}
show_table(["term", "max |retained gradient on the graph − the hand-derived term|"],
           [[k, f"{d:.1e}"] for k, d in read_off.items()])
assert max(read_off.values()) < 1e-12
results["retained_vs_hand_derived"] = read_off

# %% [markdown]
# ## 5. Stepping through autograd's backward, node by node
#
# `md.step_through(y, dl/dy)` shows the same backward pass one op at a time, on
# the graph, left to right. Each step is an op: the gradient arriving at its
# output, the op's local derivative, and the gradient it sends to each input; every
# op comes after all the ops that use its output. Each box shows the norm of the
# gradient gathered there so far ($\Sigma$) and the part this step sends ($+$).
# When no later step sends to a named tensor, its gradient is complete: the moment
# the course's term exists. Step with the buttons, the slider, or the left and right
# arrow keys (click the stepper first). The page needs no kernel: it works in the
# hand-out too. Steps count from 1 here, in the tables below and in a printed step.
# (`md.backward_steps(y, dy)` is the same pass as a Python generator: `next(steps)`
# walks it one node per cell.)
#
# The course's six terms are named for the stepper, each with its formula from
# section 2: a ring marks their boxes, a list above the panel ticks them off, and
# the step that completes one shows its formula beside its values.

# %%
course_terms = {       # the term: (the tensor whose gradient it is, its formula as section 2 derives it)
    "dl/dβ": (beta, r"\frac{\partial l}{\partial \beta} = \sum_i \frac{\partial l}{\partial y_i}"),
    "dl/dγ": (gamma, r"\frac{\partial l}{\partial \gamma} = \sum_i \frac{\partial l}{\partial y_i}\,\hat x_i"),
    "dl/dx̂": (x_hat, r"\frac{\partial l}{\partial \hat x_i} = \frac{\partial l}{\partial y_i}\,\gamma"),
    "dl/dσ²": (var, r"\frac{\partial l}{\partial \sigma^2} = \sum_i \frac{\partial l}{\partial \hat x_i}\,(x_i - \mu)"
                    r"\cdot\left(-\frac{1}{2}\right)(\sigma^2 + \epsilon)^{-3/2}"),
    "dl/dμ": (mu, r"\frac{\partial l}{\partial \mu} = \sum_i \frac{\partial l}{\partial \hat x_i}\cdot\frac{-1}{\sqrt{\sigma^2+\epsilon}}"
                  r" + \frac{\partial l}{\partial \sigma^2}\cdot\frac{1}{m}\sum_i -2(x_i - \mu)"),
    "dl/dx": (x, r"\frac{\partial l}{\partial x_i} = \frac{\partial l}{\partial \hat x_i}\cdot\frac{1}{\sqrt{\sigma^2+\epsilon}}"
                 r" + \frac{\partial l}{\partial \mu}\cdot\frac{1}{m} + \frac{\partial l}{\partial \sigma^2}\cdot\frac{2(x_i - \mu)}{m}"),
}
steps_page = md.step_through(y, dy, title="BatchNorm from basic ops: the backward pass", terms=course_terms)
steps = steps_page.steps
steps_page.save(f"{s.out}/steps_bn.html")
steps_page

# %% [markdown]
# The steps that complete one of the course's six terms, read from the pass
# itself (a tensor's gradient is complete at the last step that sends to it):

# %%
TERM = {"β": "dl/dβ", "γ": "dl/dγ", "x̂": "dl/dx̂", "σ²": "dl/dσ²", "μ": "dl/dμ", "x": "dl/dx"}


def completed_at(steps):
    """{tensor name: the step after which its gradient is complete}."""
    last = {}
    for st in steps:
        for t, g in zip(st.inputs, st.grad_inputs):
            if g is not None and t.name:
                last[t.name] = st
    return last


completes = completed_at(steps)
show_table(["step", "op", "output", "completes", "the course's term"],
           [[st.number, st.op, md.graph.label(st.output), name, TERM[name]]
            for name, st in sorted(completes.items(), key=lambda item: item[1].index) if name in TERM])
results["term_completed_at_step"] = {TERM[n]: st.number for n, st in completes.items() if n in TERM}


def walk(steps):
    """A backward pass as a table: each step, and the local derivative its op multiplies by."""
    show_table(["step", "op", "output", "sends gradients to", "multiplies the gradient at its output by"],
               [list(st.row()) + [md.graph.local_derivative(st.function)] for st in steps])


walk(steps)

# %% [markdown]
# One step carries the factor 2 of the derivation's last term: $\sigma^2$ averages
# $(x_i - \mu)^2$, which the forward computes as `x_mu * x_mu`, one tensor twice.

# %%
square = next(st for st in steps if st.op == "Mul" and st.inputs[0] is st.inputs[1] is x_mu)
parts = [np.linalg.norm(md.backend.as_numpy(g)) for g in square.grad_inputs]
say(f"Step {square.number} ({md.graph.label(square.output)}): both factors are the same tensor x − μ, so it "
    f"receives both parts, of norm {parts[0]:.4g} and {parts[1]:.4g}, summed: 2(x − μ) times the gradient "
    "arriving there. That is the 2 in ∂σ²/∂xᵢ = 2(xᵢ − μ)/m.")

# %% [markdown]
# The step at $\hat x$: the gradient arriving there is $\partial l/\partial \hat x = \partial l/\partial y\cdot\gamma$,
# and the op that made $\hat x$ (a division: $x - \mu$ times $1/\sigma$) multiplies
# it by its local derivatives: $1/\sigma$ towards $x - \mu$, and $x - \mu$ towards
# $1/\sigma$. A static picture of that step is drawn left to right (`graph_step_xhat.png`).

# %%
at_xhat = next(st for st in steps if st.output is x_hat)
print(at_xhat)
md.draw_graph(y, f"{s.out}/graph_step_xhat.png", step=at_xhat);

# %% [markdown]
# ## 6. One block of a network: convolution, BN, ReLU
#
# The same walk through a conv → BN → ReLU block, the layers' hand-derived ops
# this time: three steps, one per layer. Each multiplies the gradient arriving at
# its output by its op's local derivative; BN's (`Normalize`) is the compact form
# of section 3.

# %%
md.manual_seed(SEED)
conv, bn = md.nn.Conv2d(1, 2, 3).astype("float64"), md.nn.BatchNorm2d(2).astype("float64")
conv.weight.name, conv.bias.name, bn.gamma.name, bn.beta.name = "W", "b", "γ", "β"
image = named(md.Tensor(rng.standard_normal((2, 1, 5, 5)), requires_grad=True), "x")
z = named(conv(image), "z")
z_bn = named(bn(z), "BN(z)")
a = named(md.nn.ReLU()(z_bn), "a")
block_page = md.step_through(a, rng.standard_normal(a.shape), title="conv → BN → ReLU: the backward pass")
block = block_page.steps
block_page.save(f"{s.out}/steps_block.html")
walk(block)
block_page

# %% [markdown]
# The slide's "additional things to consider": $\beta$ "makes the bias units
# redundant". BN subtracts each channel's batch mean, and with it any constant the
# convolution adds, so the loss does not depend on the conv's bias $b$ at all. Its
# gradient, read off step 3 of the pass above:

# %%
at_conv = next(st for st in block if st.op == "Conv2d")
sent = {t.name: md.backend.as_numpy(g) for t, g in zip(at_conv.inputs, at_conv.grad_inputs)}   # x, W, b
g_b, g_W = sent["b"], sent["W"]
results["conv_bias_grad_max_abs"] = float(np.abs(g_b).max())
say(f"Step {at_conv.number} sends the conv's bias b a gradient of at most {results['conv_bias_grad_max_abs']:.1e} "
    f"in size (dl/dW: norm {np.linalg.norm(g_W):.3g}): zero up to rounding. A convolution followed by "
    "BN needs no bias: β does its job.")

# %% [markdown]
# ## 7. What the derivation buys: the graph autograd walks
#
# Autograd needed every intermediate of section 1 as a node, and walks back
# through each. The hand-derived backward is one op (`Normalize`) whose backward
# is the compact form. Boxes are tensors (named as above, or labelled with the op
# that made them); the shaded boxes are the leaves whose gradients we asked for.
# These two are drawn left to right, so a picture is wider than tall; the stepper
# of section 5 is the one to project.

# %%
graph_autograd = md.draw_graph(y)
x_h, gamma_h, beta_h = (named(md.Tensor(a, requires_grad=True), n) for a, n in
                        ((x_np, "x"), (gamma_np, "γ"), (beta_np, "β")))
y_derived = named(norm.normalize(x_h, (0,), gamma_h, beta_h, EPS), "y")
y_derived.backward(dy)
graph_derived = md.draw_graph(y_derived)
ops = lambda out: len(md.step_through(out, dy).steps)      # one step per op
results["ops_in_graph"] = {"autograd": ops(y), "hand_derived": ops(y_derived)}
pictures = {"graph_autograd": graph_autograd, "graph_hand_derived": graph_derived}
for path, graph in pictures.items():
    graph.render(f"{s.out}/{path}.png")          # Graphviz where installed, else minidl's own layout
say(f"Composed from basic ops: **{results['ops_in_graph']['autograd']} ops** for autograd to walk "
    f"back through. Hand-derived: **{results['ops_in_graph']['hand_derived']} op**, one backward.")
graph_autograd

# %%
graph_derived

# %% [markdown]
# ## 8. Every form against finite differences
#
# `md.gradcheck` perturbs each input, measures the change of
# $\sum_i (\partial l/\partial y_i)\,y_i$ for a random $\partial l/\partial y$,
# and compares with the backward. The bands: a correct float64 backward lands
# below $10^{-7}$; above $10^{-2}$ a term is wrong. A layer's check also takes its
# $\gamma$ and $\beta$ along, in float64, and leaves its running statistics alone.

# %%
inputs = lambda: [md.Tensor(a) for a in (x_np, gamma_np, beta_np)]
reports = {
    "hand-derived, staged": md.gradcheck(
        lambda x, g, b: norm.normalize(x, (0,), g, b, EPS, backward="staged"), inputs()),
    "hand-derived, compact": md.gradcheck(
        lambda x, g, b: norm.normalize(x, (0,), g, b, EPS, backward="compact"), inputs()),
    "autograd of the forward": md.gradcheck(
        lambda x, g, b: norm.batch_norm_reference(x, g, b, EPS, (0,)), inputs()),
}
bn = md.nn.BatchNorm1d(s.features)
bn.load_state_dict({**bn.state_dict(), "gamma": gamma_np.ravel(), "beta": beta_np.ravel()})
reports["BatchNorm1d, train mode"] = md.gradcheck(bn, [md.Tensor(x_np)])
bn(md.Tensor(x_np.astype(np.float32)))           # one training step fills the running statistics
bn.eval()
before = bn.running_mean.numpy().copy()
reports["BatchNorm1d, eval mode"] = md.gradcheck(bn, [md.Tensor(x_np)])
assert (bn.running_mean.numpy() == before).all()
show_table(["form", "x", "γ", "β"],
           [[f] + [f"{r.rel_error:.1e}" for r in rep.inputs] for f, rep in reports.items()])
results["gradcheck_worst_relative_error"] = {f: max(r.rel_error for r in rep.inputs) for f, rep in reports.items()}

# %% [markdown]
# The same, as a picture: every bar must stay under the green line.

# %%
fig, ax = plt.subplots(figsize=(10, 4.2))
labels = list(reports)
for k, name in enumerate(("x", "γ", "β")):           # every report lists x, γ, β in this order
    errors = [reports[f].inputs[k].rel_error for f in labels]
    ax.bar(np.arange(len(labels)) + 0.27 * (k - 1), np.maximum(errors, 1e-16), width=0.27, label=name)
ax.set_yscale("log")
ax.axhline(1e-7, color="g", ls="--", lw=0.8, label="fine below")
ax.axhline(1e-2, color="r", ls="--", lw=0.8, label="wrong above")
ax.set_xticks(range(len(labels)), [f.replace(", ", "\n").replace("autograd of", "autograd\nof") for f in labels])
ax.set(ylabel="worst relative error", title="Gradcheck of every form (float64)", ylim=(1e-16, 1))
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))      # beside the bars: the lines run across the axes
show_figure(fig, f"{s.out}/gradcheck_errors.png")

# %% [markdown]
# ## 9. Why an upstream gradient of ones proves nothing
#
# Checking $\partial(\sum_i y_i)/\partial x$ is tempting. But
# $\sum_i \hat x_i = 0$ for every $x$, so without $\gamma$ that gradient is exactly
# zero: a backward that returns zeros, or any multiple of the right answer,
# passes such a check. Hence the random $\partial l/\partial y$ everywhere above.

# %%
ones_dx = norm.backward_compact(np.ones_like(x_np), xh, sig, np.ones_like(gamma_np), (0,))[0]
results["ones_upstream_max_abs_dx"] = float(np.abs(ones_dx).max())
print(f"upstream ones, γ = 1: max |dl/dx| = {results['ones_upstream_max_abs_dx']:.1e}")

# %% [markdown]
# ## 10. Why a one-sample batch is an error
#
# With $m = 1$, $x - \mu = 0$ and every output is $\beta$, whatever the input: the
# layer would train on nothing. minidl refuses it rather than return a result.

# %%
try:
    md.nn.BatchNorm1d(s.features)(md.Tensor(x_np[:1].astype(np.float32)))
except ValueError as e:
    results["single_sample_error"] = str(e)
    print(f"ValueError: {e}")

# %% [markdown]
# ## Conclusion
#
# Six terms, each one line, each the forward read backwards; the compact form is
# their sum simplified; autograd of the forward finds the same numbers through a
# graph many times larger; finite differences confirm all of them.

# %%
write_json(f"{s.out}/results.json", results)
figures = {"gradcheck": "gradcheck_errors.png", "autograd graph": "graph_autograd.png",
           "hand-derived": "graph_hand_derived.png", "the step at x̂": "graph_step_xhat.png"}
agreement = [(f"{grad}, {pair}", f"{d:.1e}") for grad in ("dl/dx", "dl/dγ", "dl/dβ")
             for pair, d in results[grad].items()]
agreement += [(f"{term}, the stepper's retained gradient vs hand-derived", f"{d:.1e}")
              for term, d in results["retained_vs_hand_derived"].items()]
write_text(f"{s.out}/summary.md", summary_header(s, "BatchNorm backward") + "\n\n".join([
    "All in float64, with a random upstream gradient dl/dy.",
    table(["gradient, compared", "max |difference|"], agreement),
    table(["form", "gradcheck: worst relative error"],
          [(f, f"{e:.1e}") for f, e in results["gradcheck_worst_relative_error"].items()]),
    "The step of the backward pass that completes each term: " + ", ".join(
        f"{t} at step {n}" for t, n in sorted(results["term_completed_at_step"].items(), key=lambda item: item[1])) + ".",
    f"Ops in the graph: {results['ops_in_graph']['autograd']} for autograd of the forward, "
    f"{results['ops_in_graph']['hand_derived']} hand-derived. The conv's bias before BN gets a gradient of at most "
    f"{results['conv_bias_grad_max_abs']:.1e}; an upstream gradient of ones gives max |dl/dx| = "
    f"{results['ones_upstream_max_abs_dx']:.1e}. A one-sample batch in train mode: "
    f"`{results.get('single_sample_error', 'no error: a defect')}`",
    "Step through the passes: [BN](steps_bn.html), [conv → BN → ReLU](steps_block.html)",
    " ".join(f"![{k}]({f})" for k, f in figures.items() if os.path.exists(f"{s.out}/{f}"))]) + "\n")   # drawn only
print(f"plots, graphs, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/batchnorm_backward.md, which the README quotes
if s.check:
    print(verdict)
    raise SystemExit(0 if passed else 1)
