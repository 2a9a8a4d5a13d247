"""The BatchNorm backward, derived step by step and proven three ways.

For a small batch this prints the forward (μ, σ², x̂), every term of the
course's chain rule (seed 003: dl/dβ, dl/dγ, dl/dx̂, dl/dσ², dl/dμ, dl/dx),
then shows that the compact closed form and the engine's autograd give the
same dl/dx, draws both computational graphs, and gradchecks each form in train
and eval mode. It also shows why an upstream gradient of ones proves nothing
and why a one-sample batch is an error.

    python -m lessons.batchnorm_backward              # about 2 s on a 2-core CPU

Grade your own homework derivation: write a NumPy function

    def batchnorm_backward(dy, x, gamma, beta, eps):   # x, dy: (N, D) or (N, C, H, W)
        return dx, dgamma, dbeta                        # gamma, beta: (D,) or (C,)

and run

    python -m lessons.batchnorm_backward --check my_bn.py:batchnorm_backward

It prints the grading only (add --lesson for the lesson too), ends with PASS or
FAIL naming the gradient, and exits 1 on FAIL.
"""
# %% Settings (flags override them)

import numpy as np

import minidl as md
from minidl.ops import norm as N
from lessons import grader
from lessons.common import lesson_args, lesson_parser, show_figure, write_json, write_text

BATCH, FEATURES, EPS, SEED = 4, 3, 1e-5, 7
np.set_printoptions(precision=4, suppress=True, linewidth=100)

parser = lesson_parser("batchnorm_backward", __doc__, "the same lesson (it takes seconds anyway)", fresh_help=None)
parser.add_argument("--check", metavar="FILE.py:FUNCTION",
                    help="grade your own backward (a file path or a module, then :function)")
parser.add_argument("--lesson", action="store_true", help="with --check: run the lesson too")
parser.add_argument("--batch", type=int, default=BATCH)
parser.add_argument("--features", type=int, default=FEATURES)
args = lesson_args(parser)
out = args.out

if args.check:
    passed, verdict = grader.grade(grader.load_function(args.check))
    if not args.lesson:
        raise SystemExit(0 if passed else 1)

rng = np.random.default_rng(SEED)
x = rng.standard_normal((args.batch, args.features)) * 2 + 1
gamma = 1 + 0.5 * rng.standard_normal(args.features)
beta = rng.standard_normal(args.features)
dy = rng.standard_normal(x.shape)          # a random upstream gradient dl/dy
axes, m = (0,), args.batch
results = {}


def show(name, value):
    print(f"{name} =\n{md.backend.as_numpy(value)}\n")


def max_diff(a, b):
    return float(np.abs(md.backend.as_numpy(a) - md.backend.as_numpy(b)).max())


# %% 1. The forward, one intermediate per line
t = N.backward_staged(dy, x, gamma, EPS, axes)     # the forward's intermediates and every term
print("== 1. forward: y = γ·x̂ + β with x̂ = (x − μ)/σ, σ = √(σ² + ε)")
show("x", x)
show("μ (batch mean per feature)", t.mu)
show("σ² (biased batch variance)", t.var)
show("x̂", t.x_hat)

# %% 2. The backward, term by term, as the course derives it
print("== 2. backward, staged: the chain rule one term at a time (minidl.ops.norm.backward_staged)")
show("dl/dy (random upstream)", dy)
show("dl/dβ = Σ dl/dy", t.g_beta)
show("dl/dγ = Σ dl/dy·x̂", t.g_gamma)
show("dl/dx̂ = dl/dy·γ", t.g_xhat)
show("dl/dσ² = Σ dl/dx̂·(x − μ)·(−½)(σ² + ε)^(−3/2)", t.g_var)
show("dl/dμ = Σ dl/dx̂·(−1/σ) + dl/dσ²·Σ −2(x − μ)/m", t.g_mu)
show("dl/dx = dl/dx̂/σ + dl/dσ²·2(x − μ)/m + dl/dμ/m", t.g_x)
staged = (t.g_x, t.g_gamma, t.g_beta)

# %% 3. Three ways to the same gradients: staged, compact, autograd of the forward
print("== 3. the compact closed form and autograd agree")
compact = N.backward_compact(dy, t.x_hat, t.sigma, gamma, axes)
x_t, gamma_t, beta_t = (md.Tensor(a, requires_grad=True) for a in (x, gamma, beta))
y_reference = N.batch_norm_reference(x_t, gamma_t, beta_t, eps=EPS, axes=axes)
y_reference.backward(dy)
auto = (x_t.grad, gamma_t.grad, beta_t.grad)
for name, k in (("dl/dx", 0), ("dl/dγ", 1), ("dl/dβ", 2)):
    d1, d2 = max_diff(staged[k], compact[k]), max_diff(staged[k], auto[k])
    print(f"  {name}: staged vs compact {d1:.1e}, staged vs autograd {d2:.1e}")
    results[f"{name} max difference"] = {"staged_vs_compact": d1, "staged_vs_autograd": d2}
    assert d1 < 1e-10 and d2 < 1e-10

