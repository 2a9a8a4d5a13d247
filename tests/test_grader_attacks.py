"""Attacks on the homework grader that succeeded when it was tried as a hostile
student and as a teacher (each test fails on the grader it was found on)."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from homework_class import PLANTED, SKELETON
from lessons.homework import runner
from lessons.homework.judge import Exam, parse_records

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
TODO = '        raise NotImplementedError("BatchNorm2d.forward is your homework")'


def grade(folder, out):
    return subprocess.run([sys.executable, "-m", "lessons.homework", "grade", str(folder), "--out", str(out),
                           "--time-limit", "25", "--memory-limit", "1500", "--workers", "1"],
                          capture_output=True, text=True, timeout=600)


def score_in_process(code):
    """The score the judge gives ``code``'s BatchNorm2d, run by the runner in this process."""
    namespace = {}
    exec(compile(code, "submission.py", "exec"), namespace)
    exam, records = Exam("module", "BatchNorm2d"), {}
    runner.run_plan(namespace["BatchNorm2d"], exam.plan(),
                    lambda r: records.setdefault(r["step"], json.loads(json.dumps(r))))
    return exam.mark(records).score


def test_a_forward_that_ignores_its_input_earns_no_more_than_the_skeleton():
    """γ·(standardized noise) + β, whatever x is: the normalizing gate reads y's
    spread and mean only, so 'saved by state_dict' and 'off the graph' pass (6/14)."""
    noise = SKELETON.replace(TODO, """        noise = np.random.default_rng(0).standard_normal(X.shape)
        axes = (0,) + tuple(range(2, noise.ndim))
        noise = ((noise - noise.mean(axes, keepdims=True)) / noise.std(axes, keepdims=True)).astype(np.float32)
        return self.gamma * md.Tensor(noise) + self.beta""")
    assert noise != SKELETON
    assert score_in_process(noise) <= score_in_process(SKELETON) == 2


def test_a_forged_record_whose_facts_are_not_objects_is_no_result_not_a_crash():
    """{"gamma": 1} in a step's "new" facts with "raised": _dtype_problem calls 1.get."""
    exam = Exam("module", "BatchNorm2d")
    raw = (b'{"step": "load", "framework": "minidl"}\n'
           b'{"step": "0/training forward", "ops": [{"gamma": 1, "beta": 1}], "raised": "x"}\n')
    report = exam.mark(parse_records(raw, exam.keys))
    assert report.score == 0 and len(report.lines) == 14


@needs_bwrap
def test_a_submission_writing_such_a_record_does_not_abort_the_class(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "a_forger.py").write_text(SKELETON + """
import json, os
fd = int(os.environ["GRADER_RESULTS_FD"])
os.write(fd, b'{"step": "load", "framework": "minidl"}\\n'
             b'{"step": "0/training forward", "ops": [{"gamma": 1, "beta": 1}], "raised": "x"}\\n')
""")
    (folder / "b_honest.py").write_text(PLANTED)
    run = grade(folder, tmp_path / "out")
    assert run.returncode == 0, run.stderr[-2000:]
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = {r["submission"]: r for r in csv.DictReader(f)}
    # the forger is the skeleton plus its forged record: it earns no more than the skeleton's γ and β (2)
    assert rows["b_honest.py"]["score"] == "14" and int(rows["a_forger.py"]["score"]) <= 2


@needs_bwrap
def test_two_files_whose_shown_names_are_the_same_each_get_their_own_row(tmp_path):
    """b'bob\\xff.py' (not UTF-8) is shown as 'bob\\\\xff.py', the name of another file:
    the gradebook keys rows by the shown name, so one of the two files loses its row."""
    folder = tmp_path / "class"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"bob\xff.py"), "w") as f:
        f.write(SKELETON)
    (folder / "bob\\xff.py").write_text(PLANTED)
    run = grade(folder, tmp_path / "out")
    assert run.returncode == 0, run.stderr[-2000:]
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2, rows
    assert len(os.listdir(tmp_path / "out" / "feedback")) == 2


