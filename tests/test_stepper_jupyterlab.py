"""The stepper inside a real JupyterLab, as a class sees it projected: a
1280×720 window with the file browser open, the notebook's cell run, the
stepper clicked and driven with its keys in command mode. Skips where
JupyterLab or Chromium is missing."""
import importlib.util
import os
import re
import shutil

import pytest

from jupyterlab_server import jupyterlab, write_notebook
from stepper_pages import SMALLEST_TEXT, chromium, expect

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed (pip install '.[test]')")
    yield from chromium()


@pytest.fixture
def notebook(browser, tmp_path):
    """A notebook in JupyterLab whose second cell has shown BN's stepper; the page, the stepper."""
    shutil.copy(os.path.join(HERE, "stepper_pages.py"), tmp_path)       # the kernel imports it from the notebook's folder
    write_notebook(tmp_path / "steps.ipynb", ["# The backward pass", "from stepper_pages import bn_stepper\nbn_stepper()"],
                   markdown=[0])
    with jupyterlab(tmp_path) as (url, token):
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        try:
            start = 120_000             # ms: a kernel starts in seconds, in a minute on a loaded machine
            page.set_default_timeout(start)
            page.goto(f"{url}/lab/tree/steps.ipynb?token={token}")
            expect(page.locator(".jp-StatusBar-Item", has_text=re.compile(r"\(ipykernel\) \| Idle"))).to_be_visible(timeout=start)
            page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            stepper = page.locator("[data-minidl-steps][data-ready='1']")
            expect(stepper).to_be_attached(timeout=start)
            page.set_default_timeout(10_000)
            stepper.evaluate("e => e.scrollIntoView({block: 'start'})")       # as the teacher scrolls to it
            yield page, stepper
        finally:
            page.close()


def cell_selection(page):
    return page.evaluate("[...document.querySelectorAll('.jp-Notebook .jp-Cell')]"
                         ".findIndex(c => c.classList.contains('jp-mod-active'))")


def test_the_stepper_is_readable_and_driven_inside_jupyterlab(notebook):
    page, stepper = notebook
    assert page.locator(".jp-FileBrowser").is_visible()                      # the file browser open, at 1280×720
    # it uses the height it is given: at its first step it fills the notebook's visible height below its top
    room = page.evaluate("document.querySelector('.jp-WindowedPanel-outer').getBoundingClientRect().bottom")
    box = stepper.bounding_box()
    assert box["y"] < 200 and box["y"] + box["height"] >= room
    n = int(stepper.get_attribute("data-steps"))
    for k in range(n):                                                       # no text under 12 px, at any step
        stepper.locator("input[type=range]").evaluate(f"r => {{ r.value = '{k}'; r.dispatchEvent(new Event('input')); }}")
        expect(stepper).to_have_attribute("data-current", str(k))
        smallest = stepper.evaluate(SMALLEST_TEXT)[0]
        assert smallest[0] >= 12, f"step {k + 1}: {smallest[1]!r} is {smallest[0]:.1f} px tall in JupyterLab"
    # step 1's three blocks (what arrives at y, what goes to x̂ × γ and to β) share one row of the
    # output area: "already there" never widens a block (on a second row the panel ended 90 px lower)
    stepper.locator("input[type=range]").evaluate("r => { r.value = '0'; r.dispatchEvent(new Event('input')); }")
    tops = stepper.evaluate("r => [...r.querySelectorAll('[data-role=step-panel] .flow > div')].map(d => d.getBoundingClientRect().top)")
    assert len(tops) == 3 and max(tops) - min(tops) < 1, tops
    # the graph keeps its size and scrolls sideways in the output area, rather than shrinking
    svg = stepper.locator(".graph > svg")
    assert svg.bounding_box()["width"] >= float(stepper.get_attribute("data-width"))

    stepper.locator("input[type=range]").evaluate("r => { r.value = '0'; r.dispatchEvent(new Event('input')); }")
    stepper.locator("[aria-label='next step']").click()
    expect(stepper).to_have_attribute("data-current", "1")
    stepper.locator("[aria-label='previous step']").click()
    expect(stepper).to_have_attribute("data-current", "0")
    stepper.locator(".graph > svg").click()
    expect(page.locator(".jp-Notebook.jp-mod-commandMode")).to_have_count(1)   # JupyterLab's command mode
    selected = cell_selection(page)
    # the keys the stepper handles stop there: JupyterLab would move the cell selection with them
    page.evaluate("""() => { window.__reached = [];
        document.querySelector('.jp-Notebook').addEventListener('keydown', e => window.__reached.push(e.key)); }""")
    for key, at in (("ArrowRight", "1"), ("ArrowRight", "2"), ("End", str(n - 1)), ("ArrowLeft", str(n - 2)),
                    ("Home", "0"), ("ArrowLeft", "0"), ("ArrowRight", "1")):
        page.keyboard.press(key)
        expect(stepper).to_have_attribute("data-current", at)
    assert page.evaluate("window.__reached") == [] and cell_selection(page) == selected
    expect(stepper.locator("[data-role=terms] li.done")).to_have_count(3)       # dl/dβ, dl/dγ, dl/dx̂ by step 2
