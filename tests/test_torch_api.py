"""PyTorch's everyday names with PyTorch's meaning. Most cases are one piece of
code, ``f(m, ...)``, run with ``m = minidl`` and ``m = torch``: the same values,
shapes and dtypes, and in float64 the same gradients for a random upstream
gradient (``against_torch``); then d2l's Batch Normalization from scratch,
written with ``import minidl as torch``; the errors a PyTorch user catches; the
names minidl lacks; an op written PyTorch's way."""
import copy
import pickle

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import against_torch, check_op, host


def same_code(f):
    """``f(m, *tensors)`` as the two functions against_torch compares."""
    return (lambda *xs: f(md, *xs)), f


# ---- making tensors: PyTorch's dtype rules -----------------------------------------
CREATE = [
    ("tensor_ints", lambda m: m.tensor([[1, 2], [3, 4]])),
    ("tensor_floats", lambda m: m.tensor([1.0, 2])),
    ("tensor_bools", lambda m: m.tensor([True, False])),
    ("tensor_number", lambda m: m.tensor(3)),
    ("tensor_float_number", lambda m: m.tensor(2.5)),
    ("tensor_float64_array", lambda m: m.tensor(np.linspace(0, 1, 4))),
    ("tensor_int32_array", lambda m: m.tensor(np.arange(3, dtype=np.int32))),
    ("tensor_dtype", lambda m: m.tensor([1, 2], dtype=m.float64)),
    ("zeros", lambda m: m.zeros(2, 3)),
    ("zeros_tuple", lambda m: m.zeros((2, 3))),
    ("zeros_long", lambda m: m.zeros(4, dtype=m.long)),
    ("ones", lambda m: m.ones([3])),
    ("ones_double", lambda m: m.ones(2, 2, dtype=m.double)),
    ("full_int", lambda m: m.full((2,), 7)),
    ("full_float", lambda m: m.full((2, 2), 1.5)),
    ("full_bool", lambda m: m.full((3,), True)),
    ("arange", lambda m: m.arange(5)),
    ("arange_start_step", lambda m: m.arange(2, 11, 3)),
    ("arange_float", lambda m: m.arange(0, 1, 0.125)),
    ("arange_float64", lambda m: m.arange(0.5, 3.1, 0.1, dtype=m.float64)),
    ("arange_negative_step", lambda m: m.arange(5, 0, -2)),
    ("linspace", lambda m: m.linspace(0, 1, 5)),
    ("linspace_float64", lambda m: m.linspace(-2, 3, 7, dtype=m.float64)),
    ("eye", lambda m: m.eye(3)),
    ("eye_rect", lambda m: m.eye(2, 4)),
    ("zeros_like", lambda m: m.zeros_like(m.tensor([[1.5, 2.0]], dtype=m.float64))),
    ("ones_like_int", lambda m: m.ones_like(m.tensor([1, 2, 3]))),
    ("full_like", lambda m: m.full_like(m.zeros(2, 2), 3.5)),
    ("cat", lambda m: m.cat([m.zeros(2, 3), m.ones(2, 1)], dim=1)),
    ("stack", lambda m: m.stack((m.zeros(2), m.ones(2)), dim=1)),
    ("repeat", lambda m: m.arange(6).reshape(2, 3).repeat(2, 1, 2)),
]


@pytest.mark.parametrize("name, make", CREATE, ids=[c[0] for c in CREATE])
def test_making_tensors_as_pytorch(name, make):
    torch = pytest.importorskip("torch")
    ours, theirs = make(md), make(torch)
    assert ours.shape == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), f"{ours.dtype} against {theirs.dtype}"
    np.testing.assert_allclose(host(ours), theirs.numpy(), rtol=1e-7, atol=0)


