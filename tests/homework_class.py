"""A class's worth of planted submissions for the grader: correct modules, modules
with one mistake each (tests/homework_bn.py's), and hostile ones, each with what
grading must give it. The tests use it; run as a script it writes a folder and
times ``grade`` on it:

    python tests/homework_class.py 100 --workers 1 2
"""
import argparse
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
    "huge_allocation.py": ("import numpy as np\nhog = np.ones(2 ** 29)   # 4 GB: above the limit, within the machine\n",
                           "memory limit"),
    "syntax_error.py": ("class BatchNorm2d(:\n    pass\n", "error"),
}


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
