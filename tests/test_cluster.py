"""A real Dask cluster on this machine (a `dask scheduler` and a `dask worker`
process on 127.0.0.1): grading and a lesson's runs give the same results through
it as on local cores."""
import csv
import json
import os
import subprocess
import sys
import time

import pytest

from homework_class import PLANTED, one_mistake
from lessons.homework.sandbox import sandbox_problem

pytest.importorskip("distributed", reason="Dask is not installed: pip install -e '.[cluster]'")


def _stop(process):
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a scheduler with one worker process (two threads), torn down after."""
    from dask.distributed import Client
    tmp = tmp_path_factory.mktemp("cluster")
    file = tmp / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]                   # the `dask` command, of this Python
    started = []
    try:
        started.append(subprocess.Popen(dask + ["scheduler", "--host",
                                         "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                                         str(file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 30
        while not file.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert file.exists(), "the scheduler did not start in 30 s"
        started.append(subprocess.Popen(dask + ["worker", "--scheduler-file",
                                         str(file), "--nworkers", "1", "--nthreads", "2", "--no-dashboard",
                                         "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        address = json.loads(file.read_text())["address"]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=30)
        yield address
    finally:
        for process in reversed(started):
            _stop(process)


def grades(out):
    with open(os.path.join(out, "grades.csv"), newline="") as f:
        return {r["submission"]: (r["score"], r["status"], r["failed_lines"], r["sandboxed"], r["copies"])
                for r in csv.DictReader(f)}


def test_grading_on_a_cluster_gives_what_local_cores_give(scheduler, tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "correct.py").write_text(PLANTED)
    (folder / "reversed.py").write_text(one_mistake("MomentumReversed"))
    (folder / "syntax.py").write_text("class BatchNorm2d(:\n")
    (folder / "loop.py").write_text("while True:\n    pass\n")
    runs = {}
    for where, flags in (("local", ["--workers", "2"]), ("cluster", ["--scheduler", scheduler])):
        r = subprocess.run([sys.executable, "-m", "lessons.homework", "grade", str(folder), "--out",
                            str(tmp_path / where), "--time-limit", "5", "--memory-limit", "1500", *flags,
                            *(["--no-sandbox"] if sandbox_problem() else [])],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        runs[where] = grades(tmp_path / where)
    assert runs["cluster"] == runs["local"]
    assert runs["local"]["correct.py"][:2] == ("14", "graded") and runs["local"]["loop.py"][1] == "time limit"


def test_a_lessons_runs_on_a_cluster_give_what_local_cores_give(scheduler, tmp_path):
    results = {}
    for where, flags in (("local", ["--workers", "2"]), ("cluster", ["--scheduler", scheduler])):
        r = subprocess.run([sys.executable, "-m", "lessons.bn_placement", "--quick", "--train-size", "100",
                            "--out", str(tmp_path / where), *flags], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        results[where] = json.loads((tmp_path / where / "runs.json").read_text())["runs"]
    assert len(results["local"]) == 14 and results["cluster"] == results["local"]
