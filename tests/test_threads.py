"""md.set_num_threads: PyTorch's names and meaning, and results that do not
depend on the number of threads, to the last bit."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl import backend


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = md.get_num_threads()
    yield
    md.set_num_threads(before)


def train_lenet(norm, dtype, num_threads, steps=2, batch=16):
    """Weights and buffers (BN's running statistics) of a LeNet-5 after a few SGD steps."""
    md.set_num_threads(num_threads)
    md.manual_seed(0)
    model = md.models.LeNet5(norm=norm).astype(dtype)
    opt = md.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = md.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(dtype))
        loss = F.cross_entropy(model(x), md.Tensor(rng.integers(0, 10, batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


@pytest.mark.parametrize("norm", [None, "batch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_is_bit_identical_on_one_and_two_threads(threads, norm, dtype, monkeypatch):
    # every region shared out at this small batch: the default grain would keep most on one thread
    monkeypatch.setattr(backend, "GRAIN_BYTES", 1)
    one, two = train_lenet(norm, dtype, 1), train_lenet(norm, dtype, 2)
    assert len(one) == (10 if norm is None else 10 + 4 * 4)     # BN: γ, β, running mean and variance
    for name in one:
        assert one[name].dtype == np.dtype(dtype) or "running" in name
        assert np.array_equal(one[name], two[name]), f"{name} differs between 1 and 2 threads"


def test_set_num_threads_takes_positive_integers_only(threads):
    md.set_num_threads(3)
    assert md.get_num_threads() == 3
    md.set_num_threads(np.int64(1))
    assert md.get_num_threads() == 1 and type(md.get_num_threads()) is int
    for bad in (0, -2, 1.5, "2", True, None):
        with pytest.raises(ValueError, match=f"set_num_threads: expected a positive integer, got {bad!r}"):
            md.set_num_threads(bad)
    assert md.get_num_threads() == 1


@pytest.mark.parametrize("env, expected", [("3", 3), ("", None), ("zero", None), ("0", None)])
def test_default_is_omp_num_threads_else_the_cores_this_process_may_use(env, expected):
    code = "import minidl as md; print(md.get_num_threads())"
    environ = dict(os.environ, OMP_NUM_THREADS=env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ,
                         check=True, timeout=60).stdout
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert int(out) == (expected or cores)


def test_parallel_returns_results_in_the_pieces_order_and_raises_their_errors(threads):
    md.set_num_threads(3)
    seen = set()

    def piece(i):
        import threading
        seen.add(threading.current_thread().name.startswith("minidl"))
        return i * i
    assert backend.parallel(piece, list(range(10))) == [i * i for i in range(10)]
    assert seen == {True, False}         # the calling thread and the pool's shared the pieces

    def fail(i):
        if i == 7:
            raise ZeroDivisionError(f"piece {i}")
        return i
    with pytest.raises(ZeroDivisionError, match="piece 7"):
        backend.parallel(fail, list(range(10)))


def test_blas_runs_one_thread_inside_parallel_and_gets_its_count_back(threads):
    from threadpoolctl import threadpool_info, threadpool_limits
    if not [i for i in threadpool_info() if i["user_api"] == "blas"]:
        pytest.skip("no BLAS library that threadpoolctl can see")
    md.set_num_threads(2)
    # NumPy's BLAS, which minidl's products run on; another library's (SciPy's, loaded later by a
    # test that uses it) is not minidl's to limit
    numpys = os.path.dirname(np.__file__)
    blas = lambda: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"   # noqa: E731
                    and os.path.dirname(i["filepath"]).startswith(numpys)]
    with threadpool_limits(2, user_api="blas"):
        inside = backend.parallel(lambda i: blas(), [0, 1])
        assert inside == [[1] * len(blas())] * 2 and blas() == [2] * len(blas())


def test_a_forked_child_starts_its_own_pool(threads):
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this system")
    md.set_num_threads(2)
    assert backend.parallel(lambda i: i, [0, 1]) == [0, 1]      # the parent's pool is running
    pid = os.fork()
    if pid == 0:                  # a child that hangs on the parent's dead threads never exits 0
        try:
            os._exit(0 if backend.parallel(lambda i: i + 1, [0, 1, 2]) == [1, 2, 3] else 1)
        except BaseException:
            os._exit(1)
    for _ in range(300):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        import time
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in backend.parallel")
    assert os.WEXITSTATUS(status) == 0


def test_a_region_takes_a_thread_for_each_grain_of_its_data(threads, monkeypatch):
    import threading
    md.set_num_threads(4)
    monkeypatch.setattr(backend, "GRAIN_BYTES", 100)
    assert [backend.threads_for(n) for n in (0, 99, 100, 250, 399, 400, 10**6)] == [1, 1, 1, 2, 3, 4, 4]
    ran_on = lambda i: threading.get_ident()        # noqa: E731
    assert len(set(backend.parallel(ran_on, list(range(8)), nbytes=99))) == 1      # under a grain: the caller alone
    assert len(set(backend.parallel(ran_on, list(range(8)), nbytes=250))) == 2
    assert backend.shares(10, 99) == [slice(0, 10)] and backend.shares(10, 250) == [slice(0, 5), slice(5, 10)]
    md.set_num_threads(1)
    assert backend.threads_for(10**6) == 1


def test_a_product_of_many_rows_goes_in_pieces_the_same_on_any_threads(threads, monkeypatch):
    from minidl.ops.matmul import ROWS
    monkeypatch.setattr(backend, "GRAIN_BYTES", 1)          # shared out, small as it is
    a, b = (np.random.default_rng(i).standard_normal(s) for i, s in enumerate([(2 * ROWS + 3, 40), (40, 7)]))
    results = []
    for n in (1, 2):
        md.set_num_threads(n)
        x = md.Tensor(a, requires_grad=True)
        y = x @ md.Tensor(b)
        y.backward(np.ones(y.shape))
        results.append((y.numpy(), backend.as_numpy(x.grad)))
    np.testing.assert_allclose(results[0][0], a @ b, rtol=1e-12)
    assert all(np.array_equal(p, q) for p, q in zip(*results))
