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
