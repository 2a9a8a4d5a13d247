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
# # Why normalize? Gradient descent on house prices
#
# The course opens its normalization slides (deck 000, "Why BN?") with a linear
# regression: predict a house's price from its living area. With the data
# rescaled as *area × 0.01, price × 0.1*, 1000 steps of gradient descent from
# $w = (10, 50)$ end far from the optimum; rescaled as *area × 0.0001*, they
# converge. The slide's diagnosis: the Hessian is **ill-conditioned**.
#
# The model is $p = w_0 \cdot \text{area} + w_1$. Stack the areas and a row of
# ones into $X \in \mathbb{R}^{2 \times n}$ and minimize
#
# $$L(w) = \tfrac{1}{2}\,\lVert X^\top w - y \rVert^2, \qquad
#   \nabla L(w) = X X^\top w - X y, \qquad \nabla^2 L = X X^\top .$$
#
# Along the eigenvector of $XX^\top$ with eigenvalue $\lambda$, one step of size
# $\eta$ multiplies the distance to the optimum by $(1 - \eta\lambda)$. Every
# direction converges only if $\eta < 2/\lambda_{\max}$, and then the flattest
# direction shrinks by $1 - \eta\lambda_{\min}$ per step: $1 - 2/\kappa$ at the
# edge of stability, $1 - 1/\kappa$ at the step $\eta = 1/\lambda_{\max}$ used
# below, where
#
# $$\kappa = \frac{\lambda_{\max}}{\lambda_{\min}}$$
#
# is the **condition number**. Rescaling the inputs changes $\kappa$, and with it
# how fast gradient descent can go. BatchNorm does the same for every layer's
# input.

# %%
"""Gradient descent on house prices, badly vs well scaled (the course's slides, deck 000).

    python -m lessons.conditioning                       # seconds; plots in runs/conditioning/
    python -m lessons.conditioning --csv my_houses.csv   # your own data: columns area,price
"""
import csv

import matplotlib.pyplot as plt
import numpy as np

import minidl as md
from lessons.chapter import integer_ticks, legend_beside, say, show_figure, show_table, write_json, write_text
from lessons.record import record_run
from lessons.settings import settings, summary_header

AREA = [5719, 3241, 1139, 1572, 1101, 2576]      # feet², the six rows the slide shows
PRICE = [567, 345, 141, 167, 287, 227]           # $1000
W0 = (10.0, 50.0)                                # the slide's starting point
SLIDE_EIGENVALUES = {"area*0.01, price*0.1": (0.004, 1.856), "area*0.0001, price*0.1": (0.4, 18.45)}
SLIDE_ROWS = 17                                  # the houses the slide's eigenvalues sum over

s = settings("conditioning", dict(iters=1000, csv=None), doc=__doc__, banner=None,
             help=dict(iters="gradient-descent steps", csv="a CSV file with columns area,price"),
             types=dict(csv=str))

# %% [markdown]
# ## 1. The data and the three scalings
#
# The slide's table has 17 houses but shows only the first six; we use those six
# (or your own CSV). Besides the slide's two rescalings we add full
# standardization: zero mean and unit variance, as BatchNorm would make them.

# %%
def load_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"area", "price"} <= set(rows[0]):
        raise SystemExit(f"{path}: expected a header with columns area,price")
    return [float(r["area"]) for r in rows], [float(r["price"]) for r in rows]


def design(a):
    return np.stack([a, np.ones_like(a)])          # X: 2×n, the area row and a row of ones


area, price = load_csv(s.csv) if s.csv else (AREA, PRICE)
a, p = np.asarray(area, float), np.asarray(price, float)
cases = {
    "area*0.01, price*0.1": (a * 0.01, p * 0.1),
    "area*0.0001, price*0.1": (a * 0.0001, p * 0.1),
    "standardized": ((a - a.mean()) / a.std(), (p - p.mean()) / p.std()),
}
print(f"{len(area)} houses" + (f" from {s.csv}" if s.csv else " (the six rows the slide shows)"))

# %% [markdown]
# ## 2. The Hessian $XX^\top$ and what its eigenvalues allow
#
# Every case below uses the step $\eta = 1/\lambda_{\max}$: half the stability
# limit, the same rule for each, so no direction oscillates and the comparison is
# about $\kappa$ alone.

# %%
results = {}
for name, (x_area, y) in cases.items():
    X = design(x_area)
    H = X @ X.T
    lam = np.linalg.eigvalsh(H)                        # ascending
    w_star = np.linalg.solve(H, X @ y)                 # the least-squares optimum
    results[name] = {"eigenvalues": lam.tolist(), "condition_number": lam[-1] / lam[0],
                     "max_stable_step": 2 / lam[-1], "step": 1.0 / lam[-1], "w_star": w_star.tolist(),
                     "optimal_loss": 0.5 * np.sum((X.T @ w_star - y) ** 2),
                     "flat_shrink": (1 - lam[0] / lam[-1]) ** s.iters}


