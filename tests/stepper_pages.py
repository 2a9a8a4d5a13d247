"""What the stepper's browser tests share: BatchNorm from basic ops with the
course's six terms named (also imported by the notebook a JupyterLab test
runs), Chromium, and a measure of the smallest text a stepper shows."""
import os
import shutil

import numpy as np
import pytest

import minidl as md

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:            # the browser tests skip, saying so
    expect = sync_playwright = None

# --disable-smooth-scrolling: a key that scrolls the page has scrolled it when the press returns,
# so where a stepper is (on screen or not) does not depend on how fast an animation runs
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-smooth-scrolling",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def named(t, name):
    t.name = name
    return t


def bn_from_basic_ops(seed=7):
    """BatchNorm's forward, one intermediate per line, as the batchnorm_backward lesson builds it."""
    rng = np.random.default_rng(seed)
    x = named(md.Tensor(rng.standard_normal((4, 3)) * 2 + 1, requires_grad=True), "x")
    gamma = named(md.Tensor(1 + 0.5 * rng.standard_normal((1, 3)), requires_grad=True), "γ")
    beta = named(md.Tensor(rng.standard_normal((1, 3)), requires_grad=True), "β")
    mu = named(x.mean(axis=0, keepdims=True), "μ")
    x_mu = named(x - mu, "x − μ")
    var = named((x_mu * x_mu).mean(axis=0, keepdims=True), "σ²")
    sigma = named((var + 1e-5) ** 0.5, "σ")
    x_hat = named(x_mu / sigma, "x̂")
    y = named(x_hat * gamma + beta, "y")
    return dict(x=x, gamma=gamma, beta=beta, mu=mu, x_hat=x_hat, var=var, y=y), rng.standard_normal((4, 3))


def bn_terms(t):
    """The course's six terms on ``bn_from_basic_ops``'s tensors, as ``step_through(terms=...)`` takes them."""
    d = lambda v: rf"\frac{{\partial l}}{{\partial {v}}}"
    return {"dl/dβ": (t["beta"], d(r"\beta") + r" = \sum_i " + d("y_i")),
            "dl/dγ": (t["gamma"], d(r"\gamma") + r" = \sum_i " + d("y_i") + r"\,\hat x_i"),
            "dl/dx̂": (t["x_hat"], d(r"\hat x_i") + " = " + d("y_i") + r"\,\gamma"),
            "dl/dσ²": (t["var"], d(r"\sigma^2") + r" = \sum_i " + d(r"\hat x_i") + r"\,(x_i - \mu)"
                       r"\cdot\left(-\frac{1}{2}\right)(\sigma^2 + \epsilon)^{-3/2}"),
            "dl/dμ": (t["mu"], d(r"\mu") + r" = \sum_i " + d(r"\hat x_i") + r"\cdot\frac{-1}{\sqrt{\sigma^2+\epsilon}} + "
                      + d(r"\sigma^2") + r"\cdot\frac{1}{m}\sum_i -2(x_i - \mu)"),
            "dl/dx": (t["x"], d("x_i") + " = " + d(r"\hat x_i") + r"\cdot\frac{1}{\sqrt{\sigma^2+\epsilon}} + "
                      + d(r"\mu") + r"\cdot\frac{1}{m} + " + d(r"\sigma^2") + r"\cdot\frac{2(x_i - \mu)}{m}")}


def bn_stepper():
    """The stepper a JupyterLab test's notebook shows: BN from basic ops, its six terms named."""
    t, dy = bn_from_basic_ops()
    return md.step_through(t["y"], dy, title="BatchNorm from basic ops: the backward pass", terms=bn_terms(t))


def chromium():
    """Playwright's Chromium, the system's (nothing is downloaded); skips the test where either is missing."""
    if sync_playwright is None:
        pytest.skip("Playwright is not installed (pip install playwright; the browser tests drive Chromium with it)")
    path = os.environ.get("MINIDL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the browser tests use the "
                    "system's and never download one")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# The smallest text a stepper shows, in px as drawn: every visible text node of the graph
# (its SVG's font size times the SVG's scale) and of the panel, and each formula's em.
# Returns [[px, text], ...], smallest first.
SMALLEST_TEXT = """root => {
    const sizes = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const node = walker.currentNode, e = node.parentElement;
        if (!node.textContent.trim() || e.closest('script, style, [hidden]')) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        if (!range.getClientRects().length) continue;          // not drawn (display: none)
        let px = parseFloat(getComputedStyle(e).fontSize);
        const svg = e.closest('svg');
        if (svg) px *= svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
        sizes.push([px, node.textContent.trim().slice(0, 40)]);
    }
    for (const f of root.querySelectorAll('svg.formula'))
        sizes.push([Number(f.dataset.emPx) * f.getBoundingClientRect().width / f.viewBox.baseVal.width,
                    'formula ' + f.getAttribute('aria-label').slice(0, 30)]);
    return sizes.sort((a, b) => a[0] - b[0]);
}"""
