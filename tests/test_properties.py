"""Property-based tests (hypothesis): every op and layer against a plain-NumPy
float64 reference of its formula, or its slow reference, with a random upstream
gradient, over random shapes: broadcasting both ways, size-0 and size-1 axes,
0-d tensors, negative axes, axis tuples, keepdims, non-contiguous inputs,
integer indices with repeats, random kernel/stride/padding, random norm shapes
and eps, extreme logits.

The default profile (tests/conftest.py) is fixed-seed and bounded, so it runs
in the default suite; ``pytest --hypothesis-profile=thorough
tests/test_properties.py`` runs 20 times as many random examples."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidl as md
from conftest import host
import minidl.functional as F

finite = st.floats(-3, 3, allow_nan=False, width=64)


def arrays(shape, elements=finite):
    return hnp.arrays(np.float64, shape, elements=elements)


def check_against(fn, np_fn, *xs, upstream_seed=0, **kw):
    """fn on Tensors == np_fn on arrays (forward), and fn's gradient passes gradcheck."""
    y = fn(*[md.Tensor(x) for x in xs])
    np.testing.assert_allclose(y.numpy(), np_fn(*xs), rtol=1e-10, atol=1e-12)
    if y.size and all(x.size for x in xs):
        md.gradcheck(fn, [md.Tensor(x) for x in xs], seed=upstream_seed, **kw)


# ---- elementwise, broadcasting both ways ------------------------------------
BINARY = {"add": (F.add, np.add), "sub": (F.sub, np.subtract), "mul": (F.mul, np.multiply),
          "maximum": (F.maximum, np.maximum)}


@pytest.mark.parametrize("op", sorted(BINARY))
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                                 min_side=0, max_side=3))
def test_binary_ops_broadcast_both_ways(op, data, shapes):
    a = data.draw(arrays(shapes.input_shapes[0]))
    b = data.draw(arrays(shapes.input_shapes[1]))
    if op == "maximum":
        assume(np.abs(np.subtract(a, b)).min(initial=1) > 1e-3)        # away from the tie
    check_against(BINARY[op][0], BINARY[op][1], a, b)


@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                                 min_side=1, max_side=3))
def test_division_broadcasts(data, shapes):
    a = data.draw(arrays(shapes.input_shapes[0]))
    b = data.draw(arrays(shapes.input_shapes[1], st.floats(0.5, 3)))
    check_against(F.div, np.divide, a, b)


UNARY = {"exp": (F.exp, np.exp, finite), "log": (F.log, np.log, st.floats(0.1, 5)),
         "sqrt": (F.sqrt, np.sqrt, st.floats(0.1, 5)), "tanh": (F.tanh, np.tanh, finite),
         "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), st.floats(-30, 30)),
         "abs": (F.abs, np.abs, st.floats(0.1, 3) | st.floats(-3, -0.1)),
         "relu": (F.relu, lambda x: np.maximum(x, 0), st.floats(0.1, 3) | st.floats(-3, -0.1)),
         "square": (lambda x: x ** 2, np.square, finite)}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
def test_unary_ops(op, data, shape):
    fn, np_fn, elements = UNARY[op]
    check_against(fn, np_fn, data.draw(arrays(shape, elements)))


# ---- reductions: axes None, int, negative, tuple; keepdims -------------------
@st.composite
def reduction_case(draw, min_side=0):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=4))
    axes = draw(st.none() | st.integers(-len(shape), len(shape) - 1) |
                st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True)
                .map(lambda a: tuple(i - len(shape) if k % 2 else i for k, i in enumerate(a))))
    return draw(arrays(shape, st.floats(-3, 3).map(lambda v: round(v, 6)))), axes, draw(st.booleans())


@given(reduction_case())
def test_sum_and_mean(case):
    x, axis, keepdims = case
    check_against(lambda t: t.sum(axis=axis, keepdims=keepdims), lambda a: a.sum(axis=axis, keepdims=keepdims), x)
    reduced = x.size if axis is None else np.prod([x.shape[a] for a in np.atleast_1d(axis)])
    assume(reduced > 0)
    check_against(lambda t: t.mean(axis=axis, keepdims=keepdims),
                  lambda a: a.mean(axis=axis, keepdims=keepdims), x)


