"""Every op: float64 gradcheck with a random upstream gradient (broadcasting
shapes where the op broadcasts) and its float32 forward against NumPy."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import check_op


def test_add_broadcast(backend): check_op(lambda a, b: a + b, [(3, 4), (4,)], np.add)
def test_add_broadcast_other_way(backend): check_op(lambda a, b: a + b, [(3, 1), (1, 4)], np.add)
def test_sub(backend): check_op(lambda a, b: a - b, [(2, 3, 4), (3, 1)], np.subtract)
def test_rsub_scalar(backend): check_op(lambda a: 2.0 - a, [(3, 4)], lambda a: 2 - a)
def test_mul(backend): check_op(lambda a, b: a * b, [(3, 4), (3, 1)], np.multiply)
def test_div(backend): check_op(lambda a, b: a / b, [(3, 4), (4,)], np.divide, positive=True)
def test_rdiv_scalar(backend): check_op(lambda a: 3.0 / a, [(3, 4)], lambda a: 3 / a, positive=True)
def test_pow(backend): check_op(lambda a: a ** 3, [(3, 4)], lambda a: a ** 3)
def test_pow_fractional(backend): check_op(lambda a: a ** 1.5, [(5,)], lambda a: a ** 1.5, positive=True)
def test_neg(backend): check_op(lambda a: -a, [(3, 4)], np.negative)
def test_matmul_2d(backend): check_op(lambda a, b: a @ b, [(3, 4), (4, 5)], np.matmul)
def test_matmul_batched(backend): check_op(lambda a, b: a @ b, [(2, 3, 4), (4, 5)], np.matmul)
def test_matmul_batched_both(backend): check_op(lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)], np.matmul)
def test_exp(backend): check_op(lambda a: a.exp(), [(3, 4)], np.exp)
def test_log(backend): check_op(lambda a: a.log(), [(3, 4)], np.log, positive=True)
def test_sqrt(backend): check_op(lambda a: a.sqrt(), [(3, 4)], np.sqrt, positive=True)
def test_abs(backend): check_op(lambda a: a.abs(), [(3, 4)], np.abs)
def test_clip(backend): check_op(lambda a: a.clip(-0.5, 0.5), [(4, 5)], lambda a: np.clip(a, -.5, .5))
def test_maximum(backend): check_op(F.maximum, [(3, 4), (4,)], np.maximum)
def test_where(backend): check_op(lambda a, b: F.where(a.data > 0, a, b), [(3, 4), (3, 4)], lambda a, b: np.where(a > 0, a, b))
def test_sum_axis(backend): check_op(lambda a: a.sum(axis=1), [(3, 4, 2)], lambda a: a.sum(axis=1))
def test_sum_keepdims(backend): check_op(lambda a: a.sum(axis=(0, 2), keepdims=True), [(3, 4, 2)], lambda a: a.sum(axis=(0, 2), keepdims=True))
def test_sum_all(backend): check_op(lambda a: a.sum(), [(3, 4)], np.sum)
def test_mean(backend): check_op(lambda a: a.mean(axis=0), [(3, 4)], lambda a: a.mean(axis=0))
def test_var(backend): check_op(lambda a: a.var(axis=1), [(3, 4)], lambda a: a.var(axis=1))
def test_var_unbiased(backend): check_op(lambda a: a.var(axis=0, ddof=1), [(5, 2)], lambda a: a.var(axis=0, ddof=1))
def test_max(backend): check_op(lambda a: a.max(axis=1), [(3, 4)], lambda a: a.max(axis=1))
def test_min_keepdims(backend): check_op(lambda a: a.min(axis=0, keepdims=True), [(3, 4)], lambda a: a.min(axis=0, keepdims=True))
def test_reshape(backend): check_op(lambda a: a.reshape(4, 3), [(3, 4)], lambda a: a.reshape(4, 3))
def test_transpose(backend): check_op(lambda a: a.transpose(2, 0, 1), [(2, 3, 4)], lambda a: a.transpose(2, 0, 1))
def test_T(backend): check_op(lambda a: a.T, [(2, 3)], lambda a: a.T)
def test_flatten(backend): check_op(lambda a: a.flatten(), [(2, 3, 4)], lambda a: a.reshape(-1))
def test_flatten_from(backend): check_op(lambda a: a.flatten(1), [(2, 3, 4)], lambda a: a.reshape(2, -1))
def test_getitem_slice(backend): check_op(lambda a: a[1:, ::2], [(3, 4)], lambda a: a[1:, ::2])
def test_getitem_repeated(backend): check_op(lambda a: a[np.array([0, 2, 0, 0])], [(3, 4)], lambda a: a[[0, 2, 0, 0]])
def test_concatenate(backend): check_op(lambda a, b: F.concatenate([a, b], axis=1), [(2, 3), (2, 4)], lambda a, b: np.concatenate([a, b], 1))
def test_stack(backend): check_op(lambda a, b: F.stack([a, b], axis=1), [(2, 3), (2, 3)], lambda a, b: np.stack([a, b], 1))
def test_pad(backend): check_op(lambda a: F.pad(a, ((0, 0), (1, 2))), [(2, 3)], lambda a: np.pad(a, ((0, 0), (1, 2))))
def test_broadcast_to(backend): check_op(lambda a: a.broadcast_to((2, 3, 4)), [(3, 1)], lambda a: np.broadcast_to(a, (2, 3, 4)))
def test_relu(backend): check_op(lambda a: a.relu(), [(4, 5)], lambda a: np.maximum(a, 0))
def test_sigmoid(backend): check_op(lambda a: a.sigmoid(), [(4, 5)], lambda a: 1 / (1 + np.exp(-a)))
def test_tanh(backend): check_op(lambda a: a.tanh(), [(4, 5)], np.tanh)
def test_softmax(backend): check_op(lambda a: a.softmax(axis=1), [(3, 5)], lambda a: np.exp(a) / np.exp(a).sum(1, keepdims=True))
def test_log_softmax(backend): check_op(lambda a: a.log_softmax(axis=0), [(3, 5)], lambda a: a - np.log(np.exp(a).sum(0, keepdims=True)))
def test_cross_entropy(backend): check_op(lambda a: F.cross_entropy(a, np.array([0, 2, 1, 2])), [(4, 3)], lambda a: -np.mean((a - np.log(np.exp(a).sum(1, keepdims=True)))[np.arange(4), [0, 2, 1, 2]]))
def test_mse_loss(backend): check_op(F.mse_loss, [(4, 3), (4, 3)], lambda a, b: np.mean((a - b) ** 2))


def test_log_softmax_is_stable_for_huge_logits(backend):
    x = md.Tensor([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]])
    y = x.log_softmax(axis=1).numpy()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[0], [0.0, -1e4, -2e4], rtol=1e-6)
    np.testing.assert_allclose(y[1, :2], [-np.log(2)] * 2, rtol=1e-5)
    loss = F.cross_entropy(x, np.array([2, 2]))
    assert np.isfinite(loss.item())


def test_getitem_repeated_index_accumulates(backend):
    x = md.Tensor(np.zeros(3), requires_grad=True)
    x[np.array([1, 1, 1, 2])].sum().backward()
    np.testing.assert_array_equal(md.backend.as_numpy(x.grad), [0, 3, 1])


def test_astype_sends_gradient_back_in_the_source_dtype(backend):
    x = md.Tensor(np.arange(3.0), requires_grad=True)
    (x.astype("float32") * 2.0).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(md.backend.as_numpy(x.grad), [2, 2, 2])


# ---- the ops PyTorch users reach for --------------------------------------------
def _erf(a):
    import math
    return np.vectorize(math.erf)(a)


def test_minimum(backend): check_op(F.minimum, [(3, 4), (4,)], np.minimum)
def test_std(backend): check_op(lambda a: a.std(axis=1), [(3, 4)], lambda a: a.std(axis=1))
def test_std_unbiased(backend): check_op(lambda a: a.std(axis=0, ddof=1, keepdims=True), [(5, 2)], lambda a: a.std(axis=0, ddof=1, keepdims=True))
def test_prod(backend): check_op(lambda a: a.prod(axis=1), [(3, 4)], lambda a: a.prod(axis=1))
def test_prod_all_keepdims(backend): check_op(lambda a: a.prod(axis=(0, 2), keepdims=True), [(2, 3, 2)], lambda a: a.prod(axis=(0, 2), keepdims=True))
def test_squeeze(backend): check_op(lambda a: a.squeeze(), [(3, 1, 4, 1)], lambda a: a.squeeze())
def test_squeeze_axis(backend): check_op(lambda a: a.squeeze(axis=1), [(3, 1, 1)], lambda a: a.squeeze(axis=1))
def test_unsqueeze(backend): check_op(lambda a: a.unsqueeze(-1), [(3, 4)], lambda a: a[..., None])
def test_leaky_relu(backend): check_op(lambda a: F.leaky_relu(a, 0.1), [(4, 5)], lambda a: np.where(a > 0, a, 0.1 * a))
def test_elu(backend): check_op(lambda a: F.elu(a, 0.7), [(4, 5)], lambda a: np.where(a > 0, a, 0.7 * (np.exp(a) - 1)))
def test_gelu(backend): check_op(F.gelu, [(4, 5)], lambda a: a * 0.5 * (1 + _erf(a / np.sqrt(2))))
def test_gelu_tanh(backend): check_op(lambda a: F.gelu(a, approximate="tanh"), [(4, 5)], lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3))))
def test_silu(backend): check_op(F.silu, [(4, 5)], lambda a: a / (1 + np.exp(-a)))
def test_softplus(backend): check_op(lambda a: F.softplus(a, beta=2.0), [(4, 5)], lambda a: np.log1p(np.exp(2 * a)) / 2)
def test_nll_loss(backend): check_op(lambda a: F.nll_loss(a.log_softmax(axis=1), np.array([0, 2, 1, 2])), [(4, 3)], lambda a: -np.mean((a - np.log(np.exp(a).sum(1, keepdims=True)))[np.arange(4), [0, 2, 1, 2]]))
def test_bce_with_logits(backend): check_op(F.binary_cross_entropy_with_logits, [(4, 3), (4, 3)], lambda z, t: np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))
def test_bce(backend): check_op(lambda p, t: F.binary_cross_entropy(p.sigmoid(), t), [(4, 3), (4, 3)], lambda z, t: -np.mean(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z)))))


def test_comparisons_and_argmax_give_tensors_without_gradient(backend):
    a = md.Tensor(np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 4.0]]), requires_grad=True)
    b = md.Tensor(np.array([3.0, 2.0, 3.0]))
    for got, expected in ((a > b, [[0, 1, 0], [1, 0, 1]]), (a >= 3.0, [[0, 1, 1], [1, 0, 1]]),
                          (a < b, [[1, 0, 0], [0, 0, 0]]), (a <= 2.0, [[1, 0, 0], [0, 1, 0]]),
                          (a == b, [[0, 0, 1], [0, 1, 0]]), (a != 4.0, [[1, 1, 1], [0, 1, 0]])):
        assert got.dtype == np.bool_ and not got.requires_grad and got.creator is None
        np.testing.assert_array_equal(md.backend.as_numpy(got.data), np.array(expected, bool))
    assert md.backend.as_numpy(a.argmax(axis=1).data).tolist() == [1, 0]        # ties: the first, as NumPy
    assert md.backend.as_numpy(a.argmin(axis=0, keepdims=True).data).tolist() == [[0, 1, 0]]
    assert a.argmax().item() == 1 and a.argmax().dtype == np.int64 and not a.argmax().requires_grad
    assert len({a, b}) == 2                                    # still hashable, by identity
    accuracy = (a.argmax(axis=1) == md.Tensor(np.array([1, 2]))).astype("float32").mean()
    assert accuracy.item() == 0.5


def test_one_hot(backend):
    oh = F.one_hot(md.Tensor(np.array([0, 2, 1])), 3)
    assert oh.dtype == np.int64 and md.backend.as_numpy(oh.data).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"one_hot: classes must lie in \[0, 3\)"):
        F.one_hot(md.Tensor(np.array([0, 3])), 3)


def test_bce_keeps_logs_finite_at_0_and_1():
    p = md.Tensor(np.array([0.0, 1.0]), requires_grad=True)
    loss = F.binary_cross_entropy(p, np.array([1.0, 0.0]))
    assert loss.item() == pytest.approx(100.0)          # each log clamped at −100, as PyTorch


TORCH_OPS = [   # (name, minidl, torch, input shapes, positive inputs)
    ("minimum", F.minimum, lambda t, a, b: t.minimum(a, b), [(3, 4), (3, 4)]),
    ("std", lambda a: a.std(axis=1, ddof=1), lambda t, a: a.std(dim=1), [(3, 4)]),
    ("prod", lambda a: a.prod(axis=0), lambda t, a: a.prod(dim=0), [(3, 4)]),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.2), lambda t, a: t.nn.functional.leaky_relu(a, 0.2), [(4, 5)]),
    ("elu", F.elu, lambda t, a: t.nn.functional.elu(a), [(4, 5)]),
    ("gelu", F.gelu, lambda t, a: t.nn.functional.gelu(a), [(4, 5)]),
    ("gelu_tanh", lambda a: F.gelu(a, "tanh"), lambda t, a: t.nn.functional.gelu(a, approximate="tanh"), [(4, 5)]),
    ("silu", F.silu, lambda t, a: t.nn.functional.silu(a), [(4, 5)]),
    ("softplus", lambda a: F.softplus(a, 1.5, 2.0), lambda t, a: t.nn.functional.softplus(a, 1.5, 2.0), [(4, 5)]),
    ("nll_loss", lambda a: F.nll_loss(a, np.array([1, 0, 2])), lambda t, a: t.nn.functional.nll_loss(a, t.tensor([1, 0, 2])), [(3, 3)]),
    ("bce_logits", F.binary_cross_entropy_with_logits, lambda t, a, b: t.nn.functional.binary_cross_entropy_with_logits(a, b), [(3, 4), (3, 4)]),
]


@pytest.mark.parametrize("name, ours, theirs, shapes", TORCH_OPS, ids=[c[0] for c in TORCH_OPS])
def test_new_ops_match_pytorch_forward_and_backward(name, ours, theirs, shapes):
    torch = pytest.importorskip("torch")
    from conftest import host, randn
    arrays = [randn(*s, seed=k) * 2 for k, s in enumerate(shapes)]
    x_md = [md.Tensor(a, requires_grad=True) for a in arrays]
    x_t = [torch.tensor(a, requires_grad=True) for a in arrays]
    y_md, y_t = ours(*x_md), theirs(torch, *x_t)
    np.testing.assert_allclose(host(y_md.data), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = np.random.default_rng(9).standard_normal(y_md.shape)
    y_md.backward(up)
    y_t.backward(torch.tensor(up))
    for a, b in zip(x_md, x_t):
        np.testing.assert_allclose(host(a.grad), b.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_a_tensor_of_several_values_has_no_truth_value(backend):
    a, b = md.Tensor([1.0, 2.0]), md.Tensor([3.0, 4.0])
    with pytest.raises(ValueError, match=r"truth value of a tensor of shape \(2,\) is ambiguous"):
        a in [b]                                   # would compare element-wise and always be true
    assert bool(md.Tensor([3.0]) > 2.0) and (a == None) is False and a in [a]   # noqa: E711
    with pytest.raises(TypeError, match="argmax: axis must be one int"):
        a.argmax(axis=(0,))


@pytest.mark.parametrize("shape, to", [((8, 3, 5, 5), (1, 3, 1, 1)), ((6, 4), (1, 4)), ((6, 4), (4,)),
                                       ((2, 3, 4), (3, 1)), ((5, 1, 3), (1, 1, 3)), ((4, 3), (4, 3))])
def test_einsum_sums_agree_with_their_slow_reference(backend, shape, to):
    """The einsum kernels BatchNorm and conv bias use, against sum_to of the plain product."""
    from minidl.ops.elementwise import einsum_sum_to, sum_product_to, sum_to
    rng = np.random.default_rng(0)
    a, b = (md.backend.default_module().asarray(rng.standard_normal(shape)) for _ in range(2))
    np.testing.assert_allclose(md.backend.as_numpy(einsum_sum_to(a, to)), md.backend.as_numpy(sum_to(a, to)),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(md.backend.as_numpy(sum_product_to(a, b, to)),
                               md.backend.as_numpy(sum_to(a * b, to)), rtol=1e-12, atol=1e-12)
