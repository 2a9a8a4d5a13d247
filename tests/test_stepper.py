"""md.step_through: the backward pass as a page, checked as Python and, where
Playwright and a Chromium are installed, driven in a real browser at a
projector's 1280×720 (Debian's `chromium`; nothing is downloaded)."""
import json
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


def conv_bn_relu(seed=7):
    """The conv → BN → ReLU block of the batchnorm_backward lesson, its layers' own ops."""
    rng = np.random.default_rng(seed)
    md.manual_seed(seed)
    conv, bn = md.nn.Conv2d(1, 2, 3).astype("float64"), md.nn.BatchNorm2d(2).astype("float64")
    conv.weight.name, conv.bias.name, bn.gamma.name, bn.beta.name = "W", "b", "γ", "β"
    x = named(md.Tensor(rng.standard_normal((2, 1, 5, 5)), requires_grad=True), "x")
    a = named(md.nn.ReLU()(named(bn(named(conv(x), "z")), "BN(z)")), "a")
    return a, rng.standard_normal(a.shape)


def panels(page, part="panel"):
    """The panel (or list of complete gradients) of each step, as the page's script shows it."""
    data = re.search(r'<script type="application/json" class="minidl-data">(.*?)</script>', page._repr_html_(), re.S)
    return [s[part] for s in json.loads(data.group(1))["steps"]]


def received(step):
    """{id(input): the whole gradient it receives from this step} (x * x: both parts summed)."""
    sent = {}
    for x, g in zip(step.inputs, step.grad_inputs):
        if g is not None:
            sent[id(x)] = sent.get(id(x), 0) + host(g)
    return sent


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


def test_one_label_for_a_tensor_everywhere_and_steps_counted_from_1():
    t, dy = bn_from_basic_ops()
    for y, grad in ((t["y"], dy), conv_bn_relu()):
        page = md.step_through(y, grad)
        table, panel = md.steps_table(page.steps).splitlines(), panels(page)
        for k, s in enumerate(page.steps):                  # the stepper's "Step 3 of 13" is step 3 everywhere
            name = md.graph.label(s.output)
            assert str(s).startswith(f"step {k + 1}: {s.op} -> {name} ")
            assert table[k + 1].split()[0] == str(k + 1) and f" {name} {tuple(s.output.shape)}" in table[k + 1]
            assert f'made <span class="name">{name}</span>' in panel[k]
            for x in s.inputs:
                if x.requires_grad:
                    assert md.graph.label(x) in table[k + 1] and md.graph.label(x) in str(s)
        assert "leaf" not in "\n".join(table) and "tensor" not in "\n".join(table)
    labels = [md.graph.label(s.output) for s in page.steps]          # the conv block
    assert labels[-2:] == ["γ reshaped", "β reshaped"]               # two reshapes, told apart by their input
    complete = re.findall(r"<li[^>]*>([^<]*)</li>", panels(page, "complete")[-1])
    assert len(set(complete)) == len(complete) and {"dl/d(γ reshaped)", "dl/d(β reshaped)"} <= set(complete)
    steps = md.step_through(t["y"], dy).steps
    assert [md.graph.label(s.output) for s in steps if s.op == "Sum"] == ["Σ (x − μ)²", "Σ x"]
    # BN's division written without naming σ: the power reads with its input, not "^ −½"
    x, var = t["x"], t["var"]
    x_mu = x - x.mean(axis=0, keepdims=True)
    eps = named(md.Tensor(np.array(1e-5)), "ε")
    x_hat = x_mu * (var + eps) ** -0.5
    assert md.graph.label(x_hat.creator.inputs[1]) == "(σ² + ε)^−½"
    assert "sends dl/d((σ² + ε)^−½)" in str(next(md.backward_steps(x_hat, dy)))


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
        assert f"Step {k + 1} of {len(steps)}" in panel.inner_text() and s.op in panel.inner_text()
        expected = [np.linalg.norm(host(s.grad_output))] + [np.linalg.norm(g) for g in received(s).values()]
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


def go_to(page, k, root="[data-minidl-steps]"):
    page.eval_on_selector(f"{root} input[type=range]",
                          f"r => {{ r.value = '{k}'; r.dispatchEvent(new Event('input')); }}")


def box(page, title):
    """The stepper's box titled ``title``: its text rows."""
    return page.evaluate("""title => [...document.querySelectorAll('g.node')]
        .filter(g => g.querySelector('text.title').textContent === title)
        .map(g => [...g.querySelectorAll('text')].map(e => e.textContent))""", title)


