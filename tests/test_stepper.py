"""md.step_through: the backward pass as a page, checked as Python and, where
Playwright and a Chromium are installed, driven in a real browser at a
projector's 1280×720 (Debian's `chromium`; nothing is downloaded)."""
import json
import re

import numpy as np
import pytest

import minidl as md
from stepper_pages import SMALLEST_TEXT, bn_from_basic_ops, bn_terms, chromium, expect, named
from conftest import host


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


def test_the_terms_a_teacher_names_are_marked_listed_and_shown_with_their_formula():
    t, dy = bn_from_basic_ops()
    formula = r"\frac{\partial l}{\partial \hat x_i} = \frac{\partial l}{\partial y_i}\,\gamma"
    page = md.step_through(t["y"], dy, terms={"dl/dx̂": (t["x_hat"], formula), "dl/dx": (t["x"], None),
                                              "dl/dy": (t["y"], None)})
    steps, html = page.steps, page._repr_html_()
    k = last_step_sending_to(steps, t["x_hat"])
    assert page.terms == {"dl/dx̂": steps[k], "dl/dx": steps[-1], "dl/dy": steps[0]}    # y's arrives complete
    ringed = re.findall(r'<g class="node[^"]* term" data-node="\d+" data-name="([^"]*)">', html)
    assert sorted(ringed) == ["x", "x̂", "y"]
    listed = re.findall(r'<li data-term="([^"]+)" data-step="(\d+)">', html)
    assert listed == [("dl/dy", "0"), ("dl/dx̂", str(k)), ("dl/dx", str(len(steps) - 1))]
    panel = panels(page)
    assert [i for i, p in enumerate(panel) if 'class="formula"' in p] == [k]           # at its step, only there
    assert [i for i, p in enumerate(panel) if 'data-term="dl/dx"' in p] == [len(steps) - 1]
    # beside the formula: the term's values, the whole gradient backward() leaves at x̂
    t["x_hat"].retain_grad()
    t["y"].backward(dy)
    norm = re.search(r'<div class="term-done" data-term="dl/dx̂">.*?data-norm="([^"]+)"', panel[k], re.S).group(1)
    assert float(norm) == pytest.approx(np.linalg.norm(host(t["x_hat"].grad)), rel=1e-12)


def test_terms_say_what_they_need():
    t, dy = bn_from_basic_ops()
    with pytest.raises(ValueError, match=r"the term 'dl/dz' names a tensor \(3,\) that is not in the graph"):
        md.step_through(t["y"], dy, terms={"dl/dz": (md.Tensor(np.ones(3), requires_grad=True), None)})
    with pytest.raises(TypeError, match=r"terms\['dl/dx'\] should be \(tensor, formula\)"):
        md.step_through(t["y"], dy, terms={"dl/dx": t["x"]})
    with pytest.raises(ValueError, match=r"the formula of the term 'dl/dx' is not one matplotlib's mathtext"):
        md.step_through(t["y"], dy, terms={"dl/dx": (t["x"], r"\tfrac{1}{2}")})
    with pytest.raises(ValueError, match="the terms 'a' and 'b' name the same tensor"):
        md.step_through(t["y"], dy, terms={"a": (t["x"], None), "b": (t["x"], None)})
    with pytest.raises(TypeError, match=r"terms should be a dict"):
        md.step_through(t["y"], dy, terms=[t["x"]])


