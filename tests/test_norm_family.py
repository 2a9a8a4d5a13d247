"""The normalization family as one formula: Switchable Norm as its authors
define it (and SwitchNorm1d), Sparse Switchable Norm with SparsestMax, the
running-variance convention, one NaN guard for every running-statistics layer,
and the family's relations, in float64."""
import math

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl.ops import norm as N
from conftest import randn, host
from test_norm import as64, gradcheck_layer, np_normalize


# ---- the family's relations --------------------------------------------------
def test_group_norm_with_one_group_is_layer_norm_and_with_c_groups_instance_norm():
    x = md.Tensor(randn(3, 6, 4, 4))
    np.testing.assert_allclose(F.group_norm(x, 1).numpy(), F.layer_norm(x, (6, 4, 4)).numpy(), atol=1e-12)
    np.testing.assert_allclose(F.group_norm(x, 6).numpy(), F.instance_norm(x).numpy(), atol=1e-12)


@pytest.mark.parametrize("k, axes", [(0, (2, 3)), (1, (1, 2, 3)), (2, (0, 2, 3))])
def test_switch_norm_pinned_to_one_normalizer_is_that_normalizer(k, axes):
    sn = md.nn.SwitchNorm2d(3).astype("float64")
    pinned = np.full(3, -50.0)
    pinned[k] = 50.0                      # softmax weight of the others: e^-100
    sn.mean_weight.data = md.backend.to_device(pinned, sn.mean_weight.device)
    sn.var_weight.data = md.backend.to_device(pinned, sn.var_weight.device)
    x = randn(4, 3, 3, 3)
    np.testing.assert_allclose(sn(md.Tensor(x)).numpy(), np_normalize(x, axes), atol=1e-10)


def test_batchnorm_dx_is_orthogonal_to_ones_and_to_xhat():
    """dl/dx = (γ/σ)(I − P)·dl/dy with P = (11ᵀ + x̂x̂ᵀ)/m: orthogonal to 1 always,
    to x̂ exactly when ε = 0 (deck 001's geometric view)."""
    x = randn(16, 3) * 3 + 2
    gy = randn(16, 3, seed=1)
    for eps, tol in ((0.0, 1e-12), (1e-1, None)):
        t = md.Tensor(x, requires_grad=True)
        N.normalize(t, (0,), eps=eps).backward(gy)
        x_hat = np_normalize(x, (0,), eps)
        np.testing.assert_allclose(host(t.grad).sum(axis=0), 0, atol=1e-12)
        along_xhat = np.abs((host(t.grad) * x_hat).sum(axis=0)).max()
        if tol is not None:
            assert along_xhat < tol
        else:   # ε > 0: x̂ is no longer exactly what the projection removes
            assert along_xhat > 1e-4


# ---- one formula: given statistics -----------------------------------------
def test_normalize_with_given_statistics_gradchecks_all_inputs():
    mu, var = md.Tensor(randn(1, 3, seed=2)), md.Tensor(randn(1, 3, seed=3, positive=True))
    report = md.gradcheck(lambda x, g, b, m, v: N.normalize(x, (0,), g, b, mean=m, var=v),
                          [md.Tensor(randn(5, 3)), md.Tensor(randn(3, seed=4)),
                           md.Tensor(randn(3, seed=5)), mu, var])
    assert not any(r.vacuous for r in report.inputs)
    with pytest.raises(ValueError, match="both mean and var"):
        N.normalize(md.Tensor(randn(5, 3)), (0,), mean=mu)


def test_eval_batchnorm_is_the_same_formula_with_running_statistics():
    bn = as64(md.nn.BatchNorm2d(3))
    bn(md.Tensor(randn(4, 3, 2, 2, seed=7)))
    bn.eval()
    x = md.Tensor(randn(2, 3, 2, 2))
    y = bn(x)
    cs = (1, 3, 1, 1)
    expected = N.normalize(x, (0, 2, 3), bn.gamma.reshape(cs), bn.beta.reshape(cs),
                           mean=bn.running_mean.reshape(cs), var=bn.running_var.reshape(cs))
    np.testing.assert_allclose(y.numpy(), expected.numpy(), atol=1e-12)
    with md.no_grad():                      # the two-pass inference path, same numbers
        np.testing.assert_allclose(bn(x).numpy(), y.numpy(), atol=1e-12)