def test_random_tensors_follow_the_seed_and_the_dtype_rule(backend):
    md.manual_seed(3)
    a, b = md.rand(2, 3), md.randn((4,), dtype=md.float64, requires_grad=True)
    md.manual_seed(3)
    assert np.array_equal(host(md.rand(2, 3)), host(a))
    assert a.dtype == np.float32 and b.dtype == np.float64 and b.requires_grad and b.is_leaf
    assert 0 <= host(a).min() and host(a).max() < 1
    assert md.randn(1000).numpy().std() == pytest.approx(1, abs=0.1)
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        md.zeros(2, dtype=md.long, requires_grad=True)
    with pytest.raises(TypeError, match=r"zeros: a size is non-negative ints, zeros\(2, 3\) or zeros\(\(2, 3\)\)"):
        md.zeros(2.5)


def test_tensor_copies_and_lives_on_the_current_backend(backend):
    a = np.ones(3)
    t = md.tensor(a)
    a[0] = 5
    assert host(t).tolist() == [1, 1, 1] and t.device == md.backend.default_device()
    assert md.tensor(t).dtype == np.float64 and md.tensor(t) is not t
    assert md.Tensor([1, 2]).dtype == np.float32          # minidl's own rule is unchanged


def test_the_name_tensor_is_pytorch_s_function_and_the_module_still_imports():
    from minidl.tensor import Function, Tensor, no_grad   # how every file in minidl imports it
    assert callable(md.tensor) and md.tensor([1]).dtype == np.int64
    assert Tensor is md.Tensor and Function is md.Function and no_grad is md.no_grad


# ---- functions of tensors: values, dtypes and gradients in float64 -------------------
FUNCTIONS = [   # (name, f(m, *tensors), input shapes)
    ("sqrt", lambda m, a: m.sqrt(a * a + 0.5), [(3, 4)]),
    ("exp", lambda m, a: m.exp(a), [(3, 4)]),
    ("log", lambda m, a: m.log(a * a + 0.5), [(3, 4)]),
    ("abs", lambda m, a: m.abs(a), [(3, 4)]),
    ("sigmoid", lambda m, a: m.sigmoid(a), [(3, 4)]),
    ("tanh", lambda m, a: m.tanh(a), [(3, 4)]),
    ("relu", lambda m, a: m.relu(a), [(3, 4)]),
    ("clamp", lambda m, a: m.clamp(a, -0.5, 0.5), [(4, 5)]),
    ("clamp_min", lambda m, a: a.clamp(min=-0.3), [(4, 5)]),
    ("clamp_max", lambda m, a: a.clamp(max=0.2), [(4, 5)]),
    ("clamp_tensor_bounds", lambda m, a, lo, hi: m.clamp(a, lo - 1, hi + 1), [(3, 4), (3, 4), (4,)]),
    ("maximum", lambda m, a, b: m.maximum(a, b), [(3, 4), (4,)]),
    ("minimum", lambda m, a, b: m.minimum(a, b), [(3, 4), (3, 4)]),
    ("where", lambda m, a, b: m.where(a > 0, a, b), [(3, 4), (3, 4)]),
    ("matmul", lambda m, a, b: m.matmul(a, b), [(3, 4), (4, 2)]),
    ("sum", lambda m, a: m.sum(a, dim=1), [(3, 4)]),
    ("mean", lambda m, a: m.mean(a, dim=0, keepdim=True), [(3, 4)]),
    ("var", lambda m, a: m.var(a, dim=1), [(3, 4)]),
    ("max_dim", lambda m, a: m.max(a, dim=1), [(3, 4)]),
    ("softmax", lambda m, a: m.softmax(a, dim=1), [(3, 4)]),
    ("cat", lambda m, a, b: m.cat([a, b], dim=1), [(2, 3), (2, 4)]),
    ("cat_default_dim", lambda m, a, b: m.cat((a, b)), [(2, 3), (1, 3)]),
    ("stack", lambda m, a, b: m.stack([a, b], dim=1), [(2, 3), (2, 3)]),
    ("stack_last", lambda m, a, b: m.stack([a, b], -1), [(2, 3), (2, 3)]),
    ("view", lambda m, a: a.view(4, 3), [(3, 4)]),
    ("view_flat", lambda m, a: a.view(-1), [(3, 4)]),
    ("view_tuple", lambda m, a: a.view((2, -1, 2)), [(3, 4)]),
    ("permute", lambda m, a: a.permute(2, 0, 1), [(2, 3, 4)]),
    ("permute_tuple", lambda m, a: m.permute(a, (1, 2, 0)), [(2, 3, 4)]),
    ("transpose_two_dims", lambda m, a: a.transpose(0, 2), [(2, 3, 4)]),
    ("transpose_matrix", lambda m, a: m.transpose(a, 0, 1), [(2, 3)]),
    ("mT", lambda m, a: a.mT, [(2, 3, 4)]),
    ("expand", lambda m, a: a.expand(2, 3, 4), [(3, 1)]),
    ("expand_keep", lambda m, a: a.expand(-1, 5), [(3, 1)]),
    ("repeat", lambda m, a: a.repeat(2, 3), [(2, 3)]),
    ("repeat_new_axes", lambda m, a: a.repeat(2, 1, 2), [(3,)]),
    ("masked_fill", lambda m, a: a.masked_fill(a > 0.3, -1.0), [(3, 4)]),
    ("masked_fill_broadcast", lambda m, a, b: a.masked_fill(b[0] > 0, 2.0), [(3, 4), (1, 4)]),
    ("float", lambda m, a: a.float(), [(3, 4)]),
    ("double", lambda m, a: (a * 2).float().double(), [(3, 4)]),
    ("to_dtype", lambda m, a: a.to(m.float32), [(3, 4)]),
    ("to_device_and_dtype", lambda m, a: a.to("cpu", m.float32), [(3, 4)]),
    ("to_tensor", lambda m, a, b: a.to(b.float()), [(3, 4), (2,)]),
    ("unsqueeze_squeeze", lambda m, a: m.squeeze(m.unsqueeze(a, 1), 1), [(3, 4)]),
]


