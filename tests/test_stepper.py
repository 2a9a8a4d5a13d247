"""md.step_through: the backward pass as a page, checked as Python and, where
Playwright and a Chromium are installed, driven in a real browser at a
projector's 1280×720 (Debian's `chromium`; nothing is downloaded)."""
import os
import re
import shutil

import numpy as np
import pytest

import minidl as md
from conftest import host

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
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
    return dict(x=x, gamma=gamma, x_hat=x_hat, var=var, y=y), rng.standard_normal((4, 3))


def last_step_sending_to(steps, t):
    return max(s.index for s in steps for x, g in zip(s.inputs, s.grad_inputs) if x is t and g is not None)


# ---- as Python ----------------------------------------------------------------
def test_step_through_is_a_self_contained_page_that_writes_no_gradient(tmp_path):
    t, dy = bn_from_basic_ops()
    page = md.step_through(t["y"], dy)
    assert t["x"].grad is None and t["gamma"].grad is None          # the world as it found it
    assert len(page.steps) == 13 and [s.op for s in page.steps] == [s.op for s in md.backward_steps(t["y"], dy)]
    html = page._repr_html_()
    assert 'data-minidl-steps=""' in html and 'data-steps="13"' in html and 'data-current="0"' in html
    assert 'aria-label="previous step"' in html and 'aria-label="next step"' in html
    path = page.save(str(tmp_path / "steps.html"))
    saved = open(path, encoding="utf-8").read()
    # nothing from the network: no external script, style sheet, image or font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", saved) and "@import" not in saved
    assert html in saved
    again = md.step_through(t["y"], dy)._repr_html_()
    assert re.search(r'id="([^"]+)"', html).group(1) != re.search(r'id="([^"]+)"', again).group(1)


def test_step_through_says_what_it_needs():
    with pytest.raises(TypeError, match="step_through: expected the Tensor whose backward pass"):
        md.step_through(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        md.step_through(md.Tensor(np.ones(3)).sum())


# ---- in a browser ---------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                   "(pip install playwright; the browser test drives Chromium with it)")
    chromium = os.environ.get("MINIDL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the browser test uses the "
                    "system's and never downloads one")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto("file://" + str(path))
    return page


def panel_norms(page, root="[data-minidl-steps]"):
    return page.eval_on_selector_all(f"{root} [data-role=step-panel] .values",
                                     "els => els.map(e => Number(e.dataset.norm))")


def test_the_page_steps_through_bn_from_basic_ops_in_chromium(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    md.step_through(t["y"], dy).save(str(tmp_path / "steps.html"))
    steps = list(md.backward_steps(t["y"], dy))
    page = open_page(browser, tmp_path / "steps.html")
    root = page.locator("[data-minidl-steps]")
    assert root.get_attribute("data-steps") == str(len(steps)) and root.get_attribute("data-current") == "0"

    def check(k):
        s = steps[k]
        assert root.get_attribute("data-current") == str(k)
        panel = page.locator("[data-role=step-panel]")
        assert f"Step {k + 1} of {len(steps)}" in panel.inner_text() and f"({s.op})" in panel.inner_text()
        sent = [g for g in s.grad_inputs if g is not None]
        expected = [np.linalg.norm(host(g)) for g in [s.grad_output] + sent]
        np.testing.assert_allclose(panel_norms(page), expected, rtol=1e-12)
        cells = panel.locator(".values").first.locator("td").all_inner_texts()   # every value: 12 of them
        np.testing.assert_allclose([float(c.replace("−", "-")) for c in cells], host(s.grad_output).ravel(),
                                   rtol=1e-3)

    for k in range(len(steps)):                     # forward with the button, back with the arrow key
        check(k)
        page.click("[aria-label='next step']")
    assert root.get_attribute("data-current") == str(len(steps) - 1)   # stops at the last step
    for k in reversed(range(len(steps) - 1)):
        page.keyboard.press("ArrowLeft")
        check(k)
    page.keyboard.press("ArrowLeft")
    assert root.get_attribute("data-current") == "0"
    for k in range(1, 4):                           # forward with the arrow key too
        page.keyboard.press("ArrowRight")
        check(k)
    page.eval_on_selector("input[type=range]", "r => { r.value = '9'; r.dispatchEvent(new Event('input')); }")
    check(9)

    # dl/dx̂ is complete at the last step that sends to x̂, and not before
    for name, tensor in (("x̂", t["x_hat"]), ("σ²", t["var"]), ("x", t["x"])):
        k = last_step_sending_to(steps, tensor)
        page.eval_on_selector("input[type=range]", f"r => {{ r.value = '{k - 1}'; r.dispatchEvent(new Event('input')); }}")
        assert page.locator(f"[data-role=complete] [data-tensor='{name}']").count() == 0
        assert f"dl/d{name} is complete" not in page.locator("[data-role=step-panel]").inner_text()
        page.click("[aria-label='next step']")
        assert page.locator(f"[data-role=complete] [data-tensor='{name}']").count() == 1
        assert f"dl/d{name} is complete" in page.locator("[data-role=step-panel]").inner_text()


def test_the_bn_graph_fits_a_projector_in_chromium(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    md.step_through(t["y"], dy).save(str(tmp_path / "steps.html"))
    page = open_page(browser, tmp_path / "steps.html")
    for k in range(13):
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"step {k}: the page is {width} px wide; it scrolls sideways at 1280×720"
        smallest = page.evaluate("""() => {
            const svg = document.querySelector('[data-minidl-steps] .graph > svg');
            const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
            const sizes = [...svg.querySelectorAll('text')].filter(e => e.textContent.trim())
                .map(e => parseFloat(getComputedStyle(e).fontSize) * scale);
            const walker = document.createTreeWalker(document.querySelector('[data-minidl-steps]'), NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
                const e = walker.currentNode.parentElement;
                if (walker.currentNode.textContent.trim() && !e.closest('svg, script, style') && e.offsetParent)
                    sizes.push(parseFloat(getComputedStyle(e).fontSize));
            }
            return Math.min(...sizes);
        }""")
        assert smallest >= 11, f"step {k}: text {smallest:.1f} px tall"
        page.keyboard.press("ArrowRight") if k else page.click("[aria-label='next step']")
    graph = page.locator("[data-minidl-steps] .graph > svg").bounding_box()
    assert graph["x"] + graph["width"] <= 1280 and graph["y"] + graph["height"] <= 720   # the whole graph on screen


def test_two_steppers_on_one_page_do_not_interfere(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    x = named(md.Tensor(np.array([[0.5, -1.0], [2.0, 0.3]]), requires_grad=True), "x")
    pages = [md.step_through(t["y"], dy), md.step_through((x.tanh() * x).sum())]
    (tmp_path / "two.html").write_text("<!doctype html><meta charset='utf-8'><body>" +
                                       "".join(p._repr_html_() for p in pages), encoding="utf-8")
    page = open_page(browser, tmp_path / "two.html")
    first, second = page.locator("[data-minidl-steps]").nth(0), page.locator("[data-minidl-steps]").nth(1)
    second.locator("[aria-label='next step']").click()
    page.keyboard.press("ArrowRight")               # the focused one: the second
    assert (first.get_attribute("data-current"), second.get_attribute("data-current")) == ("0", "2")
    first.locator(".graph > svg").click()                    # clicked last: the first
    page.keyboard.press("ArrowRight")
    assert (first.get_attribute("data-current"), second.get_attribute("data-current")) == ("1", "2")
    assert second.locator("[data-role=step-panel]").inner_text().startswith("Step 3 of 3")