# ---- Switchable Norm --------------------------------------------------------
def np_switch_norm_1d(x, mw, vw, gamma, beta, running=None, eps=1e-5):
    w, v = np.exp(mw) / np.exp(mw).sum(), np.exp(vw) / np.exp(vw).sum()
    mean_ln, var_ln = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    mean_bn, var_bn = (x.mean(0, keepdims=True), x.var(0, keepdims=True)) if running is None \
        else (running[0][None], running[1][None])
    mu, s2 = w[0] * mean_ln + w[1] * mean_bn, v[0] * var_ln + v[1] * var_bn
    return (x - mu) / np.sqrt(s2 + eps) * gamma + beta


def test_switch_norm_1d_mixes_layer_and_batch_norm_in_train_and_eval(backend):
    sn = as64(md.nn.SwitchNorm1d(4))
    assert sn.mean_weight.shape == (2,)
    x = randn(6, 4)
    params = [p.numpy() for p in (sn.mean_weight, sn.var_weight, sn.gamma, sn.beta)]
    np.testing.assert_allclose(sn(md.Tensor(x)).numpy(), np_switch_norm_1d(x, *params), atol=1e-10)
    gradcheck_layer(sn, (6, 4))
    sn.eval()
    running = (sn.running_mean.numpy(), sn.running_var.numpy())
    np.testing.assert_allclose(sn(md.Tensor(x)).numpy(), np_switch_norm_1d(x, *params, running), atol=1e-10)
    gradcheck_layer(sn, (3, 4))


def test_switch_norm_logits_start_equal():
    sn = md.nn.SwitchNorm2d(3)
    np.testing.assert_array_equal(sn.mean_weight.numpy(), sn.var_weight.numpy())
    assert len(set(sn.mean_weight.numpy().tolist())) == 1


@pytest.mark.parametrize("layer", [lambda: md.nn.BatchNorm1d(2), lambda: md.nn.SwitchNorm1d(2),
                                   lambda: md.nn.SparseSwitchNorm1d(2)])
def test_every_running_statistics_layer_refuses_nan_the_same_way(layer):
    layer = layer()
    # each in its own name, BatchNorm too (through the F.batch_norm it shares)
    with pytest.raises(FloatingPointError, match=f"{type(layer).__name__}: the batch statistics hold NaN"):
        layer(md.Tensor(np.array([[np.nan, 1.0], [0.0, 2.0], [1.0, 1.0]], np.float32)))
        md.backend.check_pending()         # on a GPU: read at the step's one synchronization
    np.testing.assert_array_equal(layer.running_mean.numpy(), [0, 0])
    np.testing.assert_array_equal(layer.running_var.numpy(), [1, 1])


def test_switch_norm_2d_refuses_nan():
    sn = md.nn.SwitchNorm2d(2)
    x = randn(2, 2, 2, 2).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="SwitchNorm2d: the batch statistics hold NaN"):
        sn(md.Tensor(x))
        md.backend.check_pending()
    np.testing.assert_array_equal(sn.running_mean.numpy(), [0, 0])


# ---- the running-variance convention ----------------------------------------
def test_biased_running_var_is_the_homeworks_convention():
    x = randn(8, 3, 2, 2)
    m = 8 * 4
    for unbiased, factor in ((True, m / (m - 1)), (False, 1.0)):
        bn = md.nn.BatchNorm2d(3, decay=0.9, unbiased_running_var=unbiased).astype("float64")
        bn(md.Tensor(x))
        np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.var((0, 2, 3)) * factor, rtol=1e-12)
    # the homework's layer, as deck 002's skeleton writes it (momentum = weight of the old value)
    hw = md.nn.BatchNorm(3, 4, decay=0.9, unbiased_running_var=False)
    assert hw.unbiased_running_var is False