@pytest.mark.parametrize("name, f, shapes", FUNCTIONS, ids=[c[0] for c in FUNCTIONS])
def test_functions_and_methods_match_pytorch(name, f, shapes):
    against_torch(*same_code(f), shapes)


@pytest.mark.parametrize("name, f, shapes", [c for c in FUNCTIONS if c[0] in (
    "clamp", "clamp_tensor_bounds", "cat", "stack", "permute", "transpose_two_dims", "mT", "expand", "repeat",
    "repeat_new_axes", "masked_fill", "view")], ids=str)
def test_new_ops_gradcheck_on_each_backend(backend, name, f, shapes):
    check_op(lambda *xs: f(md, *xs), shapes)


def test_to_returns_the_tensor_itself_where_nothing_changes():
    x = md.randn(2, 3)
    assert x.to("cpu" if x.device == "cpu" else "cuda") is x and x.to(md.float32) is x and x.float() is x
    assert x.to(dtype="float64", device=x.device).dtype == np.float64
    with pytest.raises(ValueError, match=r"unknown device 'cdu'; expected 'cpu' or 'gpu'"):
        x.to("cdu")
    with pytest.raises(TypeError, match=r"to: expected a device \('cpu', 'gpu', 'cuda'\), a dtype"):
        x.to(3)


def _dtype(t):
    return str(t.dtype).replace("torch.", "")


def _off(m):
    with m.no_grad():
        return m.is_grad_enabled()


METHODS = [   # (name, f(m) giving Python values)
    ("dim", lambda m: m.zeros(3, 4).dim()),
    ("numel", lambda m: m.zeros(3, 4).numel()),
    ("size_call", lambda m: tuple(m.zeros(3, 4).size())),
    ("size_dim", lambda m: (m.zeros(3, 4).size(1), m.zeros(3, 4).size(-2))),
    ("long", lambda m: (_dtype(m.tensor([1.7, -2.5]).long()), m.tensor([1.7, -2.5]).long().numpy().tolist())),
    ("int", lambda m: _dtype(m.tensor([1.5]).int())),
    ("bool", lambda m: (_dtype(m.tensor([0.0, 2.0]).bool()), m.tensor([0.0, 2.0]).bool().numpy().tolist())),
    ("is_grad_enabled", lambda m: (m.is_grad_enabled(), _off(m))),
]