@given(reduction_case(min_side=1))
def test_max_and_var(case):
    x, axis, keepdims = case
    x = x + 1e-3 * np.arange(x.size).reshape(x.shape)                    # no ties
    assume(len(np.unique(x)) == x.size)
    check_against(lambda t: t.max(axis=axis, keepdims=keepdims), lambda a: a.max(axis=axis, keepdims=keepdims), x)
    reduced = x.size if axis is None else np.prod([x.shape[a] for a in np.atleast_1d(axis)])
    assume(reduced > 1)
    check_against(lambda t: t.var(axis=axis, keepdims=keepdims), lambda a: a.var(axis=axis, keepdims=keepdims), x)


# ---- non-contiguous inputs: the same numbers as contiguous ones ---------------
@given(arrays((4, 6)), st.sampled_from(["transpose", "every_other_row", "reversed_columns"]))
def test_non_contiguous_inputs_give_contiguous_results(x, view):
    base = md.backend.to_device(x, md.backend.default_device())
    xp = md.backend.get_array_module(base)
    a = {"transpose": base.T, "every_other_row": base[::2], "reversed_columns": base[:, ::-1]}[view]
    assert not a.flags.c_contiguous
    upstream = np.random.default_rng(0).standard_normal(a.shape[:1] + (3,))
    w = np.random.default_rng(1).standard_normal((a.shape[1], 3))
    results = []
    for arr in (a, xp.ascontiguousarray(a)):
        t = md.Tensor._wrap(arr, requires_grad=True)                      # the array as it is
        y = ((t @ md.Tensor(w)).tanh() * 2 + t.sum(axis=1, keepdims=True)).relu()
        y.backward(upstream)
        results.append((y.numpy(), host(t.grad)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)


# ---- integer indices with repeats --------------------------------------------
@given(arrays((5, 3)), st.lists(st.integers(-5, 4), min_size=1, max_size=8))
def test_integer_indexing_accumulates_repeated_entries(x, index):
    index = np.array(index)
    check_against(lambda t: t[index], lambda a: a[index], x)
    t = md.Tensor(x, requires_grad=True)
    upstream = np.random.default_rng(2).standard_normal((len(index), 3))
    t[index].backward(upstream)
    expected = np.zeros_like(x)
    np.add.at(expected, index, upstream)
    np.testing.assert_allclose(host(t.grad), expected, rtol=1e-12)


# ---- convolution and pooling against their slow references ---------------------
@st.composite
def window_case(draw, pool=False):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, min(kh, kw) // 2)) if pool else draw(st.integers(0, 2))
    h, w = draw(st.integers(max(kh - 2 * padding, 1), 6)), draw(st.integers(max(kw - 2 * padding, 1), 6))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    x = draw(arrays((n, c, h, w), st.floats(-3, 3).map(lambda v: round(v, 5))))
    return x, (kh, kw), stride, padding


def same_forward_and_backward(fast, slow, *xs):
    ts = [[md.Tensor(x, requires_grad=True) for x in xs] for _ in range(2)]
    ys = [fast(*ts[0]), slow(*ts[1])]
    np.testing.assert_allclose(ys[0].numpy(), ys[1].numpy(), rtol=1e-10, atol=1e-12)
    upstream = np.random.default_rng(3).standard_normal(ys[0].shape)
    for y in ys:
        y.backward(upstream)
    for a, b in zip(*ts):
        np.testing.assert_allclose(host(a.grad), host(b.grad), rtol=1e-10, atol=1e-12)


@given(window_case(), st.integers(1, 3), st.booleans(), st.booleans())
def test_conv2d_matches_its_reference(case, out_channels, bias, blocked):
    """With ``blocked``, a stride-1 conv blocks its rows whatever its size (see Conv2d)."""
    x, k, stride, padding = case
    rng = np.random.default_rng(4)
    W = rng.standard_normal((out_channels, x.shape[1]) + k)
    b = rng.standard_normal(out_channels)
    args = (x, W, b) if bias else (x, W)
    with pytest.MonkeyPatch.context() as mp:
        if blocked:
            mp.setitem(md.ops.row_blocking.BLOCK_ROWS, md.get_backend(), 64)
            mp.setattr(md.ops.row_blocking, "BLOCK_MACS", 0)
        same_forward_and_backward(lambda *t: F.conv2d(*t, stride=stride, padding=padding),
                                  lambda *t: F.conv2d_reference(*t, stride=stride, padding=padding), *args)
        md.gradcheck(lambda *t: F.conv2d(*t, stride=stride, padding=padding), [md.Tensor(a) for a in args])


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(case=window_case(pool=True))
def test_pools_match_their_references(kind, case):
    x, k, stride, padding = case
    x = x + 1e-3 * np.arange(x.size).reshape(x.shape)                    # no ties in a max window
    assume(len(np.unique(x)) == x.size)
    fast, slow = (F.max_pool2d, F.max_pool2d_reference) if kind == "max" else (F.avg_pool2d, F.avg_pool2d_reference)
    same_forward_and_backward(lambda t: fast(t, k, stride, padding), lambda t: slow(t, k, stride, padding), x)


# ---- the four norms: random shapes and eps --------------------------------------
def np_norm(x, axes, eps):
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


@given(data=st.data(), n=st.integers(1, 3), c=st.sampled_from([2, 4]), hw=st.integers(1, 3),
       eps=st.sampled_from([1e-5, 1e-3, 0.1]), kind=st.sampled_from(["batch", "layer", "instance", "group"]))
def test_norms_against_numpy(data, n, c, hw, eps, kind):
    axes = {"batch": (0, 2, 3), "layer": (1, 2, 3), "instance": (2, 3), "group": (2, 3, 4)}[kind]
    shape = (n, c, hw, hw)
    values = {"batch": n * hw * hw, "layer": c * hw * hw, "instance": hw * hw, "group": c // 2 * hw * hw}[kind]
    assume(values > 1)
    x = data.draw(arrays(shape, st.floats(-3, 3).map(lambda v: round(v, 4))))
    grouped = x.reshape(n, 2, c // 2, hw, hw) if kind == "group" else x
    assume(np.all(grouped.var(axis=axes) > 1e-2))                         # a spread to normalize
    fn = {"batch": lambda t: F.batch_norm(t, eps=eps), "layer": lambda t: F.layer_norm(t, shape[1:], eps=eps),
          "instance": lambda t: F.instance_norm(t, eps=eps), "group": lambda t: F.group_norm(t, 2, eps=eps)}[kind]
    ref = np_norm(grouped, axes, eps).reshape(shape)
    check_against(fn, lambda a: ref, x)


# ---- extreme logits -------------------------------------------------------------
@given(arrays((4, 5), st.floats(-1, 1)), st.sampled_from([1.0, 1e2, 1e4]))
def test_cross_entropy_stays_finite_and_exact_for_extreme_logits(z, scale):
    logits, targets = z * scale, np.array([0, 1, 2, 3])
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = -(shifted[np.arange(4), targets] - np.log(np.exp(shifted).sum(axis=1))).mean()
    loss = F.cross_entropy(md.Tensor(logits), targets)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12, atol=1e-12)
    if scale == 1.0:
        md.gradcheck(lambda t: F.cross_entropy(t, targets), [md.Tensor(logits)])


# ---- retain_grad on random graphs, against PyTorch ------------------------------
GRAPH_OPS = [  # (name, arity, minidl, torch)
    ("add", 2, lambda a, b: a + b, lambda a, b: a + b),
    ("mul", 2, lambda a, b: a * b, lambda a, b: a * b),
    ("sub", 2, lambda a, b: a - b, lambda a, b: a - b),
    ("tanh", 1, lambda a: a.tanh(), lambda a: a.tanh()),
    ("relu", 1, lambda a: a.relu(), lambda a: a.relu()),
    ("exp", 1, lambda a: (a * 0.3).exp(), lambda a: (a * 0.3).exp()),
    ("square", 1, lambda a: a * a, lambda a: a * a),
]


@given(arrays((3, 4)), arrays((3, 4)), st.lists(st.tuples(st.integers(0, len(GRAPH_OPS) - 1),
                                                         st.integers(0, 99), st.integers(0, 99)),
                                               min_size=1, max_size=8),
       arrays((3, 4)))
def test_retain_grad_matches_pytorch_on_random_graphs(a, b, plan, upstream):
    torch = pytest.importorskip("torch")
    ours, theirs = [md.Tensor(a, requires_grad=True), md.Tensor(b, requires_grad=True)], \
        [torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)]
    for op, i, j in plan:      # each new node reads one or two earlier nodes: shared subgraphs, diamonds
        _, arity, f_md, f_torch = GRAPH_OPS[op]
        picks = (i % len(ours), j % len(ours))[:arity]
        ours.append(f_md(*[ours[k] for k in picks]))
        theirs.append(f_torch(*[theirs[k] for k in picks]))
        ours[-1].retain_grad()
        theirs[-1].retain_grad()
    ours[-1].backward(upstream)
    theirs[-1].backward(torch.tensor(upstream))
    for k, (t_md, t_torch) in enumerate(zip(ours, theirs)):
        if t_torch.grad is None:            # not on the path to the output: no gradient either side
            assert t_md.grad is None, k
        else:
            np.testing.assert_allclose(host(t_md.grad), t_torch.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- advanced indexing: NumPy's rule, whatever the mix --------------------------
@st.composite
def index_expressions(draw):
    """A shape and an index into it mixing ints, lists of ints (repeats, negatives),
    slices, None and at most one ``...``: NumPy's rule decides the result's shape
    (x[0, :, [1, 2]] on (4, 5, 6, 7) is (2, 5, 7) here and in NumPy, (5, 2, 7) in PyTorch)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    parts, axis = [], 0
    length = draw(st.integers(1, 3))                                 # index lists broadcast together
    ellipsis_at = draw(st.none() | st.integers(0, len(shape)))
    while axis < len(shape):
        if axis == ellipsis_at:
            parts.append(Ellipsis)
            axis += draw(st.integers(0, len(shape) - axis))          # the axes ... stands for
            ellipsis_at = None
            continue
        n = shape[axis]
        kind = draw(st.sampled_from(["int", "list", "slice", "none", "stop"]))
        if kind == "stop":                                           # the rest stay whole
            break
        if kind == "none":
            parts.append(None)
            continue
        parts.append(draw(st.integers(-n, n - 1)) if kind == "int" else
                     draw(st.lists(st.integers(-n, n - 1), min_size=length, max_size=length)) if kind == "list" else
                     slice(draw(st.none() | st.integers(-n, n)), draw(st.none() | st.integers(-n, n)),
                           draw(st.sampled_from([None, 1, 2, -1]))))
        axis += 1
    return shape, tuple(parts)


@given(case=index_expressions(), data=st.data())
def test_index_expressions_follow_numpy_and_scatter_their_gradient(case, data):
    shape, index = case
    x = data.draw(arrays(shape))
    np_index = tuple(np.array(p) if isinstance(p, list) else p for p in index)
    expected = x[np_index]
    t = md.Tensor(x, requires_grad=True)
    y = t[index]
    assert y.shape == expected.shape, f"{index}: {y.shape}, NumPy's {expected.shape}"
    np.testing.assert_array_equal(host(y), expected)
    if y.size:
        upstream = np.random.default_rng(3).standard_normal(y.shape)
        y.backward(upstream)
        scattered = np.zeros(shape)
        np.add.at(scattered, np_index, upstream)                     # repeats accumulate
        np.testing.assert_allclose(host(t.grad), scattered, rtol=1e-12, atol=1e-12)
