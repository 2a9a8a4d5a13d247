"""The BatchNorm backward, derived step by step and proven three ways.

For a small batch this prints the forward (μ, σ², x̂), every term of the
course's chain rule (seed 003: dl/dβ, dl/dγ, dl/dx̂, dl/dσ², dl/dμ, dl/dx),
then shows that the compact closed form and the engine's autograd give the
same dl/dx, and the gradcheck table of each, in train and eval mode. It also
shows why an upstream gradient of ones proves nothing and why a one-sample
batch is an error.

Check your own homework derivation: write a NumPy function

    def my_backward(dy, x, gamma, beta, eps):  # x, dy: (N, D); gamma, beta: (D,)
        return dx, dgamma, dbeta

and run  python -m lessons.batchnorm_backward --check my_module:my_backward
"""
# %% Settings
import argparse
import importlib
import sys

import numpy as np

import minidl as md
from minidl.ops import norm as N
from lessons.common import out_dir, write_json, write_text

BATCH, FEATURES, EPS, SEED = 4, 3, 1e-5, 7
np.set_printoptions(precision=4, suppress=True, linewidth=100)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", metavar="MODULE:FUNCTION", help="grade your own backward function")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--features", type=int, default=FEATURES)
    p.add_argument("--out", default="runs/batchnorm_backward")
    p.add_argument("--quick", action="store_true", help="same lesson (it already takes a second)")
    return p.parse_args(argv)


