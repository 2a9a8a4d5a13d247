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