def slide_row(name, r):
    """Our eigenvalues and κ beside the slide's: XXᵀ sums over the rows, so per row
    (XXᵀ/n, over our n rows and the slide's 17) they compare; κ needs no scaling."""
    pair = lambda lam: f"{lam[0]:.2g}, {lam[1]:.4g}"
    ours = [pair(r["eigenvalues"]), pair(np.divide(r["eigenvalues"], len(area))), f"{r['condition_number']:.3g}"]
    if name not in SLIDE_EIGENVALUES or s.csv:
        return ours[:2] + ["", ""] + ours[2:] + [""]
    lam = SLIDE_EIGENVALUES[name]
    return ours[:2] + [pair(lam), pair(np.divide(lam, SLIDE_ROWS))] + ours[2:] + [f"{lam[1] / lam[0]:.3g}"]


eigen_table = show_table(
    ["scaling", f"λ of XXᵀ, ours ({len(area)} rows)", "per row (XXᵀ/n), ours", f"λ, slide ({SLIDE_ROWS} rows)",
     "per row, slide", "κ = λmax/λmin, ours", "κ, slide"], [[k, *slide_row(k, r)] for k, r in results.items()])
step_table = show_table(["scaling", "largest stable step 2/λmax", f"flat direction after {s.iters} steps"],
                        [[k, f"{r['max_stable_step']:.4g}", f"× {r['flat_shrink']:.3g}"] for k, r in results.items()])

# %% [markdown]
# Our eigenvalues can differ from the slide's because
# $XX^\top = \begin{pmatrix}\sum a^2 & \sum a\\ \sum a & n\end{pmatrix}$ sums over
# the rows, and the slide's 17 rows are not all shown: the per-row columns divide
# by the rows summed over ($XX^\top/n$), which makes the two comparable. (For
# *area × 0.01* the slide's $\lambda_{\max} = 1.856$ is smaller than $\sum a^2$
# of its own first rows, so the slide must have scaled $XX^\top$ or the data
# differently.) The ratio that decides convergence needs no scaling: the slide's
# $\kappa$, from its eigenvalues, is in the table beside ours.

# %%
say(f"We use {len(area)} rows" + ("" if s.csv else " of the slide's 17") + "; our κ is " + ", ".join(
    f"{r['condition_number']:.3g} for `{k}`" for k, r in results.items()) + ".")

# %% [markdown]
# ## 3. The gradient from `backward()` is the closed form
#
# Before we descend, the engine's gradient at $w_0$ is checked against
# $XX^\top w - Xy$.

# %%
def loss_of(X, y, w):
    r = X.T @ w - y                                # (n, 1) residuals
    return 0.5 * (r * r).sum()


for name, (x_area, y) in cases.items():
    X = design(x_area)
    w = md.Tensor(np.array(W0).reshape(2, 1), requires_grad=True)
    loss_of(md.Tensor(X), md.Tensor(y.reshape(-1, 1)), w).backward()
    closed = X @ X.T @ np.array(W0) - X @ y
    autograd = md.backend.as_numpy(w.grad).ravel()
    assert np.allclose(autograd, closed, rtol=1e-10), (autograd, closed)
    print(f"{name:<24} backward(): {autograd.round(4).tolist()}  ==  XXᵀw − Xy")

# %% [markdown]
# ## 4. Gradient descent, step $1/\lambda_{\max}$

# %%
for name, (x_area, y) in cases.items():
    r = results[name]
    Xt, yt = md.Tensor(design(x_area)), md.Tensor(y.reshape(-1, 1))
    w = md.Tensor(np.array(W0).reshape(2, 1), requires_grad=True)
    path, losses = [w.numpy().ravel().copy()], []
    for _ in range(s.iters):
        loss = loss_of(Xt, yt, w)
        w.zero_grad()
        loss.backward()
        losses.append(loss.item())
        with md.no_grad():
            w.data -= r["step"] * w.grad
        path.append(w.numpy().ravel().copy())
    losses.append(loss_of(Xt, yt, w).item())
    r.update(path=np.array(path), losses=np.array(losses), final_loss=losses[-1], w_final=path[-1].tolist(),
             distance_to_optimum=float(np.linalg.norm(path[-1] - r["w_star"])))
descent_table = show_table(
    ["scaling", "final loss", "optimal loss", "‖w − w*‖ after descent"],
    [[k, f"{r['final_loss']:.6g}", f"{r['optimal_loss']:.6g}", f"{r['distance_to_optimum']:.4g}"]
     for k, r in results.items()])

# %% [markdown]
# ## 5. Loss curves
#
# Look at how far each curve is from the optimum after the same number of steps,
# and at how many steps each scaling needs to come within $10^{-6}$ of it
# (printed under the plot).

