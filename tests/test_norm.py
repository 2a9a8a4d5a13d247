"""The normalization family against plain-NumPy references of its formula,
gradchecked in train and eval with a random upstream gradient; the three
BatchNorm backwards agree; running statistics follow the EMA closed form and
stay untouched by gradcheck."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl.ops import norm as N
from conftest import randn, host


def np_normalize(x, axes, eps=1e-5):
    mu = x.mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def randomize_affine(layer, seed=5):
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.data = md.backend.to_device((1 + 0.5 * rng.standard_normal(p.shape)).astype(p.dtype), p.device)
    return layer


def as64(layer):
    return randomize_affine(layer.astype("float64"))


def gradcheck_layer(layer, x_shape, seed=0):
    x = md.Tensor(randn(*x_shape, seed=seed))
    report = md.gradcheck(lambda x, *params: layer(x), [x] + layer.parameters())
    assert not any(r.vacuous for r in report.inputs), f"vacuous check:\n{report}"
    return report


SHAPES = [(6, 4), (4, 3, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_train_matches_numpy_and_gradchecks(backend, shape):
    bn = as64(md.nn.BatchNorm1d(shape[1]) if len(shape) == 2 else md.nn.BatchNorm2d(shape[1]))
    x = randn(*shape)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    cs = (1, shape[1]) + (1,) * (len(shape) - 2)
    y = bn(md.Tensor(x)).numpy()
    expected = np_normalize(x, axes) * bn.gamma.numpy().reshape(cs) + bn.beta.numpy().reshape(cs)
    np.testing.assert_allclose(y, expected, atol=1e-12)
    before = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    gradcheck_layer(bn, shape)
    np.testing.assert_array_equal(bn.running_mean.numpy(), before[0])
    np.testing.assert_array_equal(bn.running_var.numpy(), before[1])


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_eval_is_the_affine_map_and_gradchecks(backend, shape):
    bn = as64(md.nn.BatchNorm1d(shape[1]) if len(shape) == 2 else md.nn.BatchNorm2d(shape[1]))
    for seed in range(3):
        bn(md.Tensor(randn(*shape, seed=seed) * 2 + 1))
    bn.eval()
    x = randn(*shape, seed=9)
    cs = (1, shape[1]) + (1,) * (len(shape) - 2)
    rm, rv = bn.running_mean.numpy().reshape(cs), bn.running_var.numpy().reshape(cs)
    expected = (x - rm) / np.sqrt(rv + 1e-5) * bn.gamma.numpy().reshape(cs) + bn.beta.numpy().reshape(cs)
    np.testing.assert_allclose(bn(md.Tensor(x)).numpy(), expected, atol=1e-12)
    gradcheck_layer(bn, shape)
    gradcheck_layer(bn, (1,) + shape[1:])   # eval mode works on a single sample


@pytest.mark.parametrize("axes, shape", [((0,), (8, 3)), ((0, 2, 3), (4, 3, 3, 3))])
def test_three_batchnorm_backwards_agree_and_gradcheck(backend, axes, shape):
    x, dy = randn(*shape), randn(*shape, seed=1)
    cs = (1, shape[1]) + (1,) * (len(shape) - 2)
    gamma, beta = randn(*cs, seed=2), randn(*cs, seed=3)
    xp = md.backend.get_array_module(md.Tensor(x).data)
    x_, dy_, g_ = (xp.asarray(a) for a in (x, dy, gamma))
    t = N.backward_staged(dy_, x_, g_, 1e-5, axes)
    staged = (t.g_x, t.g_gamma, t.g_beta)
    compact = N.backward_compact(dy_, t.x_hat, t.sigma, g_, axes)
    t = [md.Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    N.batch_norm_reference(*t, axes=axes).backward(dy)
    auto = tuple(a.grad for a in t)
    for s, c, a in zip(staged, compact, auto):
        np.testing.assert_allclose(md.backend.as_numpy(s), md.backend.as_numpy(c), rtol=0, atol=1e-10)
        np.testing.assert_allclose(md.backend.as_numpy(c), md.backend.as_numpy(a), rtol=0, atol=1e-10)
    for form in ("staged", "compact"):
        report = md.gradcheck(lambda x, g, b: N.normalize(x, axes, g, b, backward=form),
                              [md.Tensor(a) for a in (x, gamma, beta)])
        assert not report.inputs[0].vacuous
    md.gradcheck(lambda x, g, b: N.batch_norm_reference(x, g, b, axes=axes),
                 [md.Tensor(a) for a in (x, gamma, beta)])


def test_ones_upstream_proves_nothing_for_batchnorm():
    x = md.Tensor(randn(8, 3), requires_grad=True)
    F.batch_norm(x).sum().backward()        # d(sum of normalized x)/dx is exactly 0
    assert np.abs(host(x.grad)).max() < 1e-12


def test_ema_after_k_steps_matches_closed_form(backend):
    decay, k = 0.9, 5
    bn = md.nn.BatchNorm2d(3, decay=decay).astype("float64")
    batches = [randn(4, 3, 2, 2, seed=s) * (s + 1) + s for s in range(k)]
    for b in batches:
        bn(md.Tensor(b))
    means = [b.mean(axis=(0, 2, 3)) for b in batches]
    vars_ = [b.var(axis=(0, 2, 3), ddof=1) for b in batches]     # unbiased, as PyTorch stores
    def closed(v0, ys):
        return decay ** k * v0 + (1 - decay) * sum(decay ** (k - i) * y for i, y in enumerate(ys, 1))
    np.testing.assert_allclose(bn.running_mean.numpy(), closed(0.0, means), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), closed(1.0, vars_), rtol=1e-12)


def test_track_running_stats_false_uses_batch_stats_in_eval():
    bn = md.nn.BatchNorm1d(3, track_running_stats=False).eval()
    x = randn(5, 3).astype(np.float32)
    np.testing.assert_allclose(bn(md.Tensor(x)).numpy(), np_normalize(x, (0,)), atol=1e-5)
    assert bn.named_buffers() == []


def test_batchnorm_errors_explain_themselves():
    with pytest.raises(TypeError, match=r"PyTorch's momentum m .* decay = 1 − m.*homework"):
        md.nn.BatchNorm2d(3, momentum=0.1)
    with pytest.raises(TypeError, match="Pass decay= instead"):
        md.nn.BatchNorm(3, 4, momentum=0.9)
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected more than 1 value per channel when "
                                         r"training, got input of shape \(1, 3\)"):
        md.nn.BatchNorm1d(3)(md.Tensor(np.ones((1, 3), np.float32)))
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input of shape \(N, 3, H, W\), got \(2, 3\)"):
        md.nn.BatchNorm2d(3)(md.Tensor(np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="20 channels cannot be split into 6 groups"):
        md.nn.GroupNorm(6, 20)
    bn = md.nn.BatchNorm1d(2)
    with pytest.raises(FloatingPointError, match="NaN"):
        bn(md.Tensor(np.array([[np.nan, 1.0], [0.0, 2.0]], np.float32)))
        md.backend.check_pending()         # on a GPU: read at the step's one synchronization
    np.testing.assert_array_equal(bn.running_mean.numpy(), [0, 0])


def test_homework_signature_builds_the_matching_layer():
    fc, conv = md.nn.BatchNorm(4, 2), md.nn.BatchNorm(4, 4, decay=0.99)
    assert isinstance(fc, md.nn.BatchNorm) and conv.decay == 0.99
    assert fc(md.Tensor(randn(3, 4, dtype=np.float32))).shape == (3, 4)
    assert conv(md.Tensor(randn(3, 4, 2, 2, dtype=np.float32))).shape == (3, 4, 2, 2)
    with pytest.raises(ValueError, match=r"BatchNorm: expected input of shape \(N, 4\), got \(3, 4, 2, 2\)"):
        fc(md.Tensor(randn(3, 4, 2, 2, dtype=np.float32)))
    with pytest.raises(ValueError, match="num_dims must be 2"):
        md.nn.BatchNorm(4, 3)


def test_layer_norm(backend):
    ln = as64(md.nn.LayerNorm((3, 4)))
    x = randn(2, 5, 3, 4)
    expected = np_normalize(x, (2, 3)) * ln.gamma.numpy() + ln.beta.numpy()
    np.testing.assert_allclose(ln(md.Tensor(x)).numpy(), expected, atol=1e-12)
    gradcheck_layer(ln, (2, 5, 3, 4))


def test_instance_norm(backend):
    inorm = as64(md.nn.InstanceNorm2d(3, affine=True))
    x = randn(2, 3, 4, 4)
    g, b = inorm.gamma.numpy().reshape(1, 3, 1, 1), inorm.beta.numpy().reshape(1, 3, 1, 1)
    np.testing.assert_allclose(inorm(md.Tensor(x)).numpy(), np_normalize(x, (2, 3)) * g + b, atol=1e-12)
    gradcheck_layer(inorm, (2, 3, 4, 4))
    gradcheck_layer(md.nn.InstanceNorm2d(3).astype("float64"), (2, 3, 3, 3))


def test_group_norm(backend):
    gn = as64(md.nn.GroupNorm(2, 6))
    x = randn(3, 6, 3, 3)
    ref = np_normalize(x.reshape(3, 2, 3, 3, 3), (2, 3, 4)).reshape(x.shape)
    ref = ref * gn.gamma.numpy().reshape(1, 6, 1, 1) + gn.beta.numpy().reshape(1, 6, 1, 1)
    np.testing.assert_allclose(gn(md.Tensor(x)).numpy(), ref, atol=1e-12)
    gradcheck_layer(gn, (3, 6, 3, 3))
    gradcheck_layer(as64(md.nn.GroupNorm(3, 6)), (4, 6))


def np_switch_norm(x, mw, vw, gamma, beta, running=None, eps=1e-5):
    """Switchable Normalization's statistics computed directly from x."""
    w, v = np.exp(mw) / np.exp(mw).sum(), np.exp(vw) / np.exp(vw).sum()
    mean_in, var_in = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    mean_ln, var_ln = x.mean((1, 2, 3), keepdims=True), x.var((1, 2, 3), keepdims=True)
    if running is None:
        mean_bn, var_bn = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    else:
        mean_bn, var_bn = (r.reshape(1, -1, 1, 1) for r in running)
    mu = w[0] * mean_in + w[1] * mean_ln + w[2] * mean_bn
    s2 = v[0] * var_in + v[1] * var_ln + v[2] * var_bn
    return (x - mu) / np.sqrt(s2 + eps) * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)


