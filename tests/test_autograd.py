"""The engine itself: graph order, accumulation, dtypes, devices, errors."""
import numpy as np
import pytest

import minidl as md
from conftest import host
from minidl import backend as B


def grad(t):
    return B.as_numpy(t.grad)


def test_diamond_graph_accumulates(backend):
    x = md.Tensor([3.0], requires_grad=True)
    y = x * x + x          # dy/dx = 2x + 1: both paths must add
    y.backward()
    np.testing.assert_allclose(grad(x), [7.0])


def test_chain_of_10000_ops_needs_no_recursion(backend):
    x = md.Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    y.backward()
    np.testing.assert_allclose(grad(x), [1.0])
    assert y.item() == 10_001.0


def test_gradients_accumulate_across_backward_calls_until_zero_grad(backend):
    x = md.Tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(grad(x), [3 + 2, 3 + 4])
    x.zero_grad()
    assert x.grad is None


def test_second_backward_through_the_same_graph_adds_again(backend):
    x = md.Tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    loss.backward()
    np.testing.assert_allclose(grad(x), 2 * np.array([2.0, 4.0]))


def test_intermediate_tensors_keep_no_grad(backend):
    x = md.Tensor([1.0], requires_grad=True)
    h = x * 2.0
    (h * h).backward()
    assert h.grad is None and grad(x)[0] == 8.0


def test_non_scalar_backward_needs_upstream_gradient(backend):
    x = md.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\).*pass grad="):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"upstream gradient has shape \(3,\), expected"):
        (x * 2.0).backward(np.ones(3))
    (x * 2.0).backward(np.full((2, 3), 0.5))
    np.testing.assert_allclose(grad(x), np.ones((2, 3)))


def test_no_grad_records_nothing(backend):
    x = md.Tensor([1.0], requires_grad=True)
    with md.no_grad():
        y = x * 2.0
    assert y.creator is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        y.backward()


def test_backward_of_nan_loss_is_an_error(backend):
    x = md.Tensor([-1.0], requires_grad=True)
    with np.errstate(invalid="ignore"), pytest.raises(FloatingPointError, match="the loss is NaN or inf"):
        x.log().sum().backward()
        md.backend.check_pending()   # on a GPU the check is read at the step's one synchronization


def test_detect_anomaly_names_the_op(backend):
    x = md.Tensor([-1.0, 1.0])
    with md.detect_anomaly(), np.errstate(invalid="ignore"), \
            pytest.raises(FloatingPointError, match="Log: produced NaN"):
        x.log()


def test_python_values_are_float32_and_arrays_keep_dtype(backend):
    assert md.Tensor([1, 2]).dtype == np.float32
    assert md.Tensor(3.0).dtype == np.float32
    assert md.Tensor(np.zeros(2)).dtype == np.float64
    assert md.Tensor(np.zeros(2, dtype=np.int64)).dtype == np.int64


@pytest.mark.parametrize("fn", [
    lambda x: x * 2.5, lambda x: 1.0 - x, lambda x: x / 3.0, lambda x: x ** 2,
    lambda x: x * np.float64(2.0), lambda x: x.mean(), lambda x: x.var(axis=0),
    lambda x: x.sqrt(), lambda x: x.softmax(), lambda x: md.functional.maximum(x, 0.5),
    lambda x: x.max(axis=1),
])
def test_float32_work_stays_float32(backend, fn):
    x = md.Tensor(np.abs(np.random.default_rng(0).standard_normal((3, 4))).astype(np.float32),
                  requires_grad=True)
    y = fn(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_mixed_float_dtypes_are_an_error_not_a_promotion(backend):
    a = md.Tensor(np.ones(2, dtype=np.float32))
    b = md.Tensor(np.ones(2, dtype=np.float64))
    with pytest.raises(TypeError, match=r"Add: inputs have different float dtypes \(float32, float64\)"):
        a + b


def test_shape_errors_name_the_op_and_shapes(backend):
    a, b = md.Tensor(np.ones((2, 3))), md.Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4, 3\) do not broadcast"):
        a + b
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 3\) do not fit"):
        a @ b
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match=r"mse_loss: pred has shape \(4, 1\) but target has shape \(4,\)"):
        md.functional.mse_loss(md.Tensor(np.ones((4, 1))), np.ones(4))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must be class indices in \[0, 3\) "
                                         r"for logits of shape \(2, 3\)"):
        md.functional.cross_entropy(md.Tensor(np.ones((2, 3))), np.array([0, 3]))
        md.backend.check_pending()   # read at the step's one synchronization on a GPU
    with pytest.raises(ValueError, match=r"where: shapes \(2, 3\) and \(4, 3\) do not broadcast"):
        md.functional.where(np.ones((2, 3), bool), a, b)
    with pytest.raises(ValueError, match="sum: axis 2 is out of range"):
        a.sum(axis=2)