# %% 4. What the derivation buys: the graph autograd walks, and the one hand-derived op
x_h, gamma_h, beta_h = (md.Tensor(a, requires_grad=True) for a in (x, gamma, beta))
y_derived = N.normalize(x_h, axes, gamma_h, beta_h, EPS)
y_derived.backward(dy)
names = {"x": x_t, "γ": gamma_t, "β": beta_t}
graph_reference = md.draw_graph(y_reference, f"{out}/graph_autograd.png", names=names)
graph_derived = md.draw_graph(y_derived, f"{out}/graph_hand_derived.png",
                              names={"x": x_h, "γ": gamma_h, "β": beta_h})
ops = lambda g: g.count("shape=ellipse")
print(f"composed from basic ops: {ops(graph_reference)} ops for autograd to walk back through; "
      f"hand-derived: {ops(graph_derived)} op, one backward")
results["ops_in_graph"] = {"autograd": ops(graph_reference), "hand_derived": ops(graph_derived)}
graph_reference           # a notebook draws it here (Graphviz's dot installed)

# %%
graph_derived

# %% 5. Gradcheck: each form against finite differences, train and eval mode
print("== 5. gradcheck with a random upstream gradient")
inputs = lambda: [md.Tensor(a) for a in (x, gamma, beta)]
reports = {}
for form in ("staged", "compact"):
    reports[f"hand-derived, {form}"] = md.gradcheck(
        lambda x, g, b: N.normalize(x, axes, g, b, EPS, backward=form), inputs())
reports["autograd of the forward"] = md.gradcheck(
    lambda x, g, b: N.batch_norm_reference(x, g, b, EPS, axes), inputs())
# a layer is checked the obvious way: its parameters come along, in float64,
# and its running statistics stay untouched
bn = md.nn.BatchNorm1d(args.features)
bn.load_state_dict({**bn.state_dict(), "gamma": gamma, "beta": beta})   # the same γ, β as above
reports["BatchNorm1d layer, train mode"] = md.gradcheck(bn, [md.Tensor(x)])
bn(md.Tensor(x.astype(np.float32)))           # one training step fills the running statistics
bn.eval()
before = bn.running_mean.numpy().copy()
reports["BatchNorm1d layer, eval mode (an affine map)"] = md.gradcheck(bn, [md.Tensor(x)])
assert (bn.running_mean.numpy() == before).all()
for name, report in reports.items():
    print(f"-- {name}\n{report}")
print("   running statistics unchanged by the checks\n")

# %% 6. The gradcheck errors per form, as a picture
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(7, 3.5))
labels = list(reports)
for k in range(3):                                  # every report lists x, γ, β in this order
    errs = [reports[f].inputs[k].rel_error for f in labels]
    ax.bar(np.arange(len(labels)) + 0.27 * (k - 1), np.maximum(errs, 1e-16), width=0.27,
           label=("x", "γ", "β")[k])
ax.set_yscale("log")
ax.axhline(1e-7, color="g", ls="--", lw=0.8)
ax.axhline(1e-2, color="r", ls="--", lw=0.8)
ax.set_xticks(range(len(labels)), [f.replace(", ", ",\n") for f in labels], fontsize=7)
ax.set(ylabel="worst relative error vs finite differences",
       title="Every form agrees with finite differences (fine < 1e-7 < check < 1e-2 < wrong)")
ax.legend(fontsize=7)
show_figure(fig, f"{out}/gradcheck_errors.png")
results["gradcheck_worst_relative_error"] = {f: max(r.rel_error for r in rep.inputs)
                                             for f, rep in reports.items()}

# %% 7. Why an upstream gradient of ones proves nothing
print("== 7. backpropagating sum(y) (upstream = ones) tells you nothing")
ones_dx = N.backward_compact(np.ones_like(x), t.x_hat, t.sigma, np.ones_like(gamma), axes)[0]
print(f"  without γ, dl/dx for upstream ones: max |dl/dx| = {np.abs(ones_dx).max():.1e}")
print("  Σ x̂ = 0 over the batch whatever x is, so d(Σ x̂)/dx = 0 exactly: a wrong backward that")
print("  returns zeros, or any multiple of a correct one, passes such a check.\n")
results["ones_upstream_max_abs_dx"] = float(np.abs(ones_dx).max())

# %% 8. Why a one-sample batch is an error
print("== 8. a batch of one sample")
try:
    md.nn.BatchNorm1d(args.features)(md.Tensor(x[:1].astype(np.float32)))
except ValueError as e:
    print(f"  ValueError: {e}\n")
    results["single_sample_error"] = str(e)

# %% 9. The numbers, written down
write_json(f"{out}/results.json", results)
write_text(f"{out}/summary.md", "# BatchNorm backward\n\n" + "\n".join(
    f"- {k}: {v}" for k, v in results.items()) +
    "\n\n![gradcheck](gradcheck_errors.png)\n\n![autograd graph](graph_autograd.png) "
    "![hand-derived](graph_hand_derived.png)\n")
print(f"plots, graphs, results.json and summary.md in {out}/")
if args.check:
    print(verdict)
    raise SystemExit(0 if passed else 1)
