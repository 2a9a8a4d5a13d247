"""The engine's edges against PyTorch, in float64: vectors in matmul, 0-d
tensors, PyTorch's dim/keepdim (with its meaning where it differs from NumPy's),
cropping pads, clip, integer powers, where of numbers, F.batch_norm. Each case:
values, shapes, dtypes and gradients against torch (skipped where it is not
installed), and a float64 gradcheck with a random upstream gradient."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import against_torch, check_op, host, randn


# ---- 1. vectors in matmul -------------------------------------------------------
MATMUL_SHAPES = [((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
                 ((4,), (2, 1, 4, 3)), ((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_follows_pytorch_for_vectors(shapes):
    against_torch(lambda a, b: a @ b, lambda t, a, b: a @ b, shapes)


@pytest.mark.parametrize("shapes", MATMUL_SHAPES[:6], ids=str)
def test_matmul_of_vectors_gradchecks(backend, shapes):
    check_op(lambda a, b: F.matmul(a, b), shapes, np.matmul)


def test_matmul_refuses_numbers_and_misfits(backend):
    with pytest.raises(ValueError, match=r"matmul: both operands need at least 1 dim, got shapes \(\) and \(3,\)"):
        md.Tensor(np.array(2.0)) @ md.Tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"matmul: shapes \(3,\) and \(4, 2\) do not fit: 3 columns against 4"):
        md.Tensor(np.ones(3)) @ md.Tensor(np.ones((4, 2)))


def test_linear_takes_one_unbatched_sample_as_pytorch():
    torch = pytest.importorskip("torch")
    lin = md.nn.Linear(4, 2).astype("float64")
    mlp = md.nn.Sequential(lin, md.nn.ReLU(), md.nn.Linear(2, 3).astype("float64"))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU(), torch.nn.Linear(2, 3)).double()
    with torch.no_grad():
        for ours, theirs in zip(mlp.parameters(), ref.parameters()):
            theirs.copy_(torch.tensor(host(ours)))
    x = randn(4)
    y = mlp(md.Tensor(x))
    assert y.shape == (3,) and y.dtype == np.float64
    np.testing.assert_allclose(host(y), ref(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    up = np.random.default_rng(1).standard_normal(3)
    y.backward(up)
    ref(torch.tensor(x)).backward(torch.tensor(up))
    for ours, theirs in zip(mlp.parameters(), ref.parameters()):
        np.testing.assert_allclose(host(ours.grad), theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_linear_on_one_sample_gradchecks(backend):
    lin = md.nn.Linear(4, 2)
    report = md.gradcheck(lin, [md.Tensor(randn(4))])
    assert [r.name for r in report.inputs] == ["input0", "weight", "bias"] and not any(r.vacuous for r in report.inputs)


# ---- 2. 0-d tensors have one position: axis 0 or -1 ----------------------------
ZERO_D = [   # (name, minidl, torch)
    ("sum", lambda a: a.sum(axis=0), lambda t, a: a.sum(dim=0)),
    ("sum_dim", lambda a: a.sum(dim=-1, keepdim=True), lambda t, a: a.sum(dim=-1, keepdim=True)),
    ("mean", lambda a: a.mean(axis=-1), lambda t, a: a.mean(dim=-1)),
    ("prod", lambda a: a.prod(axis=0), lambda t, a: a.prod(dim=0)),
    ("max", lambda a: a.max(axis=0), lambda t, a: a.amax(dim=0)),
    ("max_dim", lambda a: a.max(dim=0), lambda t, a: a.max(dim=0)),
    ("min_dim", lambda a: a.min(dim=-1, keepdim=True), lambda t, a: a.min(dim=-1, keepdim=True)),
    ("softmax", lambda a: a.softmax(axis=-1), lambda t, a: a.softmax(dim=-1)),
    ("log_softmax", lambda a: a.log_softmax(axis=0), lambda t, a: a.log_softmax(dim=0)),
    ("log_softmax_dim", lambda a: F.log_softmax(a, dim=-1), lambda t, a: t.log_softmax(a, dim=-1)),
]


@pytest.mark.parametrize("name, ours, theirs", ZERO_D, ids=[c[0] for c in ZERO_D])
def test_reductions_of_a_0d_tensor_as_pytorch(name, ours, theirs):
    against_torch(ours, theirs, [()])


def test_0d_argmax_and_out_of_range(backend):
    x = md.Tensor(np.array(2.5))
    assert x.argmax(axis=0).item() == 0 and x.argmin(dim=-1).shape == ()
    with pytest.raises(ValueError, match="sum: axis 1 is out of range for a tensor with 0 dims"):
        x.sum(axis=1)


def test_0d_reductions_gradcheck(backend):
    check_op(lambda a: a.softmax(axis=0) * a + a.sum(axis=-1) + a.log_softmax(dim=0), [()])


# ---- 3. PyTorch's dim and keepdim, with PyTorch's meaning -------------------------
DIM = [   # (name, minidl, torch, input shape)
    ("sum", lambda a: a.sum(dim=(0, 2), keepdim=True), lambda t, a: a.sum(dim=(0, 2), keepdim=True), (3, 4, 2)),
    ("mean", lambda a: a.mean(dim=1), lambda t, a: a.mean(dim=1), (3, 4)),
    ("prod", lambda a: a.prod(dim=1, keepdim=True), lambda t, a: a.prod(dim=1, keepdim=True), (3, 4)),
    ("var", lambda a: a.var(dim=1), lambda t, a: a.var(dim=1), (3, 4)),
    ("std", lambda a: a.std(dim=0, keepdim=True), lambda t, a: a.std(dim=0, keepdim=True), (5, 2)),
    ("std_all_dims", lambda a: a.std(dim=(0, 1)), lambda t, a: a.std(dim=(0, 1)), (3, 4)),
    ("var_correction", lambda a: a.var(dim=1, correction=0), lambda t, a: a.var(dim=1, correction=0), (3, 4)),
    ("std_unbiased", lambda a: a.std(dim=1, unbiased=False), lambda t, a: a.std(dim=1, unbiased=False), (3, 4)),
    ("var_unbiased_no_dim", lambda a: a.var(unbiased=True), lambda t, a: a.var(unbiased=True), (3, 4)),
    ("max", lambda a: a.max(dim=1), lambda t, a: a.max(dim=1), (3, 4)),
    ("max_keepdim", lambda a: a.max(dim=-1, keepdim=True), lambda t, a: a.max(dim=-1, keepdim=True), (2, 3, 4)),
    ("min", lambda a: a.min(dim=0), lambda t, a: a.min(dim=0), (3, 4)),
    ("max_all", lambda a: a.max(), lambda t, a: a.max(), (3, 4)),
    ("softmax", lambda a: F.softmax(a, dim=0), lambda t, a: t.softmax(a, dim=0), (3, 4)),
    ("log_softmax", lambda a: a.log_softmax(dim=1), lambda t, a: a.log_softmax(dim=1), (3, 4)),
]


@pytest.mark.parametrize("name, ours, theirs, shape", DIM, ids=[c[0] for c in DIM])
def test_dim_and_keepdim_mean_what_they_mean_in_pytorch(name, ours, theirs, shape):
    against_torch(ours, theirs, [shape])


def test_argmax_with_dim_as_pytorch():
    torch = pytest.importorskip("torch")
    a = randn(3, 4)
    for ours, theirs in ((md.Tensor(a).argmax(dim=1, keepdim=True), torch.tensor(a).argmax(dim=1, keepdim=True)),
                         (md.Tensor(a).argmin(dim=0), torch.tensor(a).argmin(dim=0))):
        assert ours.shape == tuple(theirs.shape) and ours.dtype == np.int64
        np.testing.assert_array_equal(host(ours), theirs.numpy())


def test_numpy_spelling_keeps_numpy_meaning(backend):
    a = randn(3, 4)
    x = md.Tensor(a)
    np.testing.assert_allclose(host(x.std(axis=1)), a.std(axis=1), rtol=1e-12)          # biased
    np.testing.assert_allclose(host(x.std(dim=1)), a.std(axis=1, ddof=1), rtol=1e-12)   # unbiased
    np.testing.assert_allclose(host(x.var(1, ddof=1)), a.var(axis=1, ddof=1), rtol=1e-12)
    assert isinstance(x.max(axis=1), md.Tensor) and isinstance(x.max(1), md.Tensor)     # values only
    values, indices = x.max(dim=1)                                                      # PyTorch's pair
    np.testing.assert_array_equal(host(indices), a.argmax(axis=1))
    np.testing.assert_allclose(host(values), a.max(axis=1))


def test_both_spellings_at_once_are_an_error_naming_both(backend):
    x = md.Tensor(randn(3, 4))
    with pytest.raises(TypeError, match=r"sum: got both axis=1 \(NumPy's name\) and dim=0 \(PyTorch's\)"):
        x.sum(1, dim=0)
    with pytest.raises(TypeError, match=r"mean: got both keepdims=True .* and keepdim=True"):
        x.mean(axis=0, keepdims=True, keepdim=True)
    with pytest.raises(TypeError, match=r"softmax: got both axis=0 .* and dim=1"):
        F.softmax(x, axis=0, dim=1)
    with pytest.raises(TypeError, match=r"std: got ddof=1 and unbiased=True; pass one"):
        x.std(dim=0, ddof=1, unbiased=True)
    with pytest.raises(TypeError, match=r"max: dim must be one int"):
        x.max(dim=(0, 1))


def test_max_with_dim_sends_the_gradient_to_its_index_alone(backend):
    # ties: PyTorch's max(dim=) picks one index (the first here); max over axis shares
    x = md.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 1.0]]), requires_grad=True)
    x.max(dim=1).values.sum().backward()
    np.testing.assert_array_equal(host(x.grad), [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [[0, 0.5, 0.5], [0.5, 0.5, 0]])


def test_max_and_min_with_dim_gradcheck(backend):
    check_op(lambda a: a.max(dim=1).values, [(3, 4)], lambda a: a.max(axis=1))
    check_op(lambda a: a.min(dim=0, keepdim=True).values, [(3, 4)], lambda a: a.min(axis=0, keepdims=True))
    check_op(lambda a: a.std(dim=1, keepdim=True), [(3, 4)], lambda a: a.std(axis=1, ddof=1, keepdims=True))


# ---- 5. pad crops, clip, integer powers, where of numbers -------------------------
PADS = [(1, -2), (1, 1, -1, 2), (-1, -1, 0, 0, 1, 0), (0, 0), (-2, -2)]


@pytest.mark.parametrize("pad", PADS, ids=str)
def test_pad_takes_pytorch_flat_widths_and_negative_ones_crop(pad):
    against_torch(lambda a: F.pad(a, pad), lambda t, a: t.nn.functional.pad(a, pad), [(2, 3, 4)])


def test_pad_crops_and_pads_gradcheck(backend):
    check_op(lambda a: F.pad(a, (1, -2, -1, 1)), [(3, 4)], lambda a: np.pad(a[1:, :-2], ((0, 1), (1, 0))))
    check_op(lambda a: F.pad(a, ((0, 0), (2, -1))), [(2, 3)], lambda a: np.pad(a[:, :-1], ((0, 0), (2, 0))))


def test_pad_refuses_crops_past_the_edge_and_odd_widths(backend):
    x = md.Tensor(randn(2, 3))
    with pytest.raises(ValueError, match=r"pad: widths .* crop more than the 3 values"):
        F.pad(x, (-2, -2))
    with pytest.raises(ValueError, match=r"pad: PyTorch's flat pad needs \(before, after\) pairs for at most 2"):
        F.pad(x, (1, 1, 1))


def test_clip_with_min_above_max_gives_max_as_pytorch():
    against_torch(lambda a: a.clip(0.5, -0.5), lambda t, a: a.clamp(0.5, -0.5), [(3, 4)])
    against_torch(lambda a: a.clip(None, 0.2), lambda t, a: a.clamp(max=0.2), [(3, 4)])
    against_torch(lambda a: a.clip(-0.3, 0.3), lambda t, a: a.clamp(-0.3, 0.3), [(3, 4)])


def test_integer_tensor_to_a_negative_integer_power_is_refused_as_pytorch(backend):
    i = md.Tensor(np.array([2, 4], np.int64))
    with pytest.raises(ValueError, match=r"pow: an integer tensor \(int64, shape \(2,\)\) to a negative integer "
                                         r"power \(-1\) is refused"):
        i ** -1
    assert (i ** 2).dtype == np.int64 and (i ** -1.0).dtype == np.float32     # as torch
    np.testing.assert_allclose(host(i ** -1.0), [0.5, 0.25])
    assert (i / i).dtype == np.float32                                         # true division is float
    assert (md.Tensor(np.ones(2)) / i).dtype == np.float64                     # the float's dtype


def test_where_of_python_numbers_as_pytorch(backend):
    torch = pytest.importorskip("torch")
    mask = np.array([True, False, True])
    for a, b in ((1.0, 0.0), (1, 0), (2, -1.5)):
        ours, theirs = F.where(md.Tensor(mask), a, b), torch.where(torch.tensor(mask), a, b)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_array_equal(host(ours), theirs.numpy())
    y = F.where(mask, md.Tensor(randn(3)), 0.0)              # a host mask, values wherever they are
    assert y.dtype == np.float64 and y.device == md.Tensor(randn(1)).device
    check_op(lambda a: F.where(mask, a, 2.0), [(3,)], lambda a: np.where(mask, a, 2.0))


# ---- 6. the norm op without side effects, F.batch_norm as PyTorch's --------------
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 5)], ids=str)
def test_batch_norm_functional_matches_pytorch_and_updates_the_buffers_it_is_given(shape):
    torch = pytest.importorskip("torch")
    C, decay = shape[1], 0.8
    x, gamma, beta = randn(*shape), randn(C, seed=1), randn(C, seed=2)
    rm, rv = randn(C, seed=3), np.abs(randn(C, seed=4)) + 0.5
    ours = [md.Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    run_md, run_t = [md.Tensor(a.copy()) for a in (rm, rv)], [torch.tensor(a.copy()) for a in (rm, rv)]
    for training in (True, False):
        y = F.batch_norm(ours[0], *run_md, ours[1], ours[2], training=training, decay=decay)
        y_t = torch.nn.functional.batch_norm(theirs[0], *run_t, theirs[1], theirs[2], training=training,
                                             momentum=1 - decay)
        np.testing.assert_allclose(host(y), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
        for a, b in zip(run_md, run_t):     # the running statistics, unbiased, as PyTorch
            np.testing.assert_allclose(host(a), b.numpy(), rtol=1e-12)
        up = np.random.default_rng(5).standard_normal(shape)
        y.backward(up)
        y_t.backward(torch.tensor(up))
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(host(a.grad), b.grad.numpy(), rtol=1e-9, atol=1e-12)
            a.grad, b.grad = None, None


def test_normalize_batch_is_stateless_and_returns_the_statistics(backend):
    from minidl.ops import norm as N
    x = randn(8, 3, 2, 2)
    out = N.normalize_batch(md.Tensor(x), (0, 2, 3))
    assert out._fields == ("y", "mean", "var", "count") and out.count == 8 * 2 * 2
    np.testing.assert_allclose(host(out.mean).ravel(), x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(host(out.var).ravel(), x.var(axis=(0, 2, 3)), rtol=1e-12)
    with md.frozen_state():                   # the freeze is the running update's business alone
        same = N.normalize_batch(md.Tensor(x), (0, 2, 3))
    np.testing.assert_array_equal(host(same.y), host(out.y))


def test_staged_backward_is_its_own_op_beside_the_compact_one(backend):
    from minidl.ops import norm as N
    x, g, b = randn(6, 3), randn(1, 3, seed=1), randn(1, 3, seed=2)
    grads = {}
    for form, op in (("compact", "Normalize"), ("staged", "NormalizeStaged")):
        t = [md.Tensor(a, requires_grad=True) for a in (x, g, b)]
        y = N.normalize(t[0], (0,), t[1], t[2], backward=form)
        assert type(y.creator).__name__ == op
        y.backward(randn(6, 3, seed=3))
        grads[form] = [host(a.grad) for a in t]
    for s, c in zip(grads["staged"], grads["compact"]):
        np.testing.assert_allclose(s, c, rtol=0, atol=1e-12)
    md.gradcheck(lambda x, g, b: F.batch_norm(x, gamma=g, beta=b, backward="staged"),
                 [md.Tensor(a) for a in (x, g.ravel(), b.ravel())])
    with pytest.raises(ValueError, match=r"normalize: backward must be one of \['compact', 'staged'\]"):
        N.normalize(md.Tensor(x), (0,), backward="fast")


def test_batch_norm_checks_its_input_once_in_the_callers_name(backend):
    one = md.Tensor(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per channel when training"):
        F.batch_norm(one)
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected more than 1 value per channel when training"):
        md.nn.BatchNorm1d(3).astype("float64")(one)
    with pytest.raises(ValueError, match=r"batch_norm: expected input \(N, C\) or \(N, C, ...\), got shape \(3,\)"):
        F.batch_norm(md.Tensor(np.ones(3)))


# ---- 4. advanced indexing keeps NumPy's rule (tests/test_properties.py: random mixes) ----
def test_an_integer_beside_a_list_follows_numpy_not_pytorch(backend):
    a = randn(4, 5, 6, 7)
    assert md.Tensor(a)[0, :, [1, 2]].shape == (2, 5, 7) == a[0, :, [1, 2]].shape
    torch = pytest.importorskip("torch")
    assert tuple(torch.tensor(a)[0, :, [1, 2]].shape) == (5, 2, 7)        # the documented difference