@pytest.mark.parametrize("name, f", METHODS, ids=[c[0] for c in METHODS])
def test_everyday_methods_give_pytorch_s_answers(name, f):
    torch = pytest.importorskip("torch")
    assert f(md) == f(torch)


def test_size_is_numpy_s_count_and_size_called_pytorch_s_shape():
    x = md.tensor(np.arange(12.0).reshape(3, 4))
    assert x.size == 12 and x.size() == (3, 4) and x.size(1) == 4      # the spelling decides
    assert x.T.shape == (4, 3) and md.zeros(2, 3, 4).T.shape == (4, 3, 2)   # NumPy's T on any dims


def test_requires_grad_and_zero_in_place():
    w = md.zeros(3).requires_grad_()
    assert w.requires_grad and w.is_leaf
    (w * md.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert host(w.grad).tolist() == [1, 2, 3]
    with pytest.raises(RuntimeError, match="requires_grad_: only a leaf's flag can change"):
        (w * 2).requires_grad_()
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        md.arange(3).requires_grad_()
    with pytest.raises(RuntimeError, match=r"zero_: this tensor requires a gradient.*md.no_grad\(\)"):
        w.zero_()
    v = md.ones(2, 2, requires_grad=True)
    with md.no_grad():
        assert v.zero_() is v
    assert host(v).tolist() == [[0, 0], [0, 0]] and v.requires_grad
    assert md.is_grad_enabled()
    with md.no_grad():
        assert not md.is_grad_enabled()


@pytest.mark.parametrize("convert", [float, int, bool])
def test_python_numbers_of_one_element_as_pytorch(convert):
    torch = pytest.importorskip("torch")
    for value in ([2.7], [[-1.5]], 0.0, [3]):
        assert convert(md.tensor(value)) == convert(torch.tensor(value))
        assert type(convert(md.tensor(value))) is convert
    with pytest.raises((RuntimeError, ValueError)) as theirs:    # bool: RuntimeError; float, int: ValueError
        convert(torch.tensor([1.0, 2.0]))
    with pytest.raises(type(theirs.value), match=r"shape \(2,\)") as ours:
        convert(md.tensor([1.0, 2.0]))
    assert isinstance(ours.value, ValueError) and isinstance(ours.value, RuntimeError)


def test_many_values_say_why_they_are_no_number():
    with pytest.raises(ValueError, match=r"float: only a tensor with one element converts to a Python number; "
                                         r"this one has shape \(2, 3\) \(6 elements\)\. Reduce it first"):
        float(md.zeros(2, 3))
    assert list(range(md.tensor(3))) == [0, 1, 2]
    with pytest.raises(TypeError, match="only an integer tensor can be an index"):
        [1, 2][md.tensor(1.0)]


# ---- the mistakes a PyTorch user catches -------------------------------------------------
MISTAKES = [   # (name, f(m)): the same mistake in both libraries
    ("broadcast", lambda m: m.ones(2, 3) + m.ones(4)),
    ("reshape", lambda m: m.ones(2, 3).reshape(4, 4)),
    ("view", lambda m: m.ones(2, 3).view(5)),
    ("matmul", lambda m: m.ones(2, 3) @ m.ones(2, 3)),
    ("linear", lambda m: m.nn.functional.linear(m.ones(2, 3), m.ones(4, 5))),
    ("cat", lambda m: m.cat([m.ones(2, 3), m.ones(3, 2)], dim=1)),
    ("cat_nothing", lambda m: m.cat([])),
    ("stack", lambda m: m.stack([m.ones(2), m.ones(3)])),
    ("expand", lambda m: m.ones(2, 3).expand(4, 3)),
    ("permute", lambda m: m.ones(2, 3).permute(1, 0, 2)),
    ("sum_dim", lambda m: m.ones(2, 3).sum(dim=2)),
    ("softmax_dim", lambda m: m.ones(2, 3).softmax(dim=-3)),
    ("transpose_dim", lambda m: m.ones(2, 3).transpose(0, 2)),
    ("index", lambda m: m.ones(2, 3)[5]),
    ("item", lambda m: m.ones(2).item()),
    ("bool", lambda m: bool(m.ones(2))),
    ("int_negative_power", lambda m: m.ones(2, dtype=m.long) ** -1),
    ("conv_channels", lambda m: m.nn.functional.conv2d(m.ones(1, 2, 5, 5), m.ones(3, 4, 3, 3))),
    ("one_hot", lambda m: m.nn.functional.one_hot(m.tensor([0, 3]), 3)),
    ("cross_entropy_target", lambda m: m.nn.functional.cross_entropy(m.zeros(2, 3), m.tensor([0, 5]))),
    ("backward_shape", lambda m: (m.ones(2, requires_grad=True) * 2).backward(m.ones(3))),
    ("layer_norm", lambda m: m.nn.functional.layer_norm(m.ones(2, 3), (4,))),
]


@pytest.mark.parametrize("name, mistake", MISTAKES, ids=[c[0] for c in MISTAKES])
def test_errors_are_what_pytorch_users_catch(name, mistake):
    """Where PyTorch raises RuntimeError or IndexError, minidl's error is one too, and
    still the ValueError (or TypeError) a NumPy user catches."""
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception) as theirs:
        mistake(torch)
    kind = next(k for k in (IndexError, RuntimeError, ValueError, TypeError) if isinstance(theirs.value, k))
    with pytest.raises(Exception) as ours:
        mistake(md)
        md.backend.check_pending()       # a GPU defers its range checks to here
    assert isinstance(ours.value, kind), f"minidl raised {type(ours.value).__name__}: {ours.value}"
    assert isinstance(ours.value, (ValueError, TypeError, IndexError))