def show(name, value):
    print(f"{name} =\n{np.asarray(value)}\n")


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def main(argv=None):
    args = parse_args(argv)
    out = out_dir(args.out)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((args.batch, args.features)) * 2 + 1
    gamma = 1 + 0.5 * rng.standard_normal(args.features)
    beta = rng.standard_normal(args.features)
    dy = rng.standard_normal(x.shape)          # a random upstream gradient dl/dy
    axes, m = (0,), args.batch
    results = {}

    # %% 1. The forward, one intermediate per line
    print("== 1. forward: y = γ·x̂ + β with x̂ = (x − μ)/√(σ² + ε)")
    t = N.staged_terms(dy, x, gamma, EPS, axes)
    show("x", x)
    show("μ (batch mean per feature)", t["mu"])
    show("σ² (biased batch variance)", t["var"])
    show("x̂", t["x_hat"])

    # %% 2. The backward, term by term, as the course derives it
    print("== 2. backward, staged: the chain rule one term at a time (minidl.ops.norm.staged_terms)")
    show("dl/dy (random upstream)", dy)
    show("dl/dβ = Σ dl/dy", t["g_beta"])
    show("dl/dγ = Σ dl/dy·x̂", t["g_gamma"])
    show("dl/dx̂ = dl/dy·γ", t["g_xhat"])
    show("dl/dσ² = Σ dl/dx̂·(x − μ)·(−½)(σ² + ε)^(−3/2)", t["g_var"])
    show("dl/dμ = Σ dl/dx̂·(−1/√(σ² + ε)) + dl/dσ²·Σ −2(x − μ)/m", t["g_mu"])
    show("dl/dx = dl/dx̂/√(σ² + ε) + dl/dσ²·2(x − μ)/m + dl/dμ/m", t["g_x"])
    staged = (t["g_x"], t["g_gamma"], t["g_beta"])
    x_hat, std = t["x_hat"], np.sqrt(t["var"] + EPS)

    # %% 3. Three ways to the same dl/dx
    print("== 3. the compact closed form and autograd agree")
    compact = N.backward_compact(dy, x_hat, std, gamma, axes)
    t = [md.Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    N.batch_norm_autograd(*t, eps=EPS, axes=axes).backward(dy)
    auto = [a.grad for a in t]
    for name, k in (("dl/dx", 0), ("dl/dγ", 1), ("dl/dβ", 2)):
        d1, d2 = max_diff(staged[k], compact[k]), max_diff(staged[k], auto[k])
        print(f"  {name}: staged vs compact {d1:.1e}, staged vs autograd {d2:.1e}")
        results[f"{name} max difference"] = {"staged_vs_compact": d1, "staged_vs_autograd": d2}
        assert d1 < 1e-10 and d2 < 1e-10
    print()

    # %% 4. Gradcheck: each form against finite differences, train and eval mode
    print("== 4. gradcheck with a random upstream gradient")
    inputs = lambda: [md.Tensor(a) for a in (x, gamma, beta)]
    for form in ("staged", "compact"):
        print(f"-- hand-derived, {form}, train mode")
        print(md.gradcheck(lambda x, g, b: N.normalize(x, axes, g, b, EPS, backward=form)[0], inputs()))
    print("-- autograd of the same formula, train mode")
    print(md.gradcheck(lambda x, g, b: N.batch_norm_autograd(x, g, b, EPS, axes), inputs()))
    bn = md.nn.BatchNorm1d(args.features).astype("float64")
    bn.gamma.data[:], bn.beta.data[:] = gamma, beta
    bn(md.Tensor(x))                    # one training step fills the running statistics
    bn.eval()
    before = bn.running_mean.numpy().copy()
    print("-- BatchNorm1d in eval mode (running statistics: an affine map)")
    print(md.gradcheck(lambda x, *p: bn(x), [md.Tensor(x), bn.gamma, bn.beta]))
    assert (bn.running_mean.numpy() == before).all()
    print("   running statistics unchanged by the check\n")

    # %% 5. Why an upstream gradient of ones proves nothing
    print("== 5. backpropagating sum(y) (upstream = ones) tells you nothing")
    ones_dx = N.backward_compact(np.ones_like(x), x_hat, std, np.ones_like(gamma), axes)[0]
    print(f"  without γ, dl/dx for upstream ones: max |dl/dx| = {np.abs(ones_dx).max():.1e}")
    print("  Σ x̂ = 0 over the batch whatever x is, so d(Σ x̂)/dx = 0 exactly: a wrong backward that")
    print("  returns zeros, or any multiple of a correct one, passes such a check.\n")
    results["ones_upstream_max_abs_dx"] = float(np.abs(ones_dx).max())

    # %% 6. Why a one-sample batch is an error
    print("== 6. a batch of one sample")
    try:
        md.nn.BatchNorm1d(args.features)(md.Tensor(x[:1].astype(np.float32)))
    except ValueError as e:
        print(f"  ValueError: {e}\n")
        results["single_sample_error"] = str(e)

    # %% 7. Your own derivation
    if args.check:
        results["your_backward"] = grade(args.check, x, gamma, beta, dy, staged)
    write_json(f"{out}/results.json", results)
    write_text(f"{out}/summary.md", "# BatchNorm backward\n\n" + "\n".join(
        f"- {k}: {v}" for k, v in results.items()) + "\n")
    print(f"results.json and summary.md in {out}/")
    return results


def grade(spec, x, gamma, beta, dy, reference):
    """Run the student's backward and compare it with the staged reference and
    with finite differences."""
    module_name, _, fn_name = spec.partition(":")
    sys.path.insert(0, ".")   # the student's file sits in the folder they run from
    fn = getattr(importlib.import_module(module_name), fn_name or "batchnorm_backward")
    print(f"== 7. grading {spec}")
    theirs = fn(dy.copy(), x.copy(), gamma.copy(), beta.copy(), EPS)
    numeric = [md.numerical_grad(lambda t: N.batch_norm_autograd(t, md.Tensor(gamma), md.Tensor(beta), EPS), x, dy),
               md.numerical_grad(lambda t: N.batch_norm_autograd(md.Tensor(x), t, md.Tensor(beta), EPS), gamma, dy),
               md.numerical_grad(lambda t: N.batch_norm_autograd(md.Tensor(x), md.Tensor(gamma), t, EPS), beta, dy)]
    verdicts = {}
    for name, mine, ref, num in zip(("dx", "dgamma", "dbeta"), theirs, reference, numeric):
        mine = np.asarray(mine, dtype=float)
        if mine.shape != ref.shape:
            print(f"  {name}: shape {mine.shape}, expected {ref.shape}: WRONG")
            verdicts[name] = "wrong shape"
            continue
        rel = float(np.max(np.abs(mine - num) / np.maximum(1e-8, np.abs(mine) + np.abs(num))))
        band = "wrong" if rel > 1e-2 else "fine" if rel < 1e-7 else "check"
        print(f"  {name}: max |yours − reference| = {max_diff(mine, ref):.2e}, relative error vs "
              f"finite differences {rel:.2e} ({band})")
        verdicts[name] = band
    print()
    return verdicts


if __name__ == "__main__":
    main()