def test_tensor_basics(backend):
    x = md.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and x.dtype == np.float64
    assert isinstance(x.numpy(), np.ndarray)
    assert x.T.shape == (3, 2)
    assert md.Tensor([[2.5]]).item() == 2.5
    d = x.detach()
    assert not d.requires_grad and d.creator is None
    assert "requires_grad=True" in repr(x) and "grad_fn=Mul" in repr(x * 2.0)
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        md.Tensor(np.arange(3), requires_grad=True)


def test_tensor_copies_the_callers_array():
    a = np.zeros(3)
    t = md.Tensor(a)
    t.data += 1
    assert a.sum() == 0


def test_numpy_array_on_the_left_uses_the_tensor_op():
    x = md.Tensor(np.ones(2), requires_grad=True)
    if x.device == "gpu":     # a host array never meets a device array silently
        with pytest.raises(md.DeviceMismatchError, match=r"Mul: inputs live on different devices \(cpu, gpu\)"):
            np.full(2, 3.0) * x
        return
    y = np.full(2, 3.0) * x
    assert isinstance(y, md.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(host(x.grad), [3.0, 3.0])


class _FakeGpuArray(np.ndarray):
    """Stands in for a CuPy array so the device check is testable without a GPU."""


@pytest.mark.skipif(md.cupy_available(), reason="a GPU (or the stand-in) is here: the test above meets it for real")
def test_mixing_devices_names_the_op_and_both_devices(monkeypatch):
    real = B.device_of
    monkeypatch.setattr(B, "device_of",
                        lambda a: "gpu" if isinstance(a, _FakeGpuArray) else real(a))
    cpu = md.Tensor(np.ones(3))
    gpu = md.Tensor._wrap(np.ones(3).view(_FakeGpuArray))
    with pytest.raises(md.DeviceMismatchError, match=r"Mul: inputs live on different devices \(cpu, gpu\)"):
        cpu * gpu


@pytest.mark.skipif(md.cupy_available(), reason="CuPy is available here")
def test_asking_for_cupy_without_it_says_how_to_install():
    with pytest.raises(md.BackendError, match="pip install cupy-cuda12x"):
        md.use_backend("cupy")
    assert md.get_backend() == "numpy"
    with pytest.raises(md.BackendError, match="cupy"):
        md.Tensor([1.0]).to("gpu")
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        md.use_backend("torch")


def test_to_cpu_and_back(backend):
    x = md.Tensor([1.0, 2.0], requires_grad=True)
    y = x.to("cpu")
    assert isinstance(y.data, np.ndarray)
    (y * 2.0).sum().backward()
    np.testing.assert_allclose(grad(x), [2.0, 2.0])


def test_gradcheck_catches_a_wrong_backward_and_prints_the_table():
    class BadSquare(md.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return gy * self.x        # wrong: should be 2x

    x = md.Tensor(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(md.GradcheckError, match="FAILED") as e:
        md.gradcheck(lambda x: BadSquare()(x), [x])
    assert "analytic" in str(e.value) and "rel.error" in str(e.value)
    report = md.gradcheck(lambda x: BadSquare()(x), [x], raise_on_failure=False)
    assert not report.passed and report.inputs[0].band == "wrong"


def test_gradcheck_restores_inputs_and_warns_at_a_kink():
    x = md.Tensor(np.array([0.0, 1.0, -2.0], dtype=np.float32))
    with pytest.warns(RuntimeWarning, match="kink"):
        md.gradcheck(lambda x: x.relu(), [x], raise_on_failure=False)
    assert x.dtype == np.float32 and x.grad is None and not x.requires_grad


def test_gradcheck_flags_a_vacuous_check():
    x = md.Tensor(np.random.default_rng(0).standard_normal(5))
    # sum(x - mean(x)) is identically zero: every gradient is zero
    report = md.gradcheck(lambda x: (x - x.mean()).sum().reshape(1), [x])
    assert report.inputs[0].vacuous and "proves little" in str(report)


def test_numerical_grad_matches_closed_form():
    x = np.array([1.0, -2.0, 0.5])
    u = np.array([0.3, 1.0, -2.0])
    g = md.numerical_grad(lambda t: t ** 3, x, u)
    np.testing.assert_allclose(g, u * 3 * x ** 2, rtol=1e-6)


# ---- every gradient visible: retain_grad and a backward to step through ------------
def test_retain_grad_keeps_a_non_leafs_gradient_and_accumulates(backend):
    x = md.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = (x * x).retain_grad()
    y = (h * 3.0).sum()
    y.backward()
    np.testing.assert_allclose(grad(h), [3.0, 3.0, 3.0])
    y.backward()                                        # like a leaf's: a second pass adds
    np.testing.assert_allclose(grad(h), [6.0, 6.0, 6.0])
    other = x * 2.0
    y.backward()
    assert other.grad is None                           # only tensors that asked keep theirs
    with pytest.raises(RuntimeError, match="retain_grad: this tensor does not require a gradient"):
        md.Tensor([1.0]).retain_grad()


def diamond_net():
    x = md.Tensor(np.array([[0.5, -1.0], [2.0, 0.3]]), requires_grad=True)
    w = md.Tensor(np.array([[1.0, -2.0], [0.5, 0.25]]), requires_grad=True)
    h = (x @ w).tanh()
    return x, w, (h * x + h).sum()


def test_backward_steps_visit_every_op_once_after_all_its_consumers():
    x, w, y = diamond_net()
    steps = list(md.backward_steps(y))
    functions = [s.function for s in steps]
    assert len({id(f) for f in functions}) == len(functions)            # once each
    position = {id(f): k for k, f in enumerate(functions)}
    for s in steps:                              # every op that consumes this op's output came before it
        for later in steps:
            if any(x is s.output for x in later.inputs):
                assert position[id(later.function)] < position[id(s.function)]
    assert {s.op for s in steps} == {"Sum", "Add", "Mul", "Tanh", "MatMul"}
    assert steps[0].output is y and np.all(host(steps[0].grad_output) == 1)


def test_backward_steps_leave_exactly_the_gradients_backward_leaves():
    x, w, y = diamond_net()
    y.backward()
    expected = host(x.grad), host(w.grad)
    x, w, y = diamond_net()
    steps = list(md.backward_steps(y))
    np.testing.assert_array_equal(host(x.grad), expected[0])
    np.testing.assert_array_equal(host(w.grad), expected[1])
    assert repr(steps[0]).startswith("step 1: Sum") and "sends dl/d" in repr(steps[0])   # counted from 1
    assert md.steps_table(steps).splitlines()[0].split() == ["step", "op", "output", "sends", "gradients", "to"]


def test_a_backward_pass_stopped_halfway_writes_no_gradient():
    x, w, y = diamond_net()
    y.backward()
    once = host(x.grad)
    x, w, y = diamond_net()
    steps = md.backward_steps(y)
    next(steps), next(steps)
    steps.close()                                        # the teacher stops halfway
    assert x.grad is None and w.grad is None
    y.backward()                                         # then runs the whole pass: counted once
    np.testing.assert_array_equal(host(x.grad), once)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
def test_retained_gradients_of_bn_from_basic_ops_are_the_courses_terms(shape):
    from minidl.ops.norm import backward_staged
    rng = np.random.default_rng(0)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    cs = (1, shape[1]) + (1,) * (len(shape) - 2)
    x_np, g_np, b_np, dy = (rng.standard_normal(shape) * 2 + 1, 1 + rng.standard_normal(cs),
                            rng.standard_normal(cs), rng.standard_normal(shape))
    x = md.Tensor(x_np, requires_grad=True)
    mu = x.mean(axis=axes, keepdims=True).retain_grad()
    x_mu = x - mu
    var = (x_mu * x_mu).mean(axis=axes, keepdims=True).retain_grad()
    x_hat = (x_mu / (var + 1e-5) ** 0.5).retain_grad()
    (x_hat * md.Tensor(g_np) + md.Tensor(b_np)).backward(dy)
    t = backward_staged(dy, x_np, g_np, 1e-5, axes)
    for name, retained, term in (("dl/dx̂", x_hat, t.g_xhat), ("dl/dσ²", var, t.g_var), ("dl/dμ", mu, t.g_mu),
                                 ("dl/dx", x, t.g_x)):
        np.testing.assert_allclose(host(retained.grad), term, rtol=1e-9, atol=1e-12, err_msg=name)


def test_no_grad_in_one_thread_leaves_another_threads_graph_alone():
    # a Dask worker runs runs in threads: one evaluating under no_grad() while another trains
    import threading
    inside, release = threading.Event(), threading.Event()

    def evaluate():
        with md.no_grad():
            inside.set()
            release.wait(10)
    t = threading.Thread(target=evaluate)
    t.start()
    try:
        inside.wait(10)
        x = md.Tensor(np.ones(3), requires_grad=True)
        (x * x).sum().backward()
        assert np.allclose(x.grad, 2.0)
    finally:
        release.set()
        t.join()