def test_switch_norm_train_and_eval(backend):
    sn = as64(md.nn.SwitchNorm2d(3))
    x = randn(4, 3, 3, 3)
    params = [p.numpy() for p in (sn.mean_weight, sn.var_weight, sn.gamma, sn.beta)]
    expected = np_switch_norm(x, *params)
    np.testing.assert_allclose(sn(md.Tensor(x)).numpy(), expected, atol=1e-10)
    m = 4 * 9
    np.testing.assert_allclose(sn.running_mean.numpy(), 0.1 * x.mean((0, 2, 3)), atol=1e-12)
    np.testing.assert_allclose(sn.running_var.numpy(), 0.9 + 0.1 * x.var((0, 2, 3)) * m / (m - 1), atol=1e-12)
    before = sn.running_mean.numpy().copy()
    gradcheck_layer(sn, (4, 3, 3, 3))
    np.testing.assert_array_equal(sn.running_mean.numpy(), before)
    sn.eval()
    running = (sn.running_mean.numpy(), sn.running_var.numpy())
    np.testing.assert_allclose(sn(md.Tensor(x)).numpy(), np_switch_norm(x, *params, running), atol=1e-10)
    gradcheck_layer(sn, (2, 3, 3, 3))


def test_lenet_with_each_norm_trains_a_step(backend):
    for norm in (None, "batch", "group", "layer", "instance", "switch", "sparse_switch"):
        md.manual_seed(0)
        model = md.models.LeNet5(in_channels=1, input_size=28, norm=norm)
        opt = md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = md.Tensor(randn(4, 1, 28, 28).astype(np.float32))
        loss = F.cross_entropy(model(x), np.array([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert np.isfinite(loss.item())
    md.manual_seed(0)
    plain = md.models.LeNet5(norm=None).state_dict()
    md.manual_seed(0)
    with_bn = md.models.LeNet5(norm="batch").state_dict()
    # the course's comparison starts every run from the same conv and linear weights
    weights = lambda sd: [v for k, v in sd.items() if k.endswith(("weight", "bias"))]
    for a, b in zip(weights(plain), weights(with_bn), strict=True):
        np.testing.assert_array_equal(a, b)
