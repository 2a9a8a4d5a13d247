"""A lesson's default run, recorded for the README: ``--record`` writes the run's
summary.md to docs/results/<lesson>.md, with what made it (the command, the
commit, the machine, the date, the wall and CPU time). The README quotes a
lesson's figures only from that file, and tests/test_readme.py checks that they
are there: hand-copied numbers go stale whenever an op's rounding changes.

Only a default run of committed code is recorded (a quick run or a changed
setting is refused before the run starts), and it starts afresh, so its wall
time is a whole run's."""
import datetime
import os
import platform
import re
import resource
import shlex
import subprocess
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the source checkout
RESULTS = os.path.join("docs", "results")
CODE = ("lessons", "minidl")      # a recorded run's commit must hold these folders as they ran


def results_file(name, root=None):
    return os.path.join(root or ROOT, RESULTS, f"{name}.md")


def committed_code(root):
    """The commit a run would record, or the reason it cannot: not a git checkout,
    or lessons/ or minidl/ changed since the commit (the figures would belong to no commit)."""
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
    try:
        head = git("rev-parse", "HEAD")
    except FileNotFoundError:
        return None, "git is not installed, so the run would record no commit"
    if head.returncode != 0:
        return None, f"{root} is not a git checkout, so the run would record no commit"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        return None, f"uncommitted changes in {', '.join(changed)}: commit them first, so the recorded commit ran"
    return head.stdout.strip(), None


def start(name, argv, quick, changed, notebook, root=None):
    """What ``settings()`` keeps for ``record_run``, or raises ValueError saying why
    this run cannot be recorded: quick, changed settings (their flags), a notebook,
    a checkout without docs/, uncommitted code."""
    root = root or ROOT
    if quick:
        raise ValueError("--record writes a default run's results; a quick run (a smoke test) is never recorded")
    if changed:
        raise ValueError(f"--record writes the default run's results; these settings differ from it: "
                         f"{', '.join('--' + k.replace('_', '-') for k in changed)}")
    if notebook:
        raise ValueError("--record runs from the command line: python -m lessons." + name + " --record")
    if not os.path.isdir(os.path.join(root, "docs")):
        raise ValueError(f"--record writes into a source checkout's {RESULTS}/; {root} has no docs/")
    commit, reason = committed_code(root)
    if reason:
        raise ValueError(f"--record: {reason}")
    return {"name": name, "command": shlex.join(["python", "-m", f"lessons.{name}", *argv]), "commit": commit,
            "root": root, "date": datetime.datetime.now(datetime.timezone.utc), "wall": time.perf_counter(),
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def machine():
    """The CPU, its cores, the system and the libraries, in one line."""
    import minidl as md
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        cpu = names[0].strip() if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores; {platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"NumPy {np.__version__}, minidl {md.__version__} on its {md.get_backend()} backend")


def cpu_seconds():
    """CPU time of this process and of its finished worker processes (a pool's, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def record_run(s):
    """With ``--record``: docs/results/<lesson>.md from this run's summary.md (its
    pictures stay in the run's folder) and what made it. Call it last, after the
    summary is written. Without ``--record`` it does nothing. Returns the path written, or None."""
    run = getattr(s, "record", None)
    if not run:
        return None
    wall, cpu = time.perf_counter() - run["wall"], cpu_seconds()
    with open(os.path.join(s.out, "summary.md")) as f:
        summary = f.read()
    title, _, body = summary.partition("\n")
    body = re.sub(r" ?!\[[^\]]*\]\([^)]*\)", "", body)                 # the plots are not kept in docs/,
    body = re.sub(r"\[([^\]]*)\]\((?![a-z]+:)[^)]*\)", r"\1", body).strip()  # nor the pages the run wrote
    load = "" if run["load"] is None else f"\n| load average when it started | {run['load']:.2f} |"
    made = (f"| | |\n|---|---|\n| command | `{run['command']}` |\n| commit | {run['commit']} |\n"
            f"| machine | {machine()} |{load}\n| started | {run['date']:%Y-%m-%d %H:%M} UTC |\n"
            f"| wall time | {wall:.0f} s |\n| CPU time | {cpu:.0f} s (this process and its local workers) |")
    path = results_file(run["name"], run["root"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{title}\n\nThe lesson's default run, recorded by `--record`: the README quotes its figures from "
                f"this file. Its plots and results.json stay in the run's folder.\n\n{made}\n\n## Results\n\n{body}\n")
    print(f"recorded in {os.path.relpath(path, run['root'])}")
    return path
