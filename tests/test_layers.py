"""Layers: fast kernels against their slow references and through gradcheck,
modules, init, optimizers against PyTorch's published update rules."""
import math

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import check_op, randn

CONV_CASES = [  # (x shape, W shape, stride, padding): strides, padding, non-square kernels
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0),
    ((2, 2, 8, 7), (3, 2, 3, 2), 2, 1),
    ((1, 3, 6, 9), (2, 3, 1, 4), (1, 2), (2, 0)),
    ((2, 2, 5, 6), (3, 2, 2, 3), 1, (1, 2)),     # stride 1: windows over whole padded rows
    ((2, 2, 4, 3), (2, 2, 2, 3), 1, 0),          # kernel as wide as the input
]


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_matches_reference_and_gradcheck(backend, xs, ws, stride, padding):
    check_op(lambda x, W, b: F.conv2d(x, W, b, stride, padding), [xs, ws, (ws[0],)])
    args = [md.Tensor(randn(*s, seed=i)) for i, s in enumerate([xs, ws, (ws[0],)])]
    fast = F.conv2d(*args, stride=stride, padding=padding)
    slow = F.conv2d_reference(*args, stride=stride, padding=padding)
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), atol=1e-12)
    check_op(lambda x, W, b: F.conv2d_reference(x, W, b, stride, padding), [xs, ws, (ws[0],)])


def test_conv2d_gradients_match_reference_gradients(backend):
    xs, ws = (3, 2, 6, 6), (4, 2, 3, 3)
    grads = []
    for conv in (F.conv2d, F.conv2d_reference):
        x, W = md.Tensor(randn(*xs), requires_grad=True), md.Tensor(randn(*ws, seed=1), requires_grad=True)
        conv(x, W, None, 2, 1).backward(randn(3, 4, 3, 3, seed=2))
        grads.append((md.backend.as_numpy(x.grad), md.backend.as_numpy(W.grad)))
    for fast, slow in zip(*grads):
        np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_conv2d_in_chunks_equals_one_piece(backend, monkeypatch):
    x, W = md.Tensor(randn(5, 2, 6, 6), requires_grad=True), md.Tensor(randn(3, 2, 3, 3, seed=1))
    whole = F.conv2d(x, W)
    whole.backward(randn(*whole.shape, seed=3))
    g_whole = md.backend.as_numpy(x.grad)
    monkeypatch.setitem(md.ops.conv.CACHE_BYTES, md.get_backend(), 1)   # one sample per piece
    monkeypatch.setitem(md.ops.conv.COL_BYTES, md.get_backend(), 1)
    x.zero_grad()
    chunked = F.conv2d(x, W)
    chunked.backward(randn(*whole.shape, seed=3))
    np.testing.assert_allclose(chunked.numpy(), whole.numpy(), atol=1e-12)
    np.testing.assert_allclose(md.backend.as_numpy(x.grad), g_whole, atol=1e-12)


BLOCKING_CASES = [
    ((2, 3, 9, 7), (2, 3, 3, 3), 0),          # 7 output rows: the last block is short
    ((2, 2, 7, 6), (3, 2, 4, 2), (2, 1)),     # padding that is no multiple of the block
    ((2, 2, 11, 6), (3, 2, 5, 3), (1, 0)),    # LeNet-5's kh = 5, odd padding: B = 2, 4, 8
    ((3, 1, 12, 5), (1, 1, 1, 3), 0),         # a one-row kernel
]