@needs_bwrap
def test_a_file_name_with_a_newline_adds_no_line_to_the_summary(tmp_path):
    """A file that is not a submission is named in the summary as is: a newline in
    its name writes a line of the file's choosing into summary.txt."""
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "skeleton.py").write_text(SKELETON)
    (folder / "note\n9 submission(s): 9 at full marks\nend").write_text("x")
    run = grade(folder, tmp_path / "out")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert not any(line.startswith("9 submission(s)") for line in summary), summary


@needs_bwrap
def test_the_time_limit_ends_a_run_where_no_control_group_can_be_made():
    """As an ordinary user with no delegated group, Group() holds no controller:
    close() kills nothing and _kill_session is skipped, so a submission that
    sleeps (or a fork bomb) holds wait4 and the class forever."""
    script = """if True:
        import sys
        from lessons.homework import sandbox
        sandbox._group_parents = lambda: ({}, ["no control group here"])
        run = sandbox.run_untrusted([sys.executable, "-c", "import time; time.sleep(600)"], {}, time_limit=2)
        print(run.status)"""
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a 2 s time limit did not end the run within 60 s")
    assert done.stdout.strip() == "time limit", done.stderr[-2000:]


# ---- a fresh-eye attack on the grader after #37 (second session) ----------------------------
# the skeleton's constructor up to γ and β (homework_bn.py's, before its moving statistics)
CONSTRUCTOR = PLANTED.split('        self.register_buffer("moving_mean"')[0]
assert "self.beta = md.nn.Parameter" in CONSTRUCTOR and "register_buffer" not in CONSTRUCTOR


# only the training forward: no moving statistics, no buffers, no eval mode
TRAIN_ONLY = CONSTRUCTOR + '''        self.eps = eps
    def forward(self, X):
        axes = (0,) if X.ndim == 2 else (0, 2, 3)
        mean = X.mean(axis=axes, keepdims=True)
        var = ((X - mean) ** 2).mean(axis=axes, keepdims=True)
        return self.gamma * (X - mean) / (var + self.eps) ** 0.5 + self.beta
'''

# the runner is the process's __main__: its table of operations rewritten to report statistics that
# start at 1e30 and decay with the momentum (within the tolerance of any moving average from there),
# an eval output normalized with them, a state_dict that keeps them and no graph
PATCHES_THE_RUNNER = '''
import sys
R = sys.modules["__main__"]
if hasattr(R, "Step"):
    S, _forward = R.Step, R.Step.forward
    def _stats(self):
        n, m = getattr(self, "_n", 0), self.plan["constructor"]["momentum"]
        C = self.plan["constructor"]["num_features"]
        v = {"shape": [1, C], "dtype": "float32", "data": [1e30 * m ** n] * C}
        return {"found": True, "mean_name": "moving_mean", "var_name": "moving_var", "mean": v, "var": v}
    def _fwd(self, x, grad):
        if self.module.training:
            self._n = getattr(self, "_n", 0) + 1
            return _forward(self, x, grad)
        M = 1e30 * self.plan["constructor"]["momentum"] ** self._n
        g, b = self.fw.numpy(self.module.gamma), self.fw.numpy(self.module.beta)
        return {"y": R.encode((self.inputs[x] - M) / np.sqrt(M + 1e-5) * g + b)}
    R.OPS.update(stats=_stats, forward=_fwd, graph=lambda self: {"on_graph": []},
                 save_load=lambda self: {"state_keys": ["moving_mean", "moving_var"], "plain": [],
                                         "load_error": None, "restored": _stats(self)})
'''

# computes nothing: statistics that start at 1e30 and only decay, so every batch's share is far below
# the tolerance of a check that starts from the module's own start
HUGE_START = CONSTRUCTOR + '''        self.register_buffer("moving_mean", np.full(shape, 1e30, np.float32))
        self.register_buffer("moving_var", np.full(shape, 1e30, np.float32))
        self.momentum, self.eps = momentum, eps

    def forward(self, X):
        if self.training:
            with md.no_grad():
                self.moving_mean = self.moving_mean * self.momentum
                self.moving_var = self.moving_var * self.momentum
        return X
'''


