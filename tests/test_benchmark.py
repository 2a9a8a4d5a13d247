"""The benchmark's machinery (worker processes, alternating rounds) runs; its
figures are read by people, never asserted on."""
import os
import re
import subprocess
import sys

import minidl as md


def test_benchmark_runs_in_worker_processes_and_prints_every_setting():
    out = subprocess.run(
        [sys.executable, "-m", "minidl.benchmark", "--no-torch", "--batch-sizes", "2", "--threads", "1", "2",
         "--rounds", "2", "--iters", "1", "--memory-batch", "4", "--input", "1x28x28"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=True).stdout
    assert "input 1x28x28; method: each library in its own process, at each thread count" in out
    assert "2 alternating rounds per setting" in out
    rows = re.findall(r"^(LeNet5(?:\+BN)?)\s+2 (train|infer)\s+([-\d]+)\s+(\d+)$", out, re.M)
    gpu = md.get_backend() == "cupy"
    assert len(rows) == (4 if gpu else 8)      # every thread count on the CPU; the GPU ignores them
    assert sorted(rows)[0][:3] == ("LeNet5", "infer", "-" if gpu else "1")
    assert all(int(rate) > 0 for *_, rate in rows)
    memory = re.search(r"peak memory of one LeNet5\+BN training step at batch 4: \d+ MB", out)
    assert bool(memory) == (md.get_backend() == "numpy")    # tracemalloc sees host memory only
    if md.get_backend() == "numpy":                          # what one process and every core give
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert f"every core: training at batch 2, input 1x28x28; minidl with 1 BLAS thread per process and 1 thread for its ops, {cores} cores" in out
        crowd = re.findall(r"^(LeNet5(?:\+BN)?)\s+(\d+)\s+(\d+)$", out, re.M)
        assert [name for name, *_ in crowd] == ["LeNet5", "LeNet5+BN"] and all(int(a) > 0 for _, a, _ in crowd)


def test_op_times_alternate_row_blocking_in_one_process_and_restore_it():
    from minidl.benchmark import op_times
    from minidl.ops import conv, row_blocking
    saved, forward = row_blocking.BLOCK_ROWS[md.get_backend()], conv.Conv2d.forward
    threads = md.get_num_threads()
    grain = md.backend.GRAIN_BYTES
    settings = [(0, 1), (24, 1), (24, 2), (24, 2, 1)]
    times = op_times(2, "batch", "1x28x28", settings, rounds=2, iters=1)
    assert list(times) == settings
    for per_op in times.values():
        assert {"step", "wall", "Conv2d.forward", "Conv2d.backward", "Normalize.forward"} <= set(per_op)
        assert all(len(v) == 2 and min(v) >= 0 for v in per_op.values()) and min(per_op["step"]) > 0
        # the ops ran inside the timed steps: their sum is part of the step's time
        assert sum(v[0] for k, v in per_op.items() if k not in ("step", "wall")) <= per_op["step"][0] * 1.05
    assert row_blocking.BLOCK_ROWS[md.get_backend()] == saved and conv.Conv2d.forward is forward
    assert md.get_num_threads() == threads and md.backend.GRAIN_BYTES == grain


def test_benchmark_ops_prints_one_column_per_setting():
    out = subprocess.run(
        [sys.executable, "-m", "minidl.benchmark", "--ops", "--block-rows", "0", "24", "--threads", "1", "2",
         "--batch-sizes", "2", "--rounds", "1", "--iters", "1", "--input", "1x28x28"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=True).stdout
    assert ("the convolutions' BLOCK_ROWS and the threads alternating step by step: rows 0 1 threads, "
            "rows 0 2 threads, rows 24 1 threads, rows 24 2 threads") in out
    grains = subprocess.run(
        [sys.executable, "-m", "minidl.benchmark", "--ops", "--threads", "2", "--grain", "1", "4194304",
         "--batch-sizes", "2", "--rounds", "1", "--iters", "1", "--input", "1x28x28"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=True).stdout
    assert "the threads and the grain alternating step by step: 2 threads grain 1 B, 2 threads grain 4 MB" in grains
    for model in ("LeNet5", "LeNet5+BN"):
        assert f"{model}, batch 2, input 1x28x28" in out
    for row in ("step", "step, wall"):
        times = re.findall(rf"^{row}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
        assert len(times) == 2 and all(float(t) > 0 for line in times for t in line)


def test_benchmark_ceiling_times_threads_halves_and_processes():
    out = subprocess.run(
        [sys.executable, "-m", "minidl.benchmark", "--ceiling", "--threads", "2", "--batch-sizes", "4",
         "--rounds", "1", "--iters", "1", "--input", "1x28x28"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, MINIDL_BACKEND="numpy"),
        check=True).stdout
    assert "ceiling: one training step on 2 threads, input 1x28x28" in out
    assert "2 threads, SplitBatch(2)" in out and "2 threads, 1/2 batch" in out and "2 processes, 1/2 batch" in out
    rows = re.findall(r"^(LeNet5(?:\+BN)?)\s+4\s+(\d+)((?:\s+[\d.]+x?)+)$", out, re.M)
    assert [name for name, *_ in rows] == ["LeNet5", "LeNet5+BN"]
    for _, rate, rest in rows:
        speedups = [float(c[:-1]) for c in rest.split() if c.endswith("x")]
        assert int(rate) > 0 and len(speedups) in (4, 5) and min(speedups) > 0


def test_side_by_side_runs_every_step_and_raises_a_threads_error():
    from minidl.benchmark import side_by_side
    calls = []
    side_by_side([lambda: calls.append(0), lambda: calls.append(1)], 3)
    assert sorted(calls) == [0, 0, 0, 1, 1, 1]

    def fails():
        raise ValueError("in the second thread")
    try:
        side_by_side([lambda: None, fails], 1)
    except ValueError as e:
        assert "second thread" in str(e)
    else:
        raise AssertionError("side_by_side lost the second thread's error")


def test_benchmark_ceiling_refuses_one_thread():
    run = subprocess.run([sys.executable, "-m", "minidl.benchmark", "--ceiling", "--threads", "1", "--no-torch"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, MINIDL_BACKEND="numpy"))
    assert run.returncode != 0 and "needs at least 2 threads, got 1" in run.stderr