@pytest.mark.parametrize("xs, ws, padding", BLOCKING_CASES)
@pytest.mark.parametrize("rows", [4, 8, 64])
def test_conv2d_output_blocking_equals_the_plain_conv(backend, monkeypatch, xs, ws, padding, rows):
    """Blocked (B output rows as B·O channels) against B = 1, forward and
    every gradient, for B from 2 to 8."""
    monkeypatch.setattr(md.ops.row_blocking, "BLOCK_MACS", 0)
    results = []
    for block_rows in (None, rows):
        monkeypatch.setitem(md.ops.row_blocking.BLOCK_ROWS, md.get_backend(), block_rows)
        x, W, b = (md.Tensor(randn(*s, seed=i), requires_grad=True) for i, s in enumerate([xs, ws, (ws[0],)]))
        y = F.conv2d(x, W, b, padding=padding)
        y.backward(randn(*y.shape, seed=5))
        results.append((y.creator, [md.backend.as_numpy(t) for t in (y.data, x.grad, W.grad, b.grad)]))
    (plain_op, plain), (op, blocked) = results
    expected = 1
    while expected * ws[0] < rows and 2 * expected <= min(y.shape[2], md.ops.row_blocking.MAX_BLOCK):
        expected *= 2
    assert plain_op.plan.block == 1 and op.plan.block == expected > 1
    for a, b in zip(blocked, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # the windows, wide rows and all, stay inside x′ (its zero rows below and the spare row)
    for conv in (plain_op, op):
        windows = conv._windows(conv.xc, conv.plan)          # an as_strided view from xc's first byte
        assert sum((n - 1) * step for n, step in zip(windows.shape, windows.strides)) + windows.itemsize \
            <= conv.xc.nbytes


@pytest.mark.filterwarnings("ignore:invalid value")     # inf − inf in dl/dW, in both convs
@pytest.mark.parametrize("where", ["input", "upstream"])
def test_conv2d_blocking_keeps_inf_where_the_plain_conv_has_it(backend, monkeypatch, where):
    """W′'s zero taps meet pixels outside an output's window: 0·inf would be NaN
    there, where the plain conv has a number. A non-finite input, or upstream
    gradient on its way to dl/dx, is convolved unblocked."""
    monkeypatch.setitem(md.ops.row_blocking.BLOCK_ROWS, md.get_backend(), 64)
    monkeypatch.setattr(md.ops.row_blocking, "BLOCK_MACS", 0)
    xv, gv = randn(2, 2, 9, 5), randn(2, 3, 7, 3, seed=2)
    (xv if where == "input" else gv)[1, 0, 4, 2] = np.inf
    grads = []
    for conv in (F.conv2d, F.conv2d_reference):
        x, W = md.Tensor(xv, requires_grad=True), md.Tensor(randn(3, 2, 3, 3, seed=1), requires_grad=True)
        y = conv(x, W)
        y.backward(gv)
        grads.append([md.backend.as_numpy(t) for t in (y.data, x.grad)])
    assert np.isfinite(grads[1][0 if where == "input" else 1]).sum() > 0     # finite values to keep
    for fast, slow in zip(*grads):
        np.testing.assert_allclose(fast, slow, atol=1e-12)            # NaN and inf where the reference has them

POOL_CASES = [((2, 3, 6, 6), 2, None, 0), ((2, 2, 7, 8), 3, 2, 1), ((1, 2, 5, 7), (2, 3), (1, 2), 0),
              ((2, 2, 7, 5), 2, None, 0)]   # last row and column in no window: zero gradient


@pytest.mark.parametrize("xs, k, s, p", POOL_CASES)
def test_max_pool2d(backend, xs, k, s, p):
    check_op(lambda x: F.max_pool2d(x, k, s, p), [xs])
    x = md.Tensor(randn(*xs))
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p).numpy(),
                                  F.max_pool2d_reference(x, k, s, p).numpy())


@pytest.mark.parametrize("xs, k, s, p", POOL_CASES)
def test_avg_pool2d(backend, xs, k, s, p):
    check_op(lambda x: F.avg_pool2d(x, k, s, p), [xs])
    x = md.Tensor(randn(*xs))
    np.testing.assert_allclose(F.avg_pool2d(x, k, s, p).numpy(),
                               F.avg_pool2d_reference(x, k, s, p).numpy(), atol=1e-12)


