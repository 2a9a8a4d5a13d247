"""nn.SplitBatch: one network's step on pieces of the batch, one thread each. The
result is the unsplit network's up to rounding (BatchNorm's statistics are the
whole batch's), and the same to the last bit on any number of threads."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import host
from minidl import backend


@pytest.fixture
def threads():
    before = md.get_num_threads()
    yield
    md.set_num_threads(before)


def train(norm, dtype, num_threads, pieces, steps=3, batch=12, model=None):
    """state_dict and the last step's output of a LeNet-5 (or ``model()``) after a few SGD steps."""
    md.set_num_threads(num_threads)
    md.manual_seed(0)
    net = (model or (lambda: md.models.LeNet5(norm=norm)))().astype(dtype)
    run = md.nn.SplitBatch(net, pieces) if pieces else net
    opt = md.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = md.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(dtype))
        out = run(x)
        loss = F.cross_entropy(out, md.Tensor(rng.integers(0, 10, batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.state_dict(), out


@pytest.mark.parametrize("norm", [None, "batch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_training_is_bit_identical_on_one_and_two_threads(threads, norm, dtype):
    one, out1 = train(norm, dtype, 1, pieces=3)
    two, out2 = train(norm, dtype, 2, pieces=3)
    assert len(one) == (10 if norm is None else 10 + 4 * 4)
    assert out1.dtype == np.dtype(dtype)          # no float64 from the pieces' counts
    for name in one:
        assert one[name].dtype == np.dtype(dtype) or "running" in name
        assert np.array_equal(one[name], two[name]), f"{name} differs between 1 and 2 threads"


@pytest.mark.parametrize("norm", [None, "batch"])
def test_split_training_is_the_unsplit_networks_up_to_rounding(threads, norm):
    """BatchNorm normalizes by the whole batch's μ and σ² and its running statistics
    count the whole batch (m/(m − 1) of 12·28·28 values, not 6·28·28): float64 agrees to 1e-12."""
    plain, out = train(norm, "float64", 2, pieces=None)
    split, out_split = train(norm, "float64", 2, pieces=2)
    np.testing.assert_allclose(host(out_split), host(out), rtol=1e-10, atol=1e-12)
    for name in plain:
        np.testing.assert_allclose(split[name], plain[name], rtol=1e-10, atol=1e-12, err_msg=name)
    if norm:     # the statistics moved: the comparison above is not of untouched buffers
        assert not np.allclose(plain["features.1.running_mean"], 0)


def test_split_backward_passes_gradcheck_with_batchnorm(threads):
    """The split op's backward against finite differences, float64, random upstream
    gradient (gradcheck's), through BatchNorm whose sums cross the pieces."""
    md.set_num_threads(2)
    md.manual_seed(0)
    net = md.nn.Sequential(md.nn.Conv2d(2, 3, 3), md.nn.BatchNorm2d(3), md.nn.ReLU(),
                           md.nn.Flatten(), md.nn.Linear(3 * 4 * 4, 4), md.nn.BatchNorm1d(4)).astype("float64")
    split = md.nn.SplitBatch(net, 3)
    x = md.Tensor(np.random.default_rng(0).standard_normal((7, 2, 6, 6)), requires_grad=True)   # pieces 2, 2, 3
    report = md.gradcheck(split, [x])
    assert report.passed and len(report.inputs) == 1 + len(net.parameters())
    # and the split gradient is the unsplit one
    gy = np.random.default_rng(1).standard_normal((7, 4))
    grads = []
    for run in (net, split):
        x.grad = None
        net.zero_grad()
        run(x).backward(gy)
        grads.append([host(x.grad)] + [host(p.grad) for p in net.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_split_eval_and_no_grad_give_the_unsplit_output(threads):
    md.set_num_threads(2)
    md.manual_seed(0)
    net = md.models.LeNet5(norm="batch").astype("float64")
    x = md.Tensor(np.random.default_rng(0).standard_normal((6, 3, 32, 32)))
    net(x)                                  # running statistics away from 0 and 1
    net.eval()
    with md.no_grad():
        expected = net(x).data
        got = md.nn.SplitBatch(net, 2)(x)
    assert not got.requires_grad
    np.testing.assert_allclose(host(got), host(expected), rtol=1e-12)


def test_split_updates_running_statistics_once_per_step(threads):
    md.set_num_threads(2)
    bn = md.nn.BatchNorm1d(3, decay=0.5)
    x = md.Tensor(np.arange(24, dtype=np.float32).reshape(8, 3))
    md.nn.SplitBatch(bn, 4)(x)
    x = host(x)
    np.testing.assert_allclose(host(bn.running_mean), 0.5 * x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(host(bn.running_var), 0.5 + 0.5 * x.var(axis=0, ddof=1), rtol=1e-6)


def test_split_dropout_draws_the_same_masks_on_any_number_of_threads(threads):
    def model():
        return md.nn.Sequential(md.nn.Flatten(), md.nn.Linear(3 * 32 * 32, 16), md.nn.Dropout(0.5),
                                md.nn.ReLU(), md.nn.Linear(16, 10))
    one, _ = train(None, "float32", 1, pieces=2, model=model)
    two, _ = train(None, "float32", 2, pieces=2, model=model)
    for name in one:
        assert np.array_equal(one[name], two[name]), name


def test_split_state_dict_names_the_network_as_module(threads):
    net = md.models.LeNet5()
    split = md.nn.SplitBatch(net, 2)
    assert list(split.state_dict()) == ["module." + k for k in net.state_dict()]
    assert split.module is net and "pieces=2" in repr(split)


def test_split_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="pieces must be a positive integer, got 0"):
        md.nn.SplitBatch(md.nn.Linear(2, 2), 0)
    with pytest.raises(TypeError, match="expected a Module to run, got function"):
        md.nn.SplitBatch(lambda x: x)
    with pytest.raises(ValueError, match=r"a batch of shape \(2, 2\) does not split into 3 pieces"):
        md.nn.SplitBatch(md.nn.Linear(2, 2), 3)(md.Tensor(np.ones((2, 2), np.float32)))


class SumsTheBatch(md.nn.Module):
    def forward(self, x):
        return x - x.mean(axis=0)


class ReturnsTwo(md.nn.Module):
    def forward(self, x):
        return x, x


class LayersInAList(md.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [md.nn.Linear(2, 2)]        # not registered: SplitBatch cannot give it a leaf per piece

    def forward(self, x):
        return self.layers[0](x)


class HoldsATensor(md.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = md.Tensor(np.ones(2, np.float32), requires_grad=True)   # not a Parameter

    def forward(self, x):
        return x * self.scale


class SetsAnAttribute(md.nn.Module):
    def forward(self, x):
        self.last = x                            # each piece's own copy would keep its own piece
        return x


@pytest.mark.parametrize("make, error, message", [
    (SumsTheBatch, RuntimeError, r"sum: reduces over the batch \(axis 0 of shape \(2, 2\)\) inside nn\.SplitBatch"),
    (lambda: md.nn.SwitchNorm1d(2), RuntimeError, "reduces over the batch"),
    (ReturnsTwo, TypeError, "ReturnsTwo returned tuple"),
    (lambda: md.nn.SplitBatch(md.nn.Linear(2, 2)), RuntimeError, "inside another SplitBatch's piece"),
    (LayersInAList, RuntimeError, r"LayersInAList reached a tensor of shape \(2,\) that takes a gradient but is "
                                  "not among its registered parameters"),
    (HoldsATensor, RuntimeError, "HoldsATensor reached a tensor of shape"),
    (SetsAnAttribute, RuntimeError, "SetsAnAttribute's forward set its attribute 'last'"),
    (lambda: md.nn.Sequential(md.nn.Linear(2, 2), SetsAnAttribute()), RuntimeError, "SetsAnAttribute's forward set"),
])
def test_split_names_a_module_it_would_get_wrong(threads, make, error, message):
    md.set_num_threads(2)
    module = make()              # built in the test: on its backend
    x = md.Tensor(np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    grads = [p.grad for p in module.parameters()]
    with pytest.raises(error, match=message):
        md.nn.SplitBatch(module, 2)(x).sum().backward()
    assert [p.grad for p in module.parameters()] == grads        # refused before any gradient was written


def test_split_staged_backward_is_refused_inside_a_piece():
    class Staged(md.nn.Module):
        def forward(self, x):
            return F.batch_norm(x, backward="staged")
    x = md.Tensor(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="backward is the compact one"):
        md.nn.SplitBatch(Staged(), 2)(x)


class OnPieceSize(md.nn.Module):
    """BatchNorm on pieces of other sizes than 3; on a piece of 3 an error (``fail``) or BatchNorm alone."""
    def __init__(self, fail):
        super().__init__()
        self.bn, self.fail = md.nn.BatchNorm1d(2), fail

    def forward(self, x):
        if x.shape[0] == 3 and self.fail:
            raise ArithmeticError("piece of three")
        return self.bn(x) if (x.shape[0] == 3) != self.fail else x


@pytest.mark.parametrize("num_threads", [1, 2])
def test_an_error_in_one_piece_ends_the_step_with_that_error(threads, num_threads):
    """The other pieces wait for its BatchNorm sums no longer: no hang, and the
    error raised is the failing piece's, not the others' broken barrier."""
    md.set_num_threads(num_threads)
    x = md.Tensor(np.ones((7, 2), np.float32))       # pieces of 2, 2 and 3
    with pytest.raises(ArithmeticError, match="piece of three"):
        md.nn.SplitBatch(OnPieceSize(fail=True), 3)(x)
    out = md.nn.SplitBatch(md.nn.BatchNorm1d(2), 3)(md.Tensor(np.arange(14, dtype=np.float32).reshape(7, 2)))
    assert out.shape == (7, 2)                       # the pieces' threads are free again


def run_side_by_side(pieces, work):
    """work(rank) as each piece of ``pieces``: piece 0 on this thread, the others on threads of their own."""
    import threading
    others = [threading.Thread(target=pieces.run, args=(k, lambda k=k: work(k))) for k in range(1, len(pieces.sizes))]
    for t in others:
        t.start()
    pieces.run(0, lambda: work(0))
    for t in others:
        t.join()


def test_batch_pieces_sum_in_rank_order_on_one_thread():
    pieces = backend.BatchPieces([1, 1, 1], threads=1)
    values = [np.float32(1e8), np.float32(1.0), np.float32(-1e8)]
    results = [None] * 3

    def work(rank):
        results[rank] = pieces.all_sum(rank, values[rank])
    run_side_by_side(pieces, work)
    # (1e8 + 1) − 1e8 in float32 is 0: the rank order, not the arrival order, decides
    assert results == [np.float32(0.0)] * 3


def test_split_keeps_float32_gradients_float32(threads):
    """The pieces' counts are Python ints: an np.int64 count made μ and dl/dx float64."""
    md.set_num_threads(2)
    net = md.models.LeNet5(norm="batch")
    x = md.Tensor(np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32), requires_grad=True)
    md.nn.SplitBatch(net, 2)(x).sum().backward()
    assert x.grad.dtype == np.float32 and {p.grad.dtype for p in net.parameters()} == {np.dtype(np.float32)}


@pytest.mark.parametrize("threads_at_once", [1, 3])
def test_batch_pieces_sums_stay_apart_call_after_call(threads_at_once):
    """A fast piece's next value never lands in the sum the others are still reading."""
    pieces, calls = backend.BatchPieces([1, 1, 1], threads=threads_at_once), 300
    wrong = []

    def work(rank):
        for i in range(calls):
            total = pieces.all_sum(rank, np.array([rank * 1000.0 + i]))
            if total[0] != 3000.0 + 3 * i:           # (0 + 1000 + 2000) + 3i
                wrong.append((rank, i, total[0]))
    run_side_by_side(pieces, work)
    assert wrong == []


def unsplit_and_split(make, x, pieces=3, grad=True):
    """(output, x.grad, parameters' grads, buffers) of ``make()`` run unsplit and as SplitBatch, float64."""
    results = []
    for split in (False, True):
        md.manual_seed(0)
        net = make().astype("float64")
        xt = md.Tensor(x, requires_grad=grad)
        y = (md.nn.SplitBatch(net, pieces) if split else net)(xt)
        y.backward(np.linspace(-1, 1, y.size).reshape(y.shape))   # a host gradient: moved to y's device
        results.append([host(t) for t in [y.data, xt.grad] + [p.grad for p in net.parameters()]
                        + [b.data for _, b in net.named_buffers()]])
    return results


class Tied(md.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = md.nn.Linear(3, 3), md.nn.Linear(3, 3)
        self.b.weight = self.a.weight                # one weight, two layers

    def forward(self, x):
        return self.b(self.a(x).tanh())


class Tokens(md.nn.Module):
    """BatchNorm over every position of every sample: (N, C, L) → (N·L, C)."""
    def __init__(self):
        super().__init__()
        self.bn = md.nn.BatchNorm1d(3)

    def forward(self, x):
        N, C, L = x.shape
        return self.bn(x.transpose(0, 2, 1).reshape(N * L, C)).reshape(N, L, C)


class Doubled(md.nn.Module):
    """BatchNorm over the batch beside a copy of it: 2N rows."""
    def __init__(self):
        super().__init__()
        self.bn = md.nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(md.cat([x, x * 2], 0))[:x.shape[0]]


class Counts(md.nn.Module):
    """Keeps a step count in a buffer it reassigns, as the homework's BatchNorm does its statistics."""
    def __init__(self):
        super().__init__()
        self.lin = md.nn.Linear(3, 3)
        self.register_buffer("steps", np.zeros(1))

    def forward(self, x):
        self.steps = self.steps + 1
        return self.lin(x)


@pytest.mark.parametrize("make, shape", [
    (lambda: md.nn.Sequential(md.nn.Linear(3, 3), md.nn.Tanh(), md.nn.Linear(3, 3)), (7, 3)),
    (lambda: (lambda lin: md.nn.Sequential(lin, md.nn.Tanh(), lin))(md.nn.Linear(3, 3)), (7, 3)),  # a layer twice
    (Tied, (7, 3)),
    (Tokens, (7, 3, 5)),
    (Doubled, (7, 3)),
    (lambda: md.nn.BatchNorm1d(3, affine=False), (7, 3)),
    (lambda: md.nn.BatchNorm1d(3, track_running_stats=False), (7, 3, 2)),
    (Counts, (7, 3)),
])
def test_split_gives_the_unsplit_gradients_and_buffers(threads, make, shape):
    """A tied weight gets its gradient once, not once per use; BatchNorm's count
    is the rows each piece brought (N·L, 2N), not the batch's samples; a buffer
    the forward reassigns is kept once."""
    md.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal(shape) + 1
    plain, split = unsplit_and_split(make, x)
    assert len(plain) == len(split)
    for a, b in zip(plain, split):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_split_backward_twice_adds_the_gradient_twice_as_unsplit(threads):
    md.set_num_threads(2)
    for split in (False, True):
        md.manual_seed(0)
        net = md.nn.Sequential(md.nn.Linear(3, 4), md.nn.BatchNorm1d(4)).astype("float64")
        y = (md.nn.SplitBatch(net, 2) if split else net)(md.Tensor(np.arange(18.0).reshape(6, 3)))
        (y * y).sum().backward()
        y.sum().backward()                       # a second loss from the same output
        grads = [host(p.grad) for p in net.parameters()]
        if not split:
            expected = grads
    for a, b in zip(expected, grads):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_pieces_taking_different_paths_is_an_error_not_a_hang(threads, num_threads):
    import threading
    md.set_num_threads(num_threads)
    outcome = []

    def step():
        try:       # pieces of 2, 2 and 3: only the last normalizes
            md.nn.SplitBatch(OnPieceSize(fail=False), 3)(md.Tensor(np.ones((7, 2), np.float32)))
        except backend.PiecesApart as e:
            outcome.append(str(e))
    t = threading.Thread(target=step, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "SplitBatch hung: a piece waited for sums the others never made"
    assert outcome and "the pieces took different paths through the network" in outcome[0]


def test_split_dropout_is_the_same_on_any_threads_whatever_the_wrapper_s_mode(threads):
    """The wrapper in eval, the network in training: dropout still draws from the pieces' own generators."""
    outs = []
    for n in (1, 2):
        md.set_num_threads(n)
        md.manual_seed(0)
        net = md.nn.Sequential(md.nn.Linear(8, 64), md.nn.Dropout(0.5))
        split = md.nn.SplitBatch(net, 4).eval()
        net.train()
        outs.append(host(split(md.Tensor(np.ones((16, 8), np.float32)))))
    assert np.array_equal(outs[0], outs[1]) and (outs[0] == 0).any()
    # the pieces never draw from minidl's own generator: one draw a forward seeds theirs
    md.manual_seed(1)
    expected = np.random.default_rng(1)
    expected.integers(2**62)
    split(md.Tensor(np.ones((16, 8), np.float32)))
    assert backend.rng().bit_generator.state == expected.bit_generator.state


def test_split_keeps_a_reassigned_buffer_step_after_step(threads):
    md.set_num_threads(2)
    net = Counts()
    split = md.nn.SplitBatch(net, 3)
    for _ in range(4):
        split(md.Tensor(np.ones((6, 3), np.float32)))
    assert host(net.steps).tolist() == [4.0] and net._buffers["steps"] is net.steps
    assert split.state_dict()["module.steps"].tolist() == [4.0]


def test_split_refuses_a_max_over_the_batch(threads):
    class ArgmaxOverBatch(md.nn.Module):
        def forward(self, x):
            return x - x.max(dim=0).values
    with pytest.raises(RuntimeError, match=r"max: reduces over the batch \(axis 0 of shape \(4, 2\)\)"):
        md.nn.SplitBatch(ArgmaxOverBatch(), 2)(md.Tensor(np.ones((8, 2), np.float32)))