# ---- SparsestMax ------------------------------------------------------------
def sparsestmax_k3(z, r):
    """The published K = 3 algorithm: sparsemax, out to the circle, onto an edge."""
    order = np.argsort(-z)
    zs = z[order]
    cumulative = np.cumsum(zs) - 1
    rho = np.arange(1, 4)[zs - cumulative / np.arange(1, 4) > 0][-1]
    p = np.maximum(z - cumulative[rho - 1] / rho, 0)
    d = np.linalg.norm(p - 1 / 3)
    if d >= r:
        return p
    p = 1 / 3 + r * (p - 1 / 3) / d
    if p[order[2]] < 0:
        half = math.sqrt(2) * math.sqrt(r * r - 1 / 6) / 2
        p[order[0]], p[order[1]], p[order[2]] = 0.5 + half, 0.5 - half, 0.0
    return np.clip(p, 0, 1)


def test_sparsestmax_matches_the_published_algorithm_and_lies_on_the_simplex():
    rng = np.random.default_rng(3)
    for _ in range(300):
        z, r = rng.standard_normal(3) * rng.choice([0.1, 1, 3]), rng.uniform(0, 1)
        p = F.sparsestmax(md.Tensor(z), r).numpy()
        np.testing.assert_allclose(p, sparsestmax_k3(z, r), atol=1e-12)
        assert abs(p.sum() - 1) < 1e-12 and (p >= 0).all()
    assert F.sparsestmax(md.Tensor(np.array([0.2, 0.1, 0.0])), 1.0).numpy().tolist() == [1, 0, 0]


@pytest.mark.parametrize("z, r", [([0.3, 0.1, -0.05], 0.0), ([0.3, 0.1, -0.05], 0.3),
                                  ([0.5, 0.2, 0.1, -0.3], 0.0), ([0.2, 0.25, 0.1, 0.15], 0.4),
                                  ([0.05, 0.02], 0.0)])
def test_sparsestmax_backward_gradchecks_away_from_kinks(z, r):
    report = md.gradcheck(lambda z: F.sparsestmax(z, r), [md.Tensor(np.array(z))])
    assert not report.inputs[0].vacuous


def test_sparsestmax_on_an_edge_and_at_a_vertex_has_zero_gradient():
    for r in (0.6, 1.0):     # [0.3, 0.1, -0.05] is pushed onto an edge at 0.6, to a vertex at 1
        z = md.Tensor(np.array([0.3, 0.1, -0.05]), requires_grad=True)
        F.sparsestmax(z, r).backward(np.array([1.0, -2.0, 0.5]))
        np.testing.assert_allclose(host(z.grad), 0, atol=1e-12)


# ---- Sparse Switchable Norm -------------------------------------------------
def test_sparse_switch_norm_at_radius_zero_is_sparsemax_weighted_and_gradchecks():
    ssn = as64(md.nn.SparseSwitchNorm2d(3))
    ssn.mean_weight.data[:] = md.Tensor([0.9, 0.1, 0.5], dtype="float64").data   # sparsemax (0.7, 0, 0.3): away from its kinks
    ssn.var_weight.data[:] = md.Tensor([0.1, 0.6, 0.3], dtype="float64").data
    w, v = ssn.mixture_weights()
    assert (w.numpy() >= 0).all() and abs(w.numpy().sum() - 1) < 1e-12
    gradcheck_layer(ssn, (4, 3, 3, 3))
    ssn.set_radius(0.3)
    gradcheck_layer(ssn, (4, 3, 3, 3))
    ssn.eval()
    gradcheck_layer(ssn, (2, 3, 3, 3))