# ---- hints that name the fix ---------------------------------------------------------
def test_linear_on_a_conv_output_says_flatten_first():
    with pytest.raises(ValueError, match=r"expects 256; flatten first \(nn\.Flatten\(\) before the Linear, or "
                                         r"x\.flatten\(1\)\): that gives 256 features per sample, as the weight"):
        md.nn.Linear(16 * 4 * 4, 120)(md.zeros(2, 16, 4, 4))
    with pytest.raises(ValueError, match="so the layer needs in_features=400"):
        md.nn.Linear(256, 120)(md.zeros(2, 16, 5, 5))


def test_cross_entropy_with_one_hot_targets_says_pass_class_indices():
    logits, targets = md.randn(4, 3), F.one_hot(md.tensor([0, 2, 1, 2]), 3).float()
    with pytest.raises(ValueError, match=r"look one-hot; cross_entropy takes class indices \(N,\): pass "
                                         r"targets\.argmax\(axis=1\)"):
        F.cross_entropy(logits, targets)
    assert F.cross_entropy(logits, targets.argmax(axis=1)).shape == ()


def test_too_few_values_name_the_unbiased_variance():
    with pytest.raises(ValueError, match=r"for the unbiased variance \(ddof=1: divided by n − 1; PyTorch's "
                                         r"default with dim=\); ddof=0 \(correction=0\) gives the biased one"):
        md.ones(1, 3).var(dim=0)
    assert md.ones(1, 3).var(dim=0, correction=0).shape == (3,)


def test_torch_max_of_two_tensors_names_maximum():
    with pytest.raises(TypeError, match=r"the elementwise max of two tensors is md\.maximum\(a, b\)"):
        md.max(md.ones(2), md.zeros(2))


