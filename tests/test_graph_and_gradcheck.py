"""md.draw_graph (the computational graph as a picture) and md.gradcheck on a
layer, the obvious way."""
import re
import shutil

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import randn, host


def test_draw_graph_shows_every_op_and_tensor_with_shapes_dtypes_and_grad_norms():
    x = md.Tensor(randn(3, 2), requires_grad=True)
    w = md.Tensor(randn(2, 4, seed=1), requires_grad=True)
    y = (x @ w).relu().sum()
    before = md.draw_graph(y, names={"x": x, "W": w})
    for label in ("x @ W", "ReLU(x @ W)", "Σ ReLU(x @ W)"):      # an unnamed tensor: its op on its inputs
        assert f'label="{label}\\n' in before
    assert "x\\n(3, 2) float64" in before and "W\\n(2, 4) float64" in before
    assert "grad" not in before and "rankdir=LR" in before       # left to right: a screen is wide
    y.backward()
    after = md.draw_graph(y, names={"x": x, "W": w})
    norm = np.sqrt((host(w.grad) ** 2).sum())
    assert f"grad norm {norm:.4g}" in after and "‖" not in after   # 8 values: their norm (no ‖: "ll" in Graphviz)
    assert "x\\n(3, 2) float64\\ngrad [" in after                # 6 values: the values
    assert after.count("shape=box") == 5 and after.count(" -> ") == 4


def test_draw_graph_folds_constants_into_their_ops_and_reads_a_division():
    x = md.Tensor(randn(4, 3), requires_grad=True)
    x.name = "x"
    mu = x.mean(axis=0, keepdims=True)
    mu.name = "μ"
    s = ((x - mu) ** 2 * 2 + 1e-5) ** 0.5
    s.name = "s"
    dot = md.draw_graph(x / s)
    for label in ("× 1/4\\nμ", "−μ", "x − μ", "(x − μ)²", "(x − μ)² × 2", "(x − μ)² × 2 + 1e−05", "^ ½\\ns",
                  "1/s", "x / s"):
        assert f'label="{label}\\n' in dot, label
    # x, Σx, μ, −μ, x − μ, ^ 2, × 2, + ε, s, 1/s, x / s: the numbers 1/4, 2, 2, 1e-05 are no boxes
    assert dot.count("shape=box") == 11


def test_draw_graph_marks_one_step_of_the_backward_pass():
    x = md.Tensor(randn(3, 2), requires_grad=True)
    x.name = "x"
    h = x.tanh()
    h.name = "h"
    y = (h * h).sum()
    steps = list(md.backward_steps(y))
    tanh = next(s for s in steps if s.op == "Tanh")
    dot = md.draw_graph(y, step=tanh)
    assert dot.count('fillcolor="#f4a259"') == 1 and 'fillcolor="#f4a259", label="Tanh\\nh\\n' in dot
    g_h = np.array2string(host(tanh.grad_output).ravel(), precision=3, separator=" ")
    assert f"h\\n(3, 2) float64\\ngrad {g_h}" in dot           # the upstream gradient at h, not retained
    assert dot.count('fillcolor="#fde2c0"') == 1                  # x, the input it sends to


def test_draw_graph_says_what_it_needs():
    with pytest.raises(TypeError, match="draw_graph: expected the Tensor whose graph to draw, got ndarray"):
        md.draw_graph(np.ones(3))


def test_draw_graph_of_a_diamond_draws_the_shared_input_once():
    x = md.Tensor(randn(2), requires_grad=True)
    g = md.draw_graph(x * x + x)
    assert g.count(f"t{id(x)} [") == 1 and g.count(f"t{id(x)} -> ") == 3


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_graph_renders_png_and_svg_with_graphviz(tmp_path):
    y = F.normalize(md.Tensor(randn(4, 3), requires_grad=True), (0,))
    md.draw_graph(y, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "g.dot").exists()
    svg = md.draw_graph(y)._repr_mimebundle_()["image/svg+xml"]
    assert re.search(r'<svg style="max-width:100%;height:auto"[^>]* width="\d+pt"', svg)   # never wider than a notebook


def test_draw_graph_draws_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))           # no dot anywhere: minidl's own layout draws
    x = md.Tensor(randn(4, 3), requires_grad=True)
    y = (x - x.mean(axis=0, keepdims=True)).exp()
    graph = md.draw_graph(y)
    assert graph.render(str(tmp_path / "g.png")) == str(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "g.dot").exists()
    svg = graph._repr_mimebundle_()["image/svg+xml"]
    assert svg.startswith("<svg") and svg.count('class="node') == 6 and "× 1/4" in svg
    graph.render(str(tmp_path / "g.svg"))
    assert (tmp_path / "g.svg").read_text() == svg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradcheck_of_a_float32_layer_the_obvious_way(dtype):
    bn = md.nn.BatchNorm2d(3)                           # float32 parameters and buffers
    x = md.Tensor(randn(4, 3, 2, 2).astype(dtype))
    running = bn.running_mean.numpy().copy()
    closure = md.gradcheck(lambda x: bn(x), [x])
    assert [r.name for r in closure.inputs] == ["input0"]
    layer = md.gradcheck(bn, [x])
    assert [r.name for r in layer.inputs] == ["input0", "gamma", "beta"]
    assert not any(r.vacuous for r in layer.inputs)
    # everything restored: dtypes, values, no gradients left behind, running statistics untouched
    assert bn.gamma.dtype == np.float32 and bn.running_var.dtype == np.float32 and x.dtype == dtype
    assert bn.gamma.grad is None
    np.testing.assert_array_equal(bn.running_mean.numpy(), running)


def test_gradcheck_of_a_whole_model():
    md.manual_seed(0)
    model = md.nn.Sequential(md.nn.Linear(3, 4), md.nn.Tanh(), md.nn.Linear(4, 2))
    report = md.gradcheck(model, [md.Tensor(randn(5, 3))])
    assert [r.name for r in report.inputs] == ["input0", "0.weight", "0.bias", "2.weight", "2.bias"]
    assert model[0].weight.dtype == np.float32


def test_lenet5_says_which_input_size_to_pass():
    model = md.models.LeNet5(in_channels=1)
    with pytest.raises(ValueError, match=r"got \(2, 1, 28, 28\): pass input_size=28 to LeNet5"):
        model(md.Tensor(np.zeros((2, 1, 28, 28), np.float32)))
    assert md.models.LeNet5(in_channels=1, input_size=28)(md.Tensor(np.zeros((2, 1, 28, 28), np.float32))).shape == (2, 10)