def test_sparse_switch_lenet_turns_one_hot_and_the_choice_stays():
    md.manual_seed(0)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm="sparse_switch")
    opt = md.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    schedule = md.nn.RadiusSchedule(model, total_steps=4)
    x, y = md.Tensor(randn(8, 1, 28, 28).astype(np.float32)), np.arange(8) % 10
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    layers = [m for m in model.modules() if isinstance(m, (md.nn.SparseSwitchNorm2d, md.nn.SparseSwitchNorm1d))]
    assert len(layers) == 4 and all(layer.radius == 1.0 for layer in layers)
    for layer in layers:
        w, v = layer.mixture_weights()
        assert sorted(w.numpy().tolist())[-1] == 1.0 and sorted(v.numpy().tolist())[-1] == 1.0
        assert int(layer.mean_choice.item()) == int(w.numpy().argmax())
    # shrinking the logits (weight decay alone) cannot undo a recorded choice
    for layer in layers:
        layer.mean_weight.data *= 0.0
        assert layer.mixture_weights()[0].numpy().max() == 1.0


# ---- norm code a student can step into ----------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
def test_the_two_normalize_ops_have_fixed_inputs_and_one_output(affine):
    x = md.Tensor(randn(4, 3, 2, 2), requires_grad=True)
    g, b = (md.Tensor(randn(1, 3, 1, 1, seed=s), requires_grad=True) for s in (1, 2))
    y = N.normalize(x, (0, 2, 3), g if affine else None, b if affine else None)
    assert type(y.creator).__name__ == "Normalize" and len(y.creator.inputs) == 3
    mu, var = N.moments(x, (0, 2, 3))
    given = N.normalize(x, (), g if affine else None, b if affine else None, mean=mu, var=var)
    assert type(given.creator).__name__ == "NormalizeWithStats" and len(given.creator.inputs) == 5
    np.testing.assert_allclose(host(given.data), host(y.data), atol=1e-12)
    # moments (Tensors, autograd) and Normalize's own statistics (arrays) are the same numbers
    np.testing.assert_allclose(host(y.creator.mu), host(mu.data), atol=1e-14)
    np.testing.assert_allclose(host(y.creator.var), host(var.data), atol=1e-14)


def test_the_compact_backward_leaves_its_inputs_and_terms_untouched():
    rng = np.random.default_rng(3)
    x, gy, gamma = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), rng.standard_normal((1, 3))
    t = N.backward_staged(gy, x, gamma, 1e-5, (0,))
    before = gy.copy(), t.x_hat.copy(), t.sigma.copy()
    g_x, g_gamma, g_beta = N.backward_compact(gy, t.x_hat, t.sigma, gamma, (0,))
    for kept, was in zip((gy, t.x_hat, t.sigma), before):
        np.testing.assert_array_equal(kept, was)
    np.testing.assert_allclose(g_x, t.g_x, atol=1e-12)
    # γ per feature over a per-sample σ (LayerNorm's case) takes the other branch of the means
    t_ln = N.backward_staged(gy, x, gamma, 1e-5, (1,))
    np.testing.assert_allclose(N.backward_compact(gy, t_ln.x_hat, t_ln.sigma, gamma, (1,))[0], t_ln.g_x, atol=1e-12)


def test_reading_a_sparse_switch_layers_weights_writes_nothing():
    layer = md.nn.SparseSwitchNorm2d(3)
    for logits in (layer.mean_weight, layer.var_weight):          # unequal logits: a clear winner
        logits.data = md.backend.to_device(np.array([0.0, 2.0, 0.5], np.float32), logits.device)
    layer.set_radius(1.0)
    w, v = layer.mixture_weights()
    assert float(w.max().item()) == 1.0 and int(layer.mean_choice.item()) == -1    # read: no choice written
    layer(md.Tensor(randn(4, 3, 2, 2).astype(np.float32)))                          # a training step records it
    assert int(layer.mean_choice.item()) == int(w.numpy().argmax())
