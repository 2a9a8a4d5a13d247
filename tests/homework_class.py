"""A class's worth of planted submissions for the grader: correct modules, modules
with one mistake each (tests/homework_bn.py's), and hostile ones, each with what
grading must give it. The tests use it; run as a script it writes a folder and
times ``grade`` on it:

    python tests/homework_class.py 100 --workers 1 2
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "homework_bn.py")) as f:
    PLANTED = f.read()              # BatchNorm2d (correct) and one subclass per planted mistake

# the homework as the slides hand it out, in PyTorch; {unbias}: 1, or m/(m − 1) for the unbiased variance
TORCH_HOMEWORK = """import torch
from torch import nn

class BatchNorm2d(nn.Module):
    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))
        self.momentum, self.eps = momentum, eps

    def forward(self, X):
        if not self.training:
            mean, var = self.moving_mean, self.moving_var
        else:
            axes = (0,) if X.dim() == 2 else (0, 2, 3)
            mean = X.mean(dim=axes, keepdim=True)
            var = X.var(dim=axes, keepdim=True, unbiased=False)
            with torch.no_grad():
                self.moving_mean = self.momentum * self.moving_mean + (1 - self.momentum) * mean
                self.moving_var = self.momentum * self.moving_var + (1 - self.momentum) * var * {unbias}
        return self.gamma * (X - mean) / torch.sqrt(var + self.eps) + self.beta
"""

# class name in homework_bn.py -> the line it fails
MISTAKES = {"NoEps": "training forward", "MomentumReversed": "moving averages", "EvalUsesBatch": "eval mode",
            "OnTheGraph": "off the graph", "NotSaved": "saved by state_dict", "GammaNotAParameter": "parameters"}


def correct():
    return PLANTED


def one_mistake(cls):
    """The planted mistake ``cls`` submitted under the homework's name."""
    return PLANTED + f"\n\nBatchNorm2d = {cls}\n"


def attack(code):
    """A submission that tries ``code`` at import (and says nothing if it fails),
    then hands in a correct module: contained, it grades full marks."""
    indented = "\n".join("    " + line for line in code.strip().splitlines())
    return f"try:\n{indented}\nexcept Exception:\n    pass\n\n" + PLANTED


HOSTILE = {
    "endless_loop.py": ("while True:\n    pass\n", "time limit"),
    # 4 GB, above the whole limit: refused at once (the address-space cap), the child's MemoryError an error
    "huge_allocation.py": ("import numpy as np\nhog = np.ones(2 ** 29)\n", "error"),
    "syntax_error.py": ("class BatchNorm2d(:\n    pass\n", "error"),
}


# ---- submissions that try to forge their grade: each implements nothing (the skeleton) ----
with open(os.path.join(os.path.dirname(HERE), "lessons", "homework", "notebook.py")) as f:
    SKELETON = f.read().split('# %% tags=["homework"]\n')[1].split("\n# %%")[0]     # the hand-out's, unfilled

FORGERIES = {
    # the old grader ran the checks in the submission's process: patch them to pass
    "patches_the_grader": """
import sys
for name, module in list(sys.modules.items()):
    for attr in ("check_training_forward", "check_moving_averages", "check_eval", "check_gradients", "judge_step",
                 "_run_line", "run_step", "check_kind"):
        if hasattr(module, attr):
            setattr(module, attr, lambda *a, **k: ("PASS", "ok"))
try:
    import lessons.homework.module as m
    m.check_training_forward = m.check_gradients = lambda *a, **k: "ok"
except Exception:
    pass
""",
    # a result written to every descriptor it inherits, in the old grader's format or the runner's, then out
    "writes_a_result": """
import json, os, sys
forged = json.dumps({"status": "graded", "score": 14, "max_score": 14, "failed": []})
frame, plan = sys._getframe(), None
while frame is not None and plan is None:        # the runner's plan, from the frames that import this file
    plan, frame = frame.f_locals.get("plan"), frame.f_back
lines = [forged] if "--result-fd" in sys.argv else []      # the channel of today's grader, or the runner's
if plan:
    lines.append(json.dumps({"step": "load", "framework": "minidl"}))
    for step in plan["steps"]:
        shape = [step["constructor"]["num_features"]]
        ops = []
        for op in step["ops"]:
            a = plan["inputs"].get(op[1]) if len(op) > 1 else None
            facts = {"shape": [1, shape[0]] + [1] * (step["constructor"]["num_dims"] - 2), "dtype": "float32",
                     "registered": True}
            ops.append({"new": {"gamma": facts, "beta": facts}, "set": {}, "forward": {"y": a},
                        "stats": {"found": True, "mean_name": "moving_mean", "var_name": "moving_var",
                                  "mean": {"shape": facts["shape"], "dtype": "float32", "data": [0.0] * shape[0]},
                                  "var": {"shape": facts["shape"], "dtype": "float32", "data": [1.0] * shape[0]}},
                        "eval": {}, "graph": {"on_graph": []},
                        "save_load": {"state_keys": ["moving_mean", "moving_var"], "plain": [], "load_error": None,
                                      "restored": {"found": False}},
                        "backward": {"dx": a, "dgamma": None, "dbeta": None}}[op[0]])
        lines.append(json.dumps({"step": step["key"], "ops": ops}))
    lines.append(json.dumps({"step": "done"}))
for fd in range(3, 64):
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
    except OSError:
        pass
os._exit(0)
""",
    # the old grader read "MemoryError" in the output as the memory limit
    "says_memory_error": """
import os
print("MemoryError", flush=True)
os._exit(1)
""",
}