# ---- a name minidl lacks ---------------------------------------------------------------
@pytest.mark.parametrize("get, says", [
    (lambda: md.ones(2).cumsum, "minidl's Tensor has no attribute 'cumsum': minidl has no such op"),
    (lambda: md.ones(2).grad_fn, "minidl's spelling: x.creator"),
    (lambda: md.ones(2).cuda, r"minidl's spelling: x\.to\('gpu'\)"),
    (lambda: md.ones(2).add_, r"Its in-place methods are zero_\(\) and requires_grad_\(\)"),
    (lambda: md.from_numpy, r"module 'minidl' has no attribute 'from_numpy': minidl has no such op; "
                            r"minidl's spelling: md\.tensor\(array\)"),
    (lambda: md.einsum, "module 'minidl' has no attribute 'einsum': minidl has no such op"),
    (lambda: md.nn.LazyLinear, r"minidl's spelling: nn\.Linear\(in_features, out_features\)"),
    (lambda: md.nn.CrossEntropyLoss, r"md\.functional\.cross_entropy\(logits, targets\)"),
    (lambda: md.nn.DataParallel, r"nn\.SplitBatch\(model, pieces\): the batch's pieces in threads, BatchNorm over "
                                  r"the whole batch"),
    (lambda: F.adaptive_avg_pool2d, r"x\.mean\(axis=\(2, 3\), keepdims=True\)"),
])
def test_a_missing_name_says_minidl_has_no_such_op(get, says):
    with pytest.raises(AttributeError, match=says) as e:
        get()
    assert e.value.name in str(e.value)


def test_missing_names_leave_python_s_protocols_alone():
    x = md.randn(2, 3, requires_grad=True)
    assert not hasattr(x, "__array_interface__") and not hasattr(md, "__wrapped__")
    assert np.array_equal(host(copy.deepcopy(x)), host(x)) and pickle.loads(pickle.dumps(x)).shape == (2, 3)
    assert getattr(md.ones(1), "no_such_name", "default") == "default"
    from minidl import graph  # noqa: F401   (a submodule still imports by name)


# ---- your own op -------------------------------------------------------------------
def pytorch_style_ops(m):
    """Two ops written PyTorch's way, the same code for torch and for minidl."""
    class Cube(m.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad_output):
            x, = ctx.saved_tensors
            return grad_output * 3 * x ** 2

    class ScaledProduct(m.autograd.Function):     # two tensors and a number
        @staticmethod
        def forward(ctx, a, b, scale):
            ctx.save_for_backward(a, b)
            ctx.scale = scale
            return a * b * scale

        @staticmethod
        def backward(ctx, grad_output):
            a, b = ctx.saved_tensors
            ga = grad_output * b * ctx.scale if ctx.needs_input_grad[0] else None
            return ga, grad_output * a * ctx.scale, None

    return Cube, ScaledProduct


@pytest.mark.parametrize("which, shapes", [(0, [(3, 4)]), (1, [(3, 4), (4,)])], ids=["Cube", "ScaledProduct"])
def test_an_op_written_pytorch_s_way_runs_as_in_pytorch(which, shapes):
    ops = {}

    def call(m, *xs):
        op = ops.setdefault(m.__name__, pytorch_style_ops(m)[which])
        return op.apply(*xs, 2.5) if which else op.apply(*xs)
    against_torch(*same_code(call), shapes)


def test_an_op_written_pytorch_s_way_gradchecks(backend):
    Cube, ScaledProduct = pytorch_style_ops(md)
    check_op(Cube.apply, [(3, 4)])
    check_op(lambda a, b: ScaledProduct.apply(a, b, -1.5), [(2, 3), (3,)])