def test_max_pool_tie_gives_gradient_to_first_max_once(backend):
    x = md.Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(md.backend.as_numpy(x.grad)[0, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("window, first", [
    ([[0, 5], [5, 0]], (0, 1)),     # the first row holding the max wins over an earlier column
    ([[0, 1], [5, 5]], (1, 0)),
    ([[5, 1], [0, 5]], (0, 0)),
    ([[1, 5, 5], [5, 0, 0], [0, 0, 0]], (0, 1))])
def test_max_pool_gradient_goes_to_the_first_max_in_row_major_order(backend, window, first):
    """Max pooling runs along W, then along H; ties must still resolve as
    PyTorch's (and the reference's) single pass over the window does."""
    k = len(window)
    x = md.Tensor(np.array(window, dtype=np.float64)[None, None], requires_grad=True)
    F.max_pool2d(x, k).sum().backward()
    expected = np.zeros((k, k))
    expected[first] = 1
    np.testing.assert_array_equal(md.backend.as_numpy(x.grad)[0, 0], expected)


def test_linear_and_global_avg_pool(backend):
    check_op(F.linear, [(4, 3), (5, 3), (5,)], lambda x, W, b: x @ W.T + b)
    check_op(lambda x: md.nn.GlobalAvgPool2d()(x), [(2, 3, 4, 5)], lambda x: x.mean(axis=(2, 3)))


def test_layer_errors_name_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Conv2d: expected input \(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        md.nn.Conv2d(3, 4, 3)(md.Tensor(np.zeros((2, 1, 8, 8), np.float32)))
    with pytest.raises(ValueError, match=r"conv2d: kernel \(5, 5\) is larger than the padded input"):
        F.conv2d(md.Tensor(np.zeros((1, 1, 3, 3))), md.Tensor(np.zeros((1, 1, 5, 5))))
    with pytest.raises(ValueError, match=r"linear: input has 7 features"):
        md.nn.Linear(3, 2)(md.Tensor(np.zeros((4, 7), np.float32)))


def test_dropout_is_reproducible_and_off_in_eval():
    x = md.Tensor(np.ones((1000,), np.float32))
    layer = md.nn.Dropout(0.25)
    md.manual_seed(3)
    a = layer(x).numpy()
    md.manual_seed(3)
    b = layer(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)} and abs(a.mean() - 1) < 0.1
    np.testing.assert_array_equal(layer.eval()(x).numpy(), x.numpy())
    check_op(lambda x: (md.manual_seed(0), F.dropout(x, 0.5))[1], [(4, 5)])


def test_module_registration_order_state_dict_and_errors():
    class Net(md.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = md.nn.Linear(2, 3)
            self.a = md.nn.BatchNorm1d(3)

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["b.weight", "b.bias", "a.gamma", "a.beta"]
    assert list(net.state_dict()) == ["b.weight", "b.bias", "a.gamma", "a.beta",
                                      "a.running_mean", "a.running_var"]
    assert not net.eval().a.training and net.train().a.training
    other = Net()
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other.b.weight.numpy(), net.b.weight.numpy())
    bad = net.state_dict()
    bad["b.weight"] = np.zeros((4, 2))
    del bad["a.beta"]
    bad["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: \['a.beta'\].*unexpected keys: \['extra'\]"
                                         r".*b.weight: checkpoint \(4, 2\) vs model \(3, 2\)"):
        other.load_state_dict(bad)

    class Forgot(md.nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(AttributeError, match="call super"):
        Forgot()


def test_init_statistics():
    md.manual_seed(0)
    w = md.nn.Parameter(np.zeros((400, 300), np.float32))
    md.nn.init.kaiming_normal_(w)
    assert abs(w.numpy().std() - math.sqrt(2 / 300)) < 2e-3
    md.nn.init.xavier_uniform_(w)
    assert abs(np.abs(w.numpy()).max() - math.sqrt(6 / 700)) < 1e-3
    md.nn.init.kaiming_uniform_(w)
    assert abs(w.numpy().std() - math.sqrt(2 / 300)) < 2e-3
    md.nn.init.xavier_normal_(w)
    assert abs(w.numpy().std() - math.sqrt(2 / 700)) < 2e-3
    lin = md.nn.Linear(50, 10)
    assert np.abs(lin.weight.numpy()).max() <= 1 / math.sqrt(50)
    md.manual_seed(1)
    a = md.nn.Conv2d(3, 4, 3).weight.numpy()
    md.manual_seed(1)
    np.testing.assert_array_equal(a, md.nn.Conv2d(3, 4, 3).weight.numpy())


def _reference_updates(name, hyper, grads, p0, lr):
    """The update rules as PyTorch documents them, written out in plain NumPy."""
    p, state = p0.copy(), {}
    for t, g in enumerate(grads, 1):
        g = g + hyper.get("weight_decay", 0) * p
        if name == "SGD":
            mu = hyper.get("momentum", 0)
            if mu:
                state["b"] = g if t == 1 else mu * state["b"] + g
                g = g + mu * state["b"] if hyper.get("nesterov") else state["b"]
            p = p - lr * g
        elif name == "Adagrad":
            state["s"] = state.get("s", 0) + g * g
            p = p - lr * g / (np.sqrt(state["s"]) + 1e-10)
        elif name == "RMSprop":
            state["v"] = 0.99 * state.get("v", 0) + 0.01 * g * g
            p = p - lr * g / (np.sqrt(state["v"]) + 1e-8)
        elif name == "Adam":
            state["m"] = 0.9 * state.get("m", 0) + 0.1 * g
            state["v"] = 0.999 * state.get("v", 0) + 0.001 * g * g
            m_hat, v_hat = state["m"] / (1 - 0.9 ** t), state["v"] / (1 - 0.999 ** t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return p


@pytest.mark.parametrize("name, hyper", [
    ("SGD", {}), ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("SGD", {"momentum": 0.5, "weight_decay": 0.1}), ("Adagrad", {}), ("RMSprop", {}),
    ("Adam", {}), ("Adam", {"weight_decay": 0.01}),
])
def test_optimizers_follow_pytorch_rules(name, hyper):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    p = md.nn.Parameter(p0.copy())
    opt = getattr(md.optim, name)([p], lr=0.05, **hyper)
    for g in grads:
        p.grad = md.backend.to_device(g, p.device)
        opt.step()
    np.testing.assert_allclose(p.numpy(), _reference_updates(name, hyper, grads, p0, 0.05), rtol=1e-12)


def test_optimizer_refuses_nan_gradient_and_schedules():
    p = md.nn.Parameter(np.zeros(2))
    opt = md.optim.SGD([p], lr=1.0)
    p.grad = md.backend.to_device(np.array([np.nan, 0.0]), p.device)
    with pytest.raises(FloatingPointError, match=r"SGD.step: a gradient of shape \(2,\) holds NaN"):
        opt.step()
    sched = md.optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 0.5, 0.5, 0.25]
    cos = md.optim.CosineAnnealingLR(md.optim.SGD([p], lr=1.0), T_max=4)
    for _ in range(2):
        cos.step()
    assert abs(cos.optimizer.lr - 0.5) < 1e-12


def test_a_small_network_learns(backend):
    md.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    net = md.nn.Sequential(md.nn.Linear(2, 16), md.nn.Tanh(), md.nn.Linear(16, 2))
    opt = md.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        loss = F.cross_entropy(net(md.Tensor(x)), md.Tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2


# ---- the homework's traps, caught where they happen --------------------------
@pytest.mark.parametrize("layer, dtype, hint", [
    (lambda: md.nn.Conv2d(1, 2, 3), np.uint8, "/ 255"),
    (lambda: md.nn.Linear(9, 2), np.int64, "astype('float32')"),
])
def test_layers_refuse_integer_input_naming_the_fix(layer, dtype, hint):
    x = md.Tensor(np.zeros((2, 1, 3, 3) if dtype == np.uint8 else (2, 9), dtype))
    with pytest.raises(TypeError) as e:
        layer()(x)
    message = str(e.value)
    assert message.startswith(("Conv2d:", "Linear:")) and str(np.dtype(dtype)) in message and hint in message


def test_a_reassigned_buffer_stays_a_buffer_and_off_the_graph():
    class Running(md.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("moving_mean", np.zeros(3, np.float32))

    m = Running()
    m.moving_mean = md.Tensor(np.ones(3, np.float32))              # as PyTorch: still a buffer
    assert [n for n, _ in m.named_buffers()] == ["moving_mean"]
    assert (m.state_dict()["moving_mean"] == 1).all()
    on_graph = md.Tensor(np.ones(3, np.float32), requires_grad=True) * 0.5
    with pytest.raises(ValueError, match="buffer 'moving_mean'.*no_grad"):
        m.moving_mean = on_graph
    with md.no_grad():
        m.moving_mean = md.Tensor(np.ones(3, np.float32), requires_grad=True) * 0.5
    assert not m.moving_mean.requires_grad


def test_a_float64_parameter_in_a_float32_net_is_named_by_its_module():
    class Homework(md.nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = md.nn.Parameter(np.ones((1, 3)))          # float64: np.ones's default
            self.beta = md.nn.Parameter(np.zeros((1, 3), np.float32))

        def forward(self, x):
            return x * self.gamma + self.beta

    net = md.nn.Sequential(md.nn.Linear(3, 3), Homework())
    with pytest.raises(TypeError) as e:
        net(md.Tensor(np.ones((2, 3), np.float32)))
    message = str(e.value)
    assert message.startswith("Homework: its input is float32 but gamma is float64")
    assert "beta" not in message and "np.ones(shape, np.float32)" in message


def test_lenet5_norm_after_the_convolutions_only():
    every = [type(m).__name__ for m in md.models.LeNet5(norm="batch").modules()]
    conv = [type(m).__name__ for m in md.models.LeNet5(norm="batch", norm_layers="conv").modules()]
    assert every.count("BatchNorm") == 4 and conv.count("BatchNorm") == 2
    assert [n for n in conv if n != "BatchNorm"] == [n for n in every if n != "BatchNorm"]
    weights = []     # the same initial weights as BN everywhere: BN draws nothing at random
    for layers in ("conv", "all"):
        md.manual_seed(0)
        model = md.models.LeNet5(norm="batch", norm_layers=layers)
        weights.append([m.weight.numpy() for m in model.modules() if isinstance(m, (md.nn.Conv2d, md.nn.Linear))])
    assert len(weights[0]) == 5 and all(np.array_equal(a, b) for a, b in zip(*weights))
    with pytest.raises(ValueError, match="LeNet5: norm_layers must be 'all' or 'conv', got 'fc'"):
        md.models.LeNet5(norm="batch", norm_layers="fc")


@pytest.mark.parametrize("upstream", ["broadcast", "transposed"])
def test_conv2d_takes_any_upstream_layout(backend, monkeypatch, upstream):
    """The blocked conv copies dl/dy row by row: a broadcast or transposed
    upstream gradient must give the reference's gradients all the same."""
    monkeypatch.setitem(md.ops.row_blocking.BLOCK_ROWS, md.get_backend(), 24)
    monkeypatch.setattr(md.ops.row_blocking, "BLOCK_MACS", 0)          # tiny shapes, blocked all the same
    grads = []
    for conv in (F.conv2d, F.conv2d_reference):
        x = md.Tensor(randn(2, 1, 9, 9), requires_grad=True)
        W = md.Tensor(randn(2, 1, 3, 3, seed=1), requires_grad=True)
        y = conv(x, W)
        if upstream == "broadcast":
            y.sum().backward()
        else:
            y.transpose((0, 1, 3, 2)).backward(randn(2, 2, 7, 7, seed=2))
        assert conv is F.conv2d_reference or y.creator.plan.block > 1
        grads.append([md.backend.as_numpy(t.grad) for t in (x, W)])
    for fast, slow in zip(*grads):
        np.testing.assert_allclose(fast, slow, atol=1e-12)