def write_forgeries(folder):
    """The skeleton as is, and each forgery on top of it: {file name: code}."""
    os.makedirs(folder, exist_ok=True)
    written = {"skeleton.py": SKELETON}
    written.update({f"{name}.py": SKELETON + code for name, code in FORGERIES.items()})
    for name, code in written.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(code)
    return written


def write_odd_files(folder):
    """Every kind of file that once stopped a class, beside a correct submission:
    {the name the gradebook shows: what its feedback says}."""
    os.makedirs(folder, exist_ok=True)
    j = os.path.join
    with open(j(folder, "correct.py"), "w") as f:
        f.write(PLANTED)
    os.symlink("no_such_file.py", j(folder, "dangling.py"))
    os.symlink("/dev/zero", j(folder, "zeros.py"))
    os.symlink("correct.py", j(folder, "linked_copy.py"))
    os.mkdir(j(folder, "directory.py"))
    os.mkfifo(j(folder, "pipe.py"))
    long = "x" * 252 + ".py"                     # 255 bytes, the longest name there is: name + ".txt" is not one
    with open(j(folder, long), "w") as f:
        f.write(PLANTED)
    unreadable = {}
    if os.geteuid() != 0:                        # root reads any file
        with open(j(folder, "unreadable.py"), "w") as f:
            f.write(PLANTED)
        os.chmod(j(folder, "unreadable.py"), 0)
        unreadable["unreadable.py"] = "cannot be opened (Permission denied)"
    with open(os.path.join(os.fsencode(folder), b"latin1_\xe9.py"), "w") as f:
        f.write(PLANTED)
    notebooks = {"source_is_a_number.ipynb": {"cells": [{"cell_type": "code", "source": 42,
                                                         "metadata": {"tags": ["homework"]}}]},
                 "a_list.ipynb": [1, 2, 3], "cells_not_a_list.ipynb": {"cells": 5},
                 "tags_not_a_list.ipynb": {"cells": [{"cell_type": "code", "source": "x", "metadata": {"tags": 3}}]}}
    for name, content in notebooks.items():
        with open(j(folder, name), "w") as f:
            json.dump(content, f)
    with open(j(folder, "not_json.ipynb"), "w") as f:
        f.write("{ not json")
    with open(j(folder, "deep.ipynb"), "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    with open(j(folder, "binary.py"), "wb") as f:
        f.write(b"\xff\xfe\x00 not text")
    return {"correct.py": "graded", "dangling.py": "symbolic link", "zeros.py": "symbolic link",
            "linked_copy.py": "symbolic link", "directory.py": "a directory", "pipe.py": "named pipe",
            long: "graded", "latin1_\\xe9.py": "not UTF-8", "source_is_a_number.ipynb": "source is a number",
            "a_list.ipynb": "its JSON is a list", "cells_not_a_list.ipynb": "no list of cells",
            "tags_not_a_list.ipynb": "no code cell tagged", "not_json.ipynb": "not JSON",
            "deep.ipynb": "not JSON", "binary.py": "not UTF-8 text", **unreadable}


def write_class(folder, count=None, outside=None, secret_file=None, port=None):
    """Write submissions into ``folder``; returns {file name: (status, failed line or None)}.
    Without ``count``: one of each kind (correct, each mistake, each hostile one;
    with ``outside``, ``secret_file`` and ``port``, the sandbox's attacks too).
    With ``count``: that many, cycling correct, one-mistake and hostile ones."""
    os.makedirs(folder, exist_ok=True)
    kinds = [("correct", correct(), ("graded", None))]
    kinds += [(f"mistake_{cls}", one_mistake(cls), ("graded", line)) for cls, line in MISTAKES.items()]
    kinds += [(name[:-3], code, (status, None)) for name, (code, status) in HOSTILE.items()]
    if outside:
        for target in (os.path.join(outside, "pwned.txt"), os.path.join(folder, "pwned.py")):
            kinds.append((f"writes_outside_{len(kinds)}", attack(f"open({target!r}, 'w').write('x = 1')"),
                          ("graded", None)))
    if secret_file:
        kinds.append(("reads_another", attack(f"SECRET = open({secret_file!r}).read()\n"
                                              "raise SystemExit('stolen: ' + SECRET)"), ("graded", None)))
    if port:
        kinds.append(("connects", attack(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"
                                         ".sendall(b'hello')"), ("graded", None)))
    expected = {}
    n = len(kinds) if count is None else count
    for k in range(n):
        kind, code, outcome = kinds[k % len(kinds)]
        name = f"{k:03d}_{kind}.py" if count else f"{kind}.py"
        with open(os.path.join(folder, name), "w") as f:
            f.write(code)
        expected[name] = outcome
    return expected


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("count", type=int, nargs="?", default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--time-limit", type=float, default=10)
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="class-")
    try:
        write_class(os.path.join(folder, "submissions"), args.count)
        for workers in args.workers:
            start = time.time()
            subprocess.run([sys.executable, "-m", "lessons.homework", "grade", os.path.join(folder, "submissions"),
                            "--out", os.path.join(folder, f"grades{workers}"), "--workers", str(workers),
                            "--time-limit", str(args.time_limit)], check=True)
            print(f"{args.count} submissions, --workers {workers}: {time.time() - start:.1f} s wall")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