def test_pytorch_s_spelling_misused_says_minidl_s_way():
    Cube, _ = pytorch_style_ops(md)
    with pytest.raises(TypeError, match=r"Cube is written PyTorch's way .*call it as Cube\.apply\(\.\.\.\)"):
        Cube()(md.ones(2))

    class Marks(md.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x

    with pytest.raises(AttributeError, match="minidl's ctx has no 'mark_dirty': it has save_for_backward"):
        Marks.apply(md.ones(2, requires_grad=True))

    class TwoGrads(md.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, g

    with pytest.raises(TypeError, match=r"TwoGrads\.backward returned 2 gradient\(s\) for the 1 inputs"):
        TwoGrads.apply(md.ones(2, requires_grad=True)).sum().backward()


def test_an_op_written_minidl_s_way_also_has_apply(backend):
    class Square(md.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return 2 * self.x * gy

    check_op(Square.apply, [(3, 2)], lambda a: a * a)
    assert md.autograd.Function is md.Function


# ---- d2l's Batch Normalization from scratch ---------------------------------------------
def _d2l_and_minidl_lenets():
    import d2l_bn
    md.manual_seed(0)
    ours = d2l_bn.bn_lenet()
    # d2l's momentum=0.9 weighs the new batch (minidl's decay 0.1), its moving variance is the biased one
    reference = d2l_bn.bn_lenet(lambda C, num_dims: (md.nn.BatchNorm2d if num_dims == 4 else md.nn.BatchNorm1d)(
        C, decay=0.1, unbiased_running_var=False))
    for a, b in zip(ours, reference):
        if isinstance(a, (md.nn.Conv2d, md.nn.Linear)):
            b.weight.data[...], b.bias.data[...] = a.weight.data, a.bias.data
    return d2l_bn, ours, reference


def test_d2l_batch_norm_from_scratch_trains_and_matches_minidl_s_batchnorm():
    """d2l's code as the book has it: `import minidl as torch`, `from minidl import nn`.
    It runs on the CPU: its `moving_mean.data` is an array in minidl (README, differences)."""
    before = md.get_backend()
    md.use_backend("numpy")
    try:
        d2l_bn, ours, reference = _d2l_and_minidl_lenets()
        rng = np.random.default_rng(1)
        X, y = md.tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32)), md.tensor(rng.integers(0, 10, 16))
        optimizers = [md.optim.SGD(net.parameters(), lr=0.9) for net in (ours, reference)]
        for step in range(2):
            losses = []
            for net, opt in zip((ours, reference), optimizers):
                opt.zero_grad()
                loss = md.nn.functional.cross_entropy(net(X), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            assert losses[0] == pytest.approx(losses[1], rel=1e-5), f"step {step}"
        for a, b in zip(ours, reference):
            if isinstance(a, d2l_bn.BatchNorm):
                for got, want in ((a.gamma, b.gamma), (a.beta, b.beta), (a.moving_mean, b.running_mean),
                                  (a.moving_var, b.running_var)):
                    np.testing.assert_allclose(np.ravel(host(got)), host(want), rtol=1e-4, atol=1e-6)
        assert any(isinstance(a, d2l_bn.BatchNorm) for a in ours)
        reference.eval()
        with md.no_grad():          # d2l's prediction mode: is_grad_enabled() is False
            np.testing.assert_allclose(host(ours(X * 0.5)), host(reference(X * 0.5)), rtol=1e-4, atol=1e-5)
    finally:
        md.use_backend(before)


def test_a_tied_weight_is_one_parameter_as_in_pytorch():
    """parameters() and named_parameters() give a shared weight once (an optimizer
    given them updated it twice a step), state_dict() keeps every name: PyTorch's rules."""
    torch = pytest.importorskip("torch")

    def tied(nn):
        a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        b.weight = a.weight
        return nn.Sequential(a, b, a)                # a layer used twice, too
    ours, theirs = tied(md.nn), tied(torch.nn)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()] \
        == ["0.weight", "0.bias", "1.bias"]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            q.copy_(torch.from_numpy(host(p)))
    opt, topt = md.optim.SGD(ours.parameters(), lr=0.1), torch.optim.SGD(theirs.parameters(), lr=0.1)
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    ours(md.Tensor(x)).sum().backward()
    theirs(torch.from_numpy(x)).sum().backward()
    opt.step()
    topt.step()
    for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(host(p), q.detach().numpy(), rtol=1e-6)
    ours.load_state_dict(ours.state_dict())          # every name back in, the shared one twice
