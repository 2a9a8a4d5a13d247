"""Why normalize? Gradient descent on house prices, badly vs well scaled.

The course's opening example (seed 000): fit price = w₀·area + w₁ by minimizing
½‖Xᵀw − y‖², X being 2×n (an area row and a row of ones), with 1000 steps of
gradient descent from w = (10, 50). The Hessian of that objective is XXᵀ; its
eigenvalues decide everything: the step must stay below 2/λ_max, and then the
flat direction (λ_min) shrinks by only (1 − step·λ_min) per step. Rescaling the
area shrinks the condition number λ_max/λ_min, and gradient descent converges.

    python -m lessons.conditioning            # the slide's data, plots in runs/conditioning/
    python -m lessons.conditioning --csv my_houses.csv   # columns: area,price

Default run: about 3 s on a 2-core CPU. As a notebook: `jupytext --to ipynb
lessons/conditioning.py`, open it in Jupyter; flags go in MINIDL_LESSON_ARGS.
"""
# %% Settings (flags override them)
import csv

import numpy as np

import minidl as md
from lessons.common import lesson_args, lesson_parser, show_figure, write_json, write_text

# The rows the slide shows. Its table is cut after these six of its 17 rows, so our
# eigenvalues differ from the slide's (printed side by side below).
AREA = [5719, 3241, 1139, 1572, 1101, 2576]      # feet²
PRICE = [567, 345, 141, 167, 287, 227]           # $1000
W0 = (10.0, 50.0)
ITERS = 1000
QUICK_ITERS = 100
SLIDE_EIGENVALUES = {"area*0.01, price*0.1": (0.004, 1.856), "area*0.0001, price*0.1": (0.4, 18.45)}

parser = lesson_parser("conditioning", __doc__, f"{QUICK_ITERS} iterations", fresh_help=None)
parser.add_argument("--csv", help="your own data: a CSV with columns area,price")
parser.add_argument("--iters", type=int, default=ITERS)
args = lesson_args(parser)
iters = QUICK_ITERS if args.quick else args.iters
out = args.out


def load_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"area", "price"} <= set(rows[0]):
        raise SystemExit(f"{path}: expected a header with columns area,price")
    return [float(r["area"]) for r in rows], [float(r["price"]) for r in rows]


area, price = load_csv(args.csv) if args.csv else (AREA, PRICE)
print(f"{len(area)} houses" + ("" if args.csv else
      " (the 6 rows the slide shows; its table is cut after 6 of 17 rows)"))

# %% 1. The cases: the slide's two rescalings and full standardization
a, p = np.asarray(area, float), np.asarray(price, float)
cases = {
    "area*0.01, price*0.1": (a * 0.01, p * 0.1),
    "area*0.0001, price*0.1": (a * 0.0001, p * 0.1),
    "standardized": ((a - a.mean()) / a.std(), (p - p.mean()) / p.std()),
}


def design(a):
    return np.stack([a, np.ones_like(a)])          # X: 2×n, area row and ones row


# %% 2. The Hessian XXᵀ and what its eigenvalues allow
results = {}
for name, (a, y) in cases.items():
    X = design(a)
    H = X @ X.T
    lam = np.linalg.eigvalsh(H)                        # ascending
    w_star = np.linalg.solve(H, X @ y)                 # least squares optimum
    results[name] = {"eigenvalues": lam.tolist(), "condition_number": lam[-1] / lam[0],
                     "max_stable_step": 2 / lam[-1], "step": 1.0 / lam[-1],
                     "w_star": w_star.tolist(),
                     "optimal_loss": 0.5 * np.sum((X.T @ w_star - y) ** 2)}
    slide = SLIDE_EIGENVALUES.get(name) if not args.csv else None
    print(f"\n== {name}")
    print(f"  eigenvalues of XXᵀ: {lam[0]:.4g}, {lam[1]:.4g}"
          + (f"   (slide, 17 rows: {slide[0]}, {slide[1]})" if slide else ""))
    print(f"  condition number λmax/λmin: {lam[-1] / lam[0]:.4g}")
    print(f"  largest stable step 2/λmax: {2 / lam[-1]:.4g}; step used 1/λmax = {1 / lam[-1]:.4g}"
          " (half the limit: no direction oscillates, the same rule for every case)")
    print(f"  the flat direction shrinks by 1 − λmin/λmax = {1 - lam[0] / lam[-1]:.6f} per step: "
          f"after {iters} steps by {(1 - lam[0] / lam[-1]) ** iters:.3g}")
if not args.csv:
    print("\nWhy our eigenvalues differ from the slide's: XXᵀ = [[Σa², Σa], [Σa, n]] sums over "
          "the rows, and we have the 6 rows the slide shows, not its 17. (For area*0.01 the "
          "slide's 1.856 is even smaller than Σa² of its own first rows, so it must have scaled "
          "XXᵀ or the data differently.) Compare condition numbers, the ratio that decides "
          "convergence: slide 464 vs ours ~3200 for area*0.01, slide 46 vs ours ~44 for "
          "area*0.0001, and 1 once standardized. The story is the same.")


# %% 3. The loss in minidl ops, and its gradient from backward() against the closed form XXᵀw − Xy
def loss_of(X, y, w):
    r = X.T @ w - y                                # (n, 1) residuals
    return 0.5 * (r * r).sum()


