"""The benchmark's machinery (worker processes, alternating rounds) runs; its
figures are read by people, never asserted on."""
import os
import re
import subprocess
import sys

import minidl as md


def test_benchmark_runs_in_worker_processes_and_prints_every_setting():
    out = subprocess.run(
        [sys.executable, "-m", "minidl.benchmark", "--no-torch", "--batch-sizes", "2",
         "--rounds", "2", "--iters", "1", "--memory-batch", "4", "--input", "1x28x28"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=True).stdout
    assert "input 1x28x28; method: each library in its own process; 2 alternating rounds" in out
    rows = re.findall(r"^(LeNet5(?:\+BN)?)\s+2 (train|infer)\s+(\d+)$", out, re.M)
    assert sorted(rows)[0][:2] == ("LeNet5", "infer") and len(rows) == 4
    assert all(int(rate) > 0 for *_, rate in rows)
    memory = re.search(r"peak memory of one LeNet5\+BN training step at batch 4: \d+ MB", out)
    assert bool(memory) == (md.get_backend() == "numpy")    # tracemalloc sees host memory only
    if md.get_backend() == "numpy":                          # what one process and every core give
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert f"every core: training at batch 2, input 1x28x28; minidl with 1 BLAS thread per process, {cores} cores" in out
        crowd = re.findall(r"^(LeNet5(?:\+BN)?)\s+(\d+)\s+(\d+)$", out, re.M)
        assert [name for name, *_ in crowd] == ["LeNet5", "LeNet5+BN"] and all(int(a) > 0 for _, a, _ in crowd)


def test_op_times_alternate_row_blocking_in_one_process_and_restore_it():
    from minidl.benchmark import op_times
    from minidl.ops import conv, row_blocking
    saved, forward = row_blocking.BLOCK_ROWS[md.get_backend()], conv.Conv2d.forward
    times = op_times(2, "batch", "1x28x28", [0, 24], rounds=2, iters=1)
    assert list(times) == [0, 24]
    for per_op in times.values():
        assert {"step", "Conv2d.forward", "Conv2d.backward", "Normalize.forward"} <= set(per_op)
        assert all(len(v) == 2 and min(v) >= 0 for v in per_op.values()) and min(per_op["step"]) > 0
        # the ops ran inside the timed steps: their sum is part of the step's time
        assert sum(v[0] for k, v in per_op.items() if k != "step") <= per_op["step"][0] * 1.05
    assert row_blocking.BLOCK_ROWS[md.get_backend()] == saved and conv.Conv2d.forward is forward


def test_benchmark_ops_prints_one_column_per_setting():
    out = subprocess.run(
        [sys.executable, "-m", "minidl.benchmark", "--ops", "--block-rows", "0", "24", "--batch-sizes", "2",
         "--rounds", "1", "--iters", "1", "--input", "1x28x28"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=True).stdout
    assert "BLOCK_ROWS alternating step by step: 0, 24" in out
    for model in ("LeNet5", "LeNet5+BN"):
        assert f"{model}, batch 2, input 1x28x28" in out
    steps = re.findall(r"^step\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(steps) == 2 and all(float(t) > 0 for row in steps for t in row)