# %%
fig, ax = plt.subplots(figsize=(10, 4))
for name, r in results.items():
    ax.semilogy(np.maximum(r["losses"] - r["optimal_loss"], 1e-12), label=f"{name} (κ = {r['condition_number']:.3g})")
ax.set(xlabel="iteration (gradient-descent step)", ylabel="loss − optimal loss (log scale)",
       title="Gradient descent: how far the loss is above its minimum")
integer_ticks(ax.xaxis)
legend_beside(ax)
loss_png = show_figure(fig, f"{s.out}/loss.png")
for name, r in results.items():
    close = np.flatnonzero(r["losses"] - r["optimal_loss"] <= 1e-6)
    print(f"{name}: loss within 1e-6 of its minimum " +
          (f"from step {close[0]}" if close.size else f"at none of the {s.iters} steps"))

# %% [markdown]
# ## 6. The descent path over the loss contours
#
# The axes are drawn to the same scale, so a round bowl looks round. With
# $\kappa \approx 1$ the contours are circles and the gradient points at the
# optimum. With a large $\kappa$ they are long, thin ellipses: the first step
# (size $1/\lambda_{\max}$) crosses the steep direction of the valley in one go,
# and then each step moves only a fraction $1/\kappa$ of the remaining way along
# its flat floor, which is why the path stops short of the star.

# %%
contour_fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.6))
for ax, (name, r) in zip(axes, results.items()):
    x_area, y = cases[name]
    X, W = design(x_area), r["path"]
    half = np.abs(W - r["w_star"]).max() * 1.15 + 1e-9        # one half-width for both axes
    G0, G1 = np.meshgrid(np.linspace(r["w_star"][0] - half, r["w_star"][0] + half, 160),
                         np.linspace(r["w_star"][1] - half, r["w_star"][1] + half, 160))
    F = 0.5 * ((X.T @ np.stack([G0.ravel(), G1.ravel()]) - y[:, None]) ** 2).sum(axis=0).reshape(G0.shape)
    ax.contour(G0, G1, np.log10(F - F.min() + 1e-12), levels=25, cmap="viridis", linewidths=1.1)
    ax.plot(W[:, 0], W[:, 1], "r.-", ms=2, lw=0.8, label="gradient descent")
    ax.plot(*r["w_star"], "k*", ms=12, label="optimum w*")
    ax.set_aspect("equal")
    ax.set(xlabel="w₀ (slope)", ylabel="w₁ (intercept)", title=f"{name}\nκ = {r['condition_number']:.3g}")
    ax.legend(loc="lower left")
contours_png = show_figure(contour_fig, f"{s.out}/contours.png")

# %% [markdown]
# ## 7. The fitted lines after the same number of steps

# %%
fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
for ax, (name, r) in zip(axes, results.items()):
    x_area, y = cases[name]
    xs = np.linspace(x_area.min(), x_area.max(), 50)
    ax.scatter(x_area, y, label="houses")
    ax.plot(xs, r["w_final"][0] * xs + r["w_final"][1], "r", label=f"after {s.iters} steps")
    ax.plot(xs, r["w_star"][0] * xs + r["w_star"][1], "k--", label="least squares")
    ax.set(xlabel="area (scaled)", ylabel="price (scaled)", title=name)
    ax.legend()
fit_png = show_figure(fig, f"{s.out}/fit.png")

# %% [markdown]
# ## Conclusion
#
# The same data, the same model, the same number of steps: only the scale of the
# input changed, and with it the condition number of the Hessian. Gradient
# descent's speed is set by $\kappa$. Normalizing the inputs (here:
# standardizing) makes $\kappa$ small, and the next lessons do the same inside
# the network, layer by layer, with BatchNorm.

# %%
worst = max(results, key=lambda k: results[k]["condition_number"])
say(f"After {s.iters} steps: `{worst}` (κ = {results[worst]['condition_number']:.3g}) is still "
    f"{results[worst]['distance_to_optimum']:.3g} from the optimum; `standardized` (κ = "
    f"{results['standardized']['condition_number']:.3g}) is {results['standardized']['distance_to_optimum']:.2g} from it.")
write_json(f"{s.out}/results.json", {k: {kk: vv for kk, vv in v.items() if kk not in ("path", "losses")}
                                     for k, v in results.items()})
write_text(f"{s.out}/summary.md", summary_header(s, "Conditioning: gradient descent on house prices") +
           f"{len(area)} houses, {s.iters} steps from w = {W0}, step 1/λmax.\n\n{eigen_table}\n\n{step_table}\n\n"
           f"{descent_table}\n\n"
           f"![loss]({loss_png}) ![path]({contours_png}) ![fit]({fit_png})\n")
print(f"plots, results.json and summary.md in {s.out}/")
record_run(s)                 # with --record: docs/results/conditioning.md, which the README quotes
