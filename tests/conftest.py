"""Shared fixtures: every test that takes ``backend`` runs once per available
backend (CuPy cases skip where CuPy or a GPU is absent)."""
import os
import subprocess
import sys

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_standin")


def _real_gpu():
    """Whether real CuPy runs a kernel here (asked in a subprocess, so this one stays clean)."""
    code = "import cupy; (cupy.arange(3) * 2).sum().item()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# MINIDL_BACKEND=cupy with no GPU: the whole suite runs against the CuPy stand-in
# (tests/cupy_standin), and so do the lessons the tests start in subprocesses and kernels.
STANDIN_ACTIVE = os.environ.get("MINIDL_BACKEND") == "cupy" and not _real_gpu()
if STANDIN_ACTIVE:
    sys.path.insert(0, STANDIN)
    os.environ["PYTHONPATH"] = os.pathsep.join([STANDIN] + [p for p in [os.environ.get("PYTHONPATH")] if p])

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import minidl as md  # noqa: E402


@pytest.fixture(params=["numpy", "cupy"])
def backend(request):
    if request.param == "cupy" and not md.cupy_available():
        pytest.skip("CuPy with a GPU is not available")
    before = md.get_backend()
    md.use_backend(request.param)
    try:
        yield request.param
    finally:
        md.use_backend(before)


@pytest.fixture(autouse=True)
def _no_checks_left_over():
    """A check queued on the GPU and never read (a test that provoked NaN on purpose)
    must not fail the next test."""
    yield
    md.backend._pending.clear()


def host(a):
    """A NumPy copy of a tensor or array from either device (for assertions)."""
    return md.backend.as_numpy(a.data if isinstance(a, md.Tensor) else a)


def randn(*shape, seed=0, dtype=np.float64, positive=False):
    # offset: gradcheck draws its upstream gradient from default_rng(0); inputs must differ
    x = np.random.default_rng(seed + 1000).standard_normal(shape).astype(dtype)
    return np.abs(x) + 0.5 if positive else x


def check_op(fn, shapes, np_fn=None, positive=False, seed=0, atol=1e-5, rtol=1e-3, **kw):
    """float64 gradcheck with a random upstream gradient, then (if ``np_fn``)
    the float32 forward against NumPy, keeping float32."""
    arrays = [randn(*s, seed=seed + i, positive=positive) for i, s in enumerate(shapes)]
    report = md.gradcheck(fn, [md.Tensor(a) for a in arrays], atol=atol, rtol=rtol, **kw)
    assert not any(r.vacuous for r in report.inputs), f"vacuous check:\n{report}"
    if np_fn is not None:
        a32 = [a.astype(np.float32) for a in arrays]
        y = fn(*[md.Tensor(a) for a in a32])
        assert y.dtype == np.float32, f"float32 inputs gave {y.dtype}"
        np.testing.assert_allclose(y.numpy(), np_fn(*a32), rtol=1e-5, atol=1e-5)


def against_torch(ours, theirs, shapes, seed=0, grad=True):
    """ours(*Tensors) and theirs(torch, *torch tensors) on the same float64 inputs:
    the same values, shape and dtype, and the same gradients for a random upstream
    gradient. A (values, indices) result compares both, the gradient through values."""
    torch = pytest.importorskip("torch")
    arrays = [randn(*s, seed=seed + k) for k, s in enumerate(shapes)]
    x_md = [md.Tensor(a, requires_grad=grad) for a in arrays]
    x_t = [torch.tensor(a, requires_grad=grad) for a in arrays]
    y_md, y_t = ours(*x_md), theirs(torch, *x_t)
    if isinstance(y_t, tuple):                    # torch.return_types: (values, indices)
        assert isinstance(y_md, tuple) and y_md._fields == ("values", "indices")
        np.testing.assert_array_equal(host(y_md.indices), y_t.indices.numpy())
        assert y_md.indices.dtype == np.int64
        y_md, y_t = y_md.values, y_t.values
    assert y_md.shape == tuple(y_t.shape), f"shape {y_md.shape}, PyTorch's {tuple(y_t.shape)}"
    assert str(y_md.dtype) == str(y_t.dtype).replace("torch.", "")
    np.testing.assert_allclose(host(y_md), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    if grad:
        up = np.random.default_rng(seed + 7).standard_normal(y_md.shape)
        y_md.backward(md.Tensor(up))
        y_t.backward(torch.tensor(up))
        for a, b in zip(x_md, x_t):
            if b.grad is None:                    # an input used outside the graph (a mask)
                assert a.grad is None
                continue
            np.testing.assert_allclose(host(a.grad), b.grad.numpy(), rtol=1e-10, atol=1e-12)


os.environ.setdefault("MINIDL_PROGRESS", "0")    # no progress bars in test logs

try:   # property-based tests: fixed seed and few examples by default, more with --hypothesis-profile=thorough
    from hypothesis import HealthCheck, settings
    settings.register_profile("default", max_examples=20, derandomize=True, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("thorough", max_examples=400, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
except ImportError:
    pass


# ---- why tests skip, and the skips CI refuses -------------------------------------
CUPY_SKIP = "CuPy with a GPU is not available"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


def _skip_reason(report):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true, as .ci/run sets it) a test that skips for want of PyTorch fails:
    the comparisons with PyTorch are what prove the engine, and a clean environment
    without torch would otherwise pass them all by skipping."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and "could not import 'torch'" in _skip_reason(report):
        report.outcome = "failed"
        report.longrepr = (f"{_skip_reason(report)}: CI runs every comparison with PyTorch; install it "
                           "(.ci/run installs torch==2.13.0, CPU)")


def pytest_terminal_summary(terminalreporter):
    """One line per reason a test skipped; the CuPy cases (every test's cupy parameter
    where no GPU is visible) in one line that says so."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = {}
    for report in skipped:
        reason = _skip_reason(report)
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section("why tests skipped", sep="-")
    cupy = reasons.pop(CUPY_SKIP, 0)
    if cupy:
        terminalreporter.line(f"{cupy} skipped: the CuPy cases (the backend fixture's 'cupy' parameter), as no "
                              "GPU is visible here; MINIDL_BACKEND=cupy runs the whole suite on the CuPy "
                              "stand-in (.ci/run's second pass)")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.line(f"{n} skipped: {reason}")