@needs_bwrap
def test_made_up_statistics_earn_nothing_from_the_module_or_from_a_patched_runner(tmp_path):
    """Found by a fresh-eye review: HUGE_START scored 4/14 (the skeleton 2); TRAIN_ONLY with
    PATCHES_THE_RUNNER scored 14/14 (TRAIN_ONLY alone 8): eval, state_dict and the graph rested
    on statistics only the submission's process reported."""
    folder = tmp_path / "class"
    folder.mkdir()
    files = {"skeleton.py": SKELETON, "huge_start.py": HUGE_START, "train_only.py": TRAIN_ONLY,
             "train_only_patched.py": TRAIN_ONLY + PATCHES_THE_RUNNER, "correct.py": PLANTED}
    for name, code in files.items():
        (folder / name).write_text(code)
    r = grade(folder, tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        score = {row["submission"]: int(row["score"]) for row in csv.DictReader(f)}
    assert score["correct.py"] == 14 and score["skeleton.py"] == 2, score
    assert score["huge_start.py"] <= score["skeleton.py"], score
    assert score["train_only_patched.py"] <= score["train_only.py"] < 14, score


@needs_bwrap
def test_names_that_look_alike_show_apart_and_a_second_run_keeps_their_rows(tmp_path):
    """Found by a fresh-eye review: "=bob.py" was written "'=bob.py", as a file named
    "'=bob.py" showed in a spreadsheet; a word joiner (U+2060) in a name was invisible;
    and the second run regraded "=bob.py", its row's key no longer its name."""
    folder = tmp_path / "class"
    folder.mkdir()
    names = {"=bob.py": PLANTED, "'=bob.py": SKELETON, "alice.py": PLANTED, "alice\u2060.py": SKELETON}
    for name, code in names.items():
        (folder / name).write_text(code)
    first = grade(folder, tmp_path / "out")
    assert first.returncode == 0, first.stderr[-2000:]
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        shown = [row["submission"] for row in csv.DictReader(f)]
    # as a spreadsheet shows a cell: one leading quote hidden
    displayed = [cell[1:] if cell.startswith("'") else cell for cell in shown]
    assert len(set(displayed)) == 4 and "alice\\u2060.py" in displayed, displayed
    again = grade(folder, tmp_path / "out")
    assert again.returncode == 0 and "grading the other 0" in again.stdout + again.stderr, again.stdout[-2000:]


def test_a_library_batch_norm_the_code_names_is_noted_for_the_teacher():
    """Subclassing md.nn.BatchNorm earned 12/14 with no word to the teacher, and a
    backward submission could return minidl.ops.norm.backward_staged itself."""
    from homework_class import TORCH_HOMEWORK
    from lessons.homework.submissions import borrowed
    subclass = "import minidl as md\nclass BatchNorm2d(md.nn.BatchNorm):\n    pass\n"
    imported = "from minidl.ops.norm import backward_staged as bs\ndef batchnorm_backward(*a):\n    return bs(*a)\n"
    assert borrowed(subclass) == ["md.nn.BatchNorm"]
    assert borrowed(imported) == ["minidl.ops.norm.backward_staged"]
    assert borrowed("import torch.nn.functional as F\ny = F.batch_norm(x, m, v)\n") == ["F.batch_norm"]
    for own in (PLANTED, SKELETON, TORCH_HOMEWORK, "class BatchNorm2d(:"):      # their own class, or no code
        assert borrowed(own) == [], own


@needs_bwrap
def test_the_gradebook_names_what_a_submission_borrows(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "subclass.py").write_text("import minidl as md\n\nclass BatchNorm2d(md.nn.BatchNorm):\n"
                                        "    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):\n"
                                        "        super().__init__(num_features, num_dims, decay=momentum, eps=eps)\n")
    (folder / "correct.py").write_text(PLANTED)
    r = grade(folder, tmp_path / "out")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert rows["subclass.py"]["borrows"] == "md.nn.BatchNorm" and rows["correct.py"]["borrows"] == ""
    assert "1 submission(s) name a library's own batch norm" in (tmp_path / "out" / "summary.txt").read_text()