def test_a_tensor_times_itself_receives_both_parts_at_once_in_chromium(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    md.step_through(t["y"], dy).save(str(tmp_path / "steps.html"))
    steps = list(md.backward_steps(t["y"], dy))
    k = next(s.index for s in steps if s.op == "Mul" and s.inputs[0] is s.inputs[1])   # (x − μ)²
    both = received(steps[k])[id(steps[k].inputs[0])]
    page = open_page(browser, tmp_path / "steps.html")
    go_to(page, k)
    [x_mu] = box(page, "x − μ")
    assert f"+ {np.linalg.norm(both):.3g}" in x_mu                 # the box: both parts, as the step sends them
    panel = page.locator("[data-role=step-panel]")
    assert panel.locator(".send").count() == 1 and panel.inner_text().count("accumulated there before") == 1
    assert "both factors are the same tensor x − μ" in panel.inner_text()
    assert "it receives 2·(x − μ)·g" in panel.inner_text()
    np.testing.assert_allclose(panel_norms(page)[1], np.linalg.norm(both), rtol=1e-12)
    assert md.graph.local_derivative(steps[k].function).startswith("2·u, for u × u")     # the walk table's words
    assert md.steps_table(steps).splitlines()[k + 1].count("x − μ (4, 3)") == 1         # one input, sent to once


def test_a_constant_factor_is_named_in_chromium(browser, tmp_path):
    y = named(md.Tensor(np.linspace(-1, 1, 12).reshape(4, 3), requires_grad=True), "y")
    w = md.Tensor(np.arange(12.0).reshape(4, 3))                 # a constant array: needs no gradient
    md.step_through((y * w).sum()).save(str(tmp_path / "steps.html"))
    page = open_page(browser, tmp_path / "steps.html")
    titles = page.eval_on_selector_all("g.node text.title", "els => els.map(e => e.textContent)")
    assert sorted(titles) == sorted(["y", "constant", "y × constant", "Σ (y × constant)"])
    page.click("[aria-label='next step']")
    text = page.locator("[data-role=step-panel]").inner_text()
    assert "Local derivative: the constant (4, 3) factor towards y" in text and "None" not in text
    w.name = "w"
    assert "the constant (4, 3) factor w towards y" in panels(md.step_through((y * w).sum()))[1]


def test_the_keys_move_only_a_stepper_on_screen_and_leave_scrolling_to_the_page(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    filler = "<div style='height:1500px'>text between the steppers</div>"
    (tmp_path / "two.html").write_text("<!doctype html><meta charset='utf-8'><body>" + filler.join(
        md.step_through(t["y"], dy)._repr_html_() for _ in range(2)) + filler, encoding="utf-8")
    page = open_page(browser, tmp_path / "two.html")
    first, second = page.locator("[data-minidl-steps]").nth(0), page.locator("[data-minidl-steps]").nth(1)
    at = lambda: (first.get_attribute("data-current"), second.get_attribute("data-current"))
    first.locator("[aria-label='next step']").click()
    assert at() == ("1", "0")
    for key in ("ArrowDown", "ArrowUp", "Space", "PageDown", "PageUp"):    # the page's keys: never the stepper's
        page.keyboard.press(key)
        assert at() == ("1", "0"), key
    page.keyboard.press("ArrowDown")
    assert page.evaluate("window.scrollY") > 0                               # Down scrolled the page
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("End")
    assert at() == ("12", "0")
    page.keyboard.press("Home")
    assert at() == ("0", "0")
    second.scroll_into_view_if_needed()                                      # the first is off screen now
    assert first.evaluate("e => e.getBoundingClientRect().bottom") < 0
    page.keyboard.press("ArrowRight")
    assert at() == ("0", "0")
    second.locator(".graph > svg").click()
    page.keyboard.press("ArrowRight")
    assert at() == ("0", "1")


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


def test_the_conv_block_and_its_panel_fit_a_projector_in_chromium(browser, tmp_path):
    md.step_through(*conv_bn_relu()).save(str(tmp_path / "steps.html"))
    page = open_page(browser, tmp_path / "steps.html")
    for k in range(5):                       # graph and panel on one screen: nothing below the fold
        go_to(page, k)
        bottom = page.evaluate("""() => Math.max(...[...document.querySelectorAll(
            '[data-minidl-steps] .graph > svg, [data-minidl-steps] [data-role=step-panel] *')]
            .map(e => e.getBoundingClientRect().bottom))""")
        assert bottom <= 720, f"step {k + 1}: the page reaches {bottom:.0f} px, below a 1280×720 screen"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280


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
