"""Confirm the GPU path on a machine with a GPU, in one command:

    python -m lessons.gpu_check             # from a source checkout (the tests live in tests/)

Runs, each with MINIDL_BACKEND=cupy: the test suite, every lesson's --quick
run, and the benchmark (against PyTorch CUDA where installed); then prints one
summary. Exits 1 if anything failed. Each step's output goes to a log file
whose path the summary gives.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from lessons.handout import LESSONS


def run(name, command, env, logs):
    t0 = time.time()
    log = os.path.join(logs, name.replace(" ", "_").replace("/", "_") + ".log")
    with open(log, "w") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    with open(log) as f:
        tail = [line.rstrip() for line in f if line.strip()][-1:] or [""]
    return name, code, time.time() - t0, tail[0][:100], log


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tests", default="tests", help="the test folder of a source checkout")
    p.add_argument("--skip-benchmark", action="store_true")
    args = p.parse_args(argv)
    env = dict(os.environ, MINIDL_BACKEND="cupy")
    probe = subprocess.run([sys.executable, "-c", "import cupy, minidl as md; md.use_backend('cupy'); "
                            "print(cupy.__version__, cupy.cuda.runtime.getDeviceCount())"],
                           capture_output=True, text=True, env=env)
    if probe.returncode:
        print("CuPy cannot run here:\n" + probe.stderr.strip().splitlines()[-1])
        return 1
    print(f"CuPy {probe.stdout.split()[0]}, {probe.stdout.split()[1]} GPU(s)")
    logs = tempfile.mkdtemp(prefix="minidl-gpu-check-")
    steps = []
    if os.path.isdir(args.tests):
        steps.append(("test suite", [sys.executable, "-m", "pytest", "-q", args.tests]))
    else:
        print(f"no {args.tests}/ here (not a source checkout): the test suite is skipped")
    for lesson in LESSONS:
        steps.append((f"lesson {lesson} --quick", [sys.executable, "-m", f"lessons.{lesson}", "--quick",
                                                   "--out", os.path.join(logs, lesson)]))
    if not args.skip_benchmark:
        steps.append(("benchmark", [sys.executable, "-m", "minidl.benchmark", "--backend", "cupy"]))
    results = []
    for name, command in steps:
        print(f"running {name} ...", flush=True)
        results.append(run(name, command, env, logs))
    print(f"\n{'step':<38}{'result':<8}{'time':>8}  last line")
    for name, code, seconds, tail, _ in results:
        print(f"{name:<38}{'ok' if code == 0 else 'FAILED':<8}{seconds:>7.0f}s  {tail}")
    print(f"\nlogs in {logs}/ (the benchmark's table is in benchmark.log)")
    return 0 if all(code == 0 for _, code, _, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
