"""Shared fixtures: every test that takes ``backend`` runs once per available
backend (CuPy cases skip where CuPy or a GPU is absent)."""
import os

import numpy as np
import pytest

import minidl as md


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


os.environ.setdefault("MINIDL_PROGRESS", "0")    # no progress bars in test logs

try:   # property-based tests: fixed seed and few examples by default, more with --hypothesis-profile=thorough
    from hypothesis import HealthCheck, settings
    settings.register_profile("default", max_examples=20, derandomize=True, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("thorough", max_examples=400, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
except ImportError:
    pass