def test_the_page_ticks_off_each_term_at_its_step_in_chromium(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    page_ = md.step_through(t["y"], dy, terms=bn_terms(t))
    page_.save(str(tmp_path / "steps.html"))
    page = open_page(browser, tmp_path / "steps.html")
    for name, step in page_.terms.items():
        item = page.locator(f"[data-role=terms] li[data-term='{name}']")
        if step.index:
            go_to(page, step.index - 1)
            expect(item).not_to_have_class(re.compile(r"\bdone\b"))
            expect(page.locator(f"[data-role=step-panel] .term-done[data-term='{name}']")).to_have_count(0)
        go_to(page, step.index)
        expect(item).to_have_class(re.compile(r"\bdone\b.*\bnow\b|\bnow\b.*\bdone\b"))
        done = page.locator(f"[data-role=step-panel] .term-done[data-term='{name}']")
        expect(done.locator("svg.formula")).to_be_visible()
        assert done.locator("svg.formula").bounding_box()["height"] >= 20            # a fraction, drawn full size
        tensor = bn_terms(t)[name][0]
        assert name in done.inner_text() and done.locator(".values td").count() == tensor.size   # its values


# ---- in a browser ---------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def open_page(browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto("file://" + str(path))
    page.wait_for_selector("[data-minidl-steps][data-ready='1'] >> nth=-1", state="attached")
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
        expect(root).to_have_attribute("data-current", str(k))      # the page has handled the click or key
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
    check(len(steps) - 1)                            # stops at the last step
    for k in reversed(range(len(steps) - 1)):
        page.keyboard.press("ArrowLeft")
        check(k)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowRight")
    check(1)                                        # Left at the first step stayed there
    page.keyboard.press("ArrowLeft")
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
        expect(page.locator(f"[data-role=complete] [data-tensor='{name}']")).to_have_count(1)
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
    assert panel.locator(".send").count() == 1 and panel.inner_text().count("already there: ") == 1
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

    def at(a, b):
        """Wait for the steppers to show steps a and b: a key is handled after press() returns, at times.
        A key that must do nothing is followed by one that acts, whose state this waits for."""
        expect(first).to_have_attribute("data-current", a)
        expect(second).to_have_attribute("data-current", b)

    def top():
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_function("window.scrollY === 0")

    first.locator("[aria-label='next step']").click()
    at("1", "0")
    for key in ("ArrowDown", "ArrowUp", "Space", "PageDown", "PageUp"):    # the page's keys: never the stepper's
        top()
        page.keyboard.press(key)
    top()
    page.keyboard.press("ArrowRight")
    at("2", "0")                                                             # one step on from the click's
    page.keyboard.press("ArrowDown")
    page.wait_for_function("window.scrollY > 0")                            # Down scrolled the page
    top()
    page.keyboard.press("End")
    at("12", "0")
    page.keyboard.press("Home")
    at("0", "0")
    second.scroll_into_view_if_needed()                                      # the first is off screen now
    page.wait_for_function("e => e.getBoundingClientRect().bottom < 0", arg=first.element_handle())
    page.keyboard.press("ArrowRight")                                        # not for the first: off screen
    second.locator(".graph > svg").click()
    page.keyboard.press("ArrowRight")
    at("0", "1")


def test_the_bn_graph_fits_a_projector_in_chromium(browser, tmp_path):
    t, dy = bn_from_basic_ops()
    md.step_through(t["y"], dy, terms=bn_terms(t)).save(str(tmp_path / "steps.html"))
    page = open_page(browser, tmp_path / "steps.html")
    root = page.locator("[data-minidl-steps]")
    for k in range(13):
        go_to(page, k)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"step {k}: the page is {width} px wide; it scrolls sideways at 1280×720"
        smallest = root.evaluate(SMALLEST_TEXT)[0]
        assert smallest[0] >= 12, f"step {k + 1}: {smallest[1]!r} is {smallest[0]:.1f} px tall"
        # graph, panel and the terms it completes on one screen (step 2 completes two: side by side)
        bottom = page.evaluate("""() => Math.max(...[...document.querySelectorAll(
            '[data-minidl-steps] .graph > svg, [data-minidl-steps] [data-role=step-panel] *')]
            .map(e => e.getBoundingClientRect().bottom))""")
        assert bottom <= 720, f"step {k + 1}: the page reaches {bottom:.0f} px, below a 1280×720 screen"
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
    expect(second).to_have_attribute("data-current", "2")
    expect(first).to_have_attribute("data-current", "0")
    first.locator(".graph > svg").click()                    # clicked last: the first
    page.keyboard.press("ArrowRight")
    expect(first).to_have_attribute("data-current", "1")
    expect(second).to_have_attribute("data-current", "2")
    assert second.locator("[data-role=step-panel]").inner_text().startswith("Step 3 of 3")