for name, (a, y) in cases.items():
    X = design(a)
    w = md.Tensor(np.array(W0).reshape(2, 1), requires_grad=True)
    loss_of(md.Tensor(X), md.Tensor(y.reshape(-1, 1)), w).backward()
    closed = X @ X.T @ np.array(W0) - X @ y
    autograd = w.grad.ravel() if isinstance(w.grad, np.ndarray) else md.backend.as_numpy(w.grad).ravel()
    assert np.allclose(autograd, closed, rtol=1e-10), (autograd, closed)
    results[name]["gradient_check"] = "backward() == XXᵀw − Xy at w0"
    print(f"{name}: gradient from backward() {autograd.round(4).tolist()} == XXᵀw − Xy")

# %% 4. Gradient descent, step 1/λmax, the gradient from backward()
for name, (a, y) in cases.items():
    r = results[name]
    Xt, yt = md.Tensor(design(a)), md.Tensor(y.reshape(-1, 1))
    w = md.Tensor(np.array(W0).reshape(2, 1), requires_grad=True)
    path, losses = [w.numpy().ravel().copy()], []
    for _ in range(iters):
        loss = loss_of(Xt, yt, w)
        w.zero_grad()
        loss.backward()
        losses.append(loss.item())
        with md.no_grad():
            w.data -= r["step"] * w.grad
        path.append(w.numpy().ravel().copy())
    losses.append(loss_of(Xt, yt, w).item())
    r.update(path=np.array(path), losses=np.array(losses), final_loss=losses[-1],
             w_final=path[-1].tolist(),
             distance_to_optimum=float(np.linalg.norm(path[-1] - r["w_star"])))
    print(f"{name}: final loss {losses[-1]:.6g} (optimum {r['optimal_loss']:.6g}); "
          f"distance to the optimum ‖w − w*‖ = {r['distance_to_optimum']:.4g}")

# %% 5. Loss curves: the badly conditioned case crawls
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 4))
for name, r in results.items():
    ax.semilogy(np.maximum(r["losses"] - r["optimal_loss"], 1e-16), label=name)
ax.set(xlabel="iteration", ylabel="loss − optimal loss", title="Gradient descent: distance to the optimum")
ax.legend()
show_figure(fig, f"{out}/loss.png")

# %% 6. The descent path over the loss contours: zig-zag across the valley, crawl along it
fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
for ax, (name, r) in zip(axes, results.items()):
    a, y = cases[name]
    X, W = design(a), r["path"]
    span = np.abs(W - r["w_star"]).max(axis=0) * 1.3 + 1e-9
    G0, G1 = np.meshgrid(np.linspace(r["w_star"][0] - span[0], r["w_star"][0] + span[0], 120),
                         np.linspace(r["w_star"][1] - span[1], r["w_star"][1] + span[1], 120))
    F = 0.5 * ((X.T @ np.stack([G0.ravel(), G1.ravel()]) - y[:, None]) ** 2).sum(axis=0).reshape(G0.shape)
    ax.contour(G0, G1, np.log10(F - F.min() + 1e-12), levels=25, cmap="viridis", linewidths=0.7)
    ax.plot(W[:, 0], W[:, 1], "r.-", ms=2, lw=0.8, label="gradient descent")
    ax.plot(*r["w_star"], "k*", ms=12, label="optimum w*")
    ax.set(xlabel="w₀ (slope)", ylabel="w₁ (intercept)",
           title=f"{name}\ncondition number {r['condition_number']:.3g}")
    ax.legend(fontsize=7)
show_figure(fig, f"{out}/contours.png")

# %% 7. The fitted lines after the same number of steps
fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
for ax, (name, r) in zip(axes, results.items()):
    a, y = cases[name]
    xs = np.linspace(a.min(), a.max(), 50)
    ax.scatter(a, y, label="houses")
    ax.plot(xs, r["w_final"][0] * xs + r["w_final"][1], "r", label=f"after {iters} steps")
    ax.plot(xs, r["w_star"][0] * xs + r["w_star"][1], "k--", label="least squares")
    ax.set(xlabel="area (scaled)", ylabel="price (scaled)", title=name)
    ax.legend(fontsize=7)
show_figure(fig, f"{out}/fit.png")

# %% 8. The numbers, written down
write_json(f"{out}/results.json", {k: {kk: vv for kk, vv in v.items() if kk not in ("path", "losses")}
                                   for k, v in results.items()})
rows = "\n".join(f"| {k} | {v['eigenvalues'][0]:.4g}, {v['eigenvalues'][1]:.4g} | "
                 f"{v['condition_number']:.4g} | {v['step']:.4g} | {v['final_loss']:.4g} | "
                 f"{v['optimal_loss']:.4g} | {v['distance_to_optimum']:.4g} |" for k, v in results.items())
write_text(f"{out}/summary.md", f"# Conditioning: gradient descent on house prices\n\n"
           f"{len(area)} houses, {iters} steps from w = {W0}, step 1/λmax.\n\n"
           "| scaling | eigenvalues of XXᵀ | condition number | step | final loss | optimal loss "
           "| ‖w − w*‖ |\n|---|---|---|---|---|---|---|\n" + rows + "\n\n"
           "![loss](loss.png) ![path](contours.png) ![fit](fit.png)\n")
print(f"\nplots, results.json and summary.md in {out}/")
