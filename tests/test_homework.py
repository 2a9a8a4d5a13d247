"""The homework at class scale: the hand-out notebook runs as handed out, and
`grade` turns a folder of untrusted submissions (correct, one mistake each,
hostile) into a gradebook, each submission in its own limited, sandboxed process."""
import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import IN_CI
from homework_class import PLANTED, TORCH_HOMEWORK, write_class
from lessons.homework import cli as homework
from lessons.homework.sandbox import sandbox_problem

SANDBOX_PROBLEM = sandbox_problem()
needs_sandbox = pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=str(SANDBOX_PROBLEM))
# generous: importing PyTorch inside the sandbox took 12 s on a loaded 2-core machine
LIMITS = ["--time-limit", "25", "--memory-limit", "1500"]
SECRET = "the-other-students-answer-8c1f"


def grade(folder, out, *flags, env=None):
    return subprocess.run([sys.executable, "-m", "lessons.homework", "grade", str(folder), "--out", str(out),
                           *LIMITS, *flags], capture_output=True, text=True, timeout=600, env=env)


def gradebook(out):
    with open(os.path.join(out, "grades.csv"), newline="") as f:
        return {row["submission"]: row for row in csv.DictReader(f)}


def filled_handout(path, code):
    """The hand-out notebook with ``code`` in its homework cell, as a student hands it in."""
    notebook = homework.handout_notebook()
    cell = next(c for c in notebook.cells if "homework" in c.metadata.get("tags", []))
    cell.source = code
    with open(path, "w") as f:
        json.dump(notebook, f)




@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """One folder of every kind of submission, graded once with two workers; the
    sandbox's attacks are planted where the sandbox can start."""
    tmp = tmp_path_factory.mktemp("class")
    folder, outside, out = tmp / "submissions", tmp / "outside", tmp / "grades"
    outside.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    sandboxed = SANDBOX_PROBLEM is None
    expected = write_class(str(folder), outside=str(outside) if sandboxed else None,
                           secret_file=str(folder / "secret_holder.py") if sandboxed else None,
                           port=listener.getsockname()[1] if sandboxed else None)
    (folder / "secret_holder.py").write_text(PLANTED + f"\n# {SECRET}\n")
    expected["secret_holder.py"] = ("graded", None)
    filled_handout(folder / "notebook.ipynb", PLANTED)
    expected["notebook.ipynb"] = ("graded", None)
    try:
        import torch  # noqa: F401
        (folder / "pytorch.py").write_text(TORCH_HOMEWORK.replace("{unbias}", "1"))
        expected["pytorch.py"] = ("graded", None)
    except ImportError:
        if IN_CI:       # CI grades the PyTorch homework too (.ci/run installs torch)
            raise
    r = grade(folder, out, "--workers", "2")
    try:
        listener.accept()
        connected = True
    except BlockingIOError:
        connected = False
    finally:
        listener.close()
    return dict(r=r, expected=expected, rows=gradebook(out), out=out, folder=folder, outside=outside,
                connected=connected)


def test_grade_gives_full_partial_and_zero_marks_with_the_right_status(graded_class):
    r, rows, expected = graded_class["r"], graded_class["rows"], graded_class["expected"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(rows) == set(expected)
    for name, (status, line) in expected.items():
        row = rows[name]
        assert row["status"] == status, (name, row, open(graded_class["out"] / "feedback" / f"{name}.txt").read())
        assert int(row["max_score"]) == 14
        if status != "graded":
            assert int(row["score"]) == 0
        elif line is None:
            assert int(row["score"]) == 14 and row["failed_lines"] == "", (name, row)
        else:                     # one mistake: partial marks, its line (on both shapes) and nothing else
            assert 0 < int(row["score"]) < 14
            assert {f.split(" on ")[0] for f in row["failed_lines"].split("; ")} == {line}, (name, row)
        assert (graded_class["out"] / "feedback" / f"{name}.txt").stat().st_size > 0
    summary = r.stdout
    full = sum(1 for status, line in expected.values() if status == "graded" and line is None)
    assert f"{full} at full marks" in summary and "Most frequent failed line" in summary


def test_feedback_is_the_report_check_prints(graded_class):
    feedback = (graded_class["out"] / "feedback" / "mistake_MomentumReversed.py.txt").read_text()
    assert "FAIL  moving averages: momentum weighs the NEW value" in feedback
    assert "Stopped: the time limit of 25 s" in (graded_class["out"] / "feedback" / "endless_loop.py.txt").read_text()
    assert "SyntaxError" in (graded_class["out"] / "feedback" / "syntax_error.py.txt").read_text()


@needs_sandbox
def test_the_sandbox_contains_writes_reads_and_connections(graded_class):
    rows = graded_class["rows"]
    assert all(row["sandboxed"] == "yes" for row in rows.values())
    assert not (graded_class["outside"] / "pwned.txt").exists()
    assert not (graded_class["folder"] / "pwned.py").exists()
    assert not graded_class["connected"], "a submission connected to a listener on 127.0.0.1"
    for f in (graded_class["out"] / "feedback").iterdir():
        assert SECRET not in f.read_text(), f"{f.name} read another submission"
    # each attack failed quietly, and the module it hands in was graded
    for name in rows:
        if name.startswith(("writes_outside", "reads_another", "connects")):
            assert int(rows[name]["score"]) == 14, rows[name]


def test_grading_again_skips_what_is_graded_unless_fresh(graded_class, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    (folder / "a.py").write_text(PLANTED)
    (folder / "b.py").write_text(PLANTED.replace("self.eps) ** 0.5", "0.0) ** 0.5", 1))
    out = tmp_path / "grades"
    first = gradebook(out) if grade(folder, out).returncode == 0 else None
    assert first and int(first["a.py"]["score"]) == 14
    again = grade(folder, out)
    assert again.returncode == 0 and "2 of 2 submission(s) already in" in again.stdout
    assert gradebook(out)["a.py"]["seconds"] == first["a.py"]["seconds"]
    fresh = grade(folder, out, "--fresh")
    assert "already in" not in fresh.stdout and gradebook(out)["a.py"]["score"] == "14"


def test_without_bubblewrap_the_gradebook_says_not_sandboxed_and_how_to_install(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "a.py").write_text(PLANTED)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))      # no bwrap on this PATH
    r = grade(folder, tmp_path / "grades", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    row = gradebook(tmp_path / "grades")["a.py"]
    assert row["score"] == "14" and row["sandboxed"].startswith("not sandboxed: bubblewrap (bwrap) is not installed")
    assert "apt-get install bubblewrap" in r.stdout and "not sandboxed" in r.stdout


def test_the_handout_runs_unmodified_and_its_checks_say_what_to_do(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    import nbformat
    assert subprocess.run([sys.executable, "-m", "lessons.homework", "handout", "--out", str(tmp_path)],
                          capture_output=True).returncode == 0
    notebook = nbformat.read(str(tmp_path / "homework.ipynb"), 4)
    tagged = [c for c in notebook.cells if "homework" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "class BatchNorm2d(md.nn.Module)" in tagged[0].source
    assert "deck 002" in notebook.cells[0].source
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert "PASS  parameters on (N, D)" in text
    assert "FAIL  training forward on (N, D) = (16, 3): forward raised NotImplementedError" in text
    assert "the experiment trains LeNet-5 without BN only" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)                  # the loss curves
    assert any("no BN" in o.get("data", {}).get("text/markdown", "") for o in outputs)   # the accuracy table


def test_check_grades_a_module_a_notebook_and_a_backward(tmp_path):
    (tmp_path / "mine.py").write_text(PLANTED)
    filled_handout(tmp_path / "homework.ipynb", PLANTED)
    for spec in ("mine.py:BatchNorm2d", "homework.ipynb", "mine.py:NoEps"):
        r = subprocess.run([sys.executable, "-m", "lessons.homework", "check", spec], capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode == (1 if "NoEps" in spec else 0), r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("FAIL: training forward on (N, D)")


@pytest.mark.parametrize("cls, line, hint", [
    ("VarianceOverBatchOnly", "moving averages", "the moving variance is off by"),
    ("DetachedMean", "gradients", "your μ is detached from the graph: the gradient through the batch statistics "
                                  "is missing"),
    ("NeverStored", "moving averages", "computed but never stored back"),
])
def test_hints_name_what_is_wrong(cls, line, hint, capsys):
    import homework_bn
    from lessons.homework import grade_module
    report = grade_module(getattr(homework_bn, cls))
    out = capsys.readouterr().out
    assert line in {f["name"] for f in report.failures} and hint in out, out
    assert "moving mean is off" not in out          # the mean is right in each of them


def test_one_cause_is_one_message(capsys):
    import homework_bn
    from lessons.homework import grade_module
    report = grade_module(homework_bn.Float64Gamma)
    out = capsys.readouterr().out
    assert out.count("self.gamma is float64") == 2                  # its line, and the verdict
    assert "from 1 cause" in report.verdict


def test_lenet5_grades_the_module_before_training_it(tmp_path):
    hw = os.path.join(os.path.dirname(__file__), "homework_bn.py")
    lesson = [sys.executable, "-m", "lessons.lenet5_batchnorm", "--quick", "--out", str(tmp_path)]
    r = subprocess.run(lesson + ["--norm", f"{hw}:NoEps"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "FAIL  'training forward'" in r.stdout and "--force" in r.stderr
    assert not (tmp_path / "results.json").exists()
    r = subprocess.run(lesson + ["--norm", f"{hw}:RaisesInTraining", "--workers", "2"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "ValueError: my forward breaks on a batch of 32" in r.stderr and "homework_bn.py" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 4, r.stderr


# ---- what a hostile submission found, each closed -------------------------------
PROBE = '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
status = open("/proc/self/status").read()
print("CapEff", status.split("CapEff:")[1].split()[0])
for path in ("/usr", "/submission", {teacher!r}):
    # MS_REMOUNT | MS_BIND: what turned the read-only view writable when bwrap ran as root
    print("remount", path, libc.mount(None, path.encode(), None, ctypes.c_ulong(32 | 4096), None))
for path in ("/tmp/x", "/dev/shm/x"):
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError:
        pass
print("sees teacher folder", os.path.exists({teacher!r}))
'''


@needs_sandbox
def test_the_sandbox_drops_every_capability_and_hides_the_teachers_folder(tmp_path, monkeypatch):
    from lessons.homework.sandbox import grade_submission
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "grades.csv").write_text("alice.py,14\n")
    monkeypatch.chdir(teacher)                       # grading started from the teacher's folder
    monkeypatch.syspath_prepend(str(teacher))        # as `python -m` puts it on sys.path
    report = grade_submission("probe.py", PROBE.format(teacher=str(teacher)), time_limit=30)["report"]
    assert "CapEff 0000000000000000" in report, report
    assert "remount /usr -1" in report and "remount /submission -1" in report, report
    assert "wrote" not in report, report            # no RAM disk to hide memory in
    assert "sees teacher folder False" in report, report


FORGED = {
    "not a dict": '5',
    "a score that is text": '{"status": "graded", "score": "full", "max_score": 14, "failed": []}',
    "full marks with a failed line": '{"status": "graded", "score": 14, "max_score": 14, "failed": ["=HYPERLINK(1)"]}',
    "more than the maximum": '{"status": "graded", "score": 99, "max_score": 14, "failed": []}',
}


@pytest.mark.parametrize("forged", sorted(FORGED))
def test_a_forged_result_is_an_error_not_a_crash(forged):
    from lessons.homework.sandbox import grade_submission
    code = ("import os, sys\nfd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
            f"os.write(fd, {FORGED[forged]!r}.encode())\nos._exit(0)\n")
    result = grade_submission("forged.py", code, time_limit=30)
    assert result["status"] == "error" and result["score"] == 0, result
    assert "not a grade" in result["report"]


def test_a_flood_of_output_is_cut_not_kept():
    from lessons.homework.sandbox import OUTPUT_LIMIT, grade_submission
    code = "import os\nfor _ in range(8):\n    os.write(1, b'PASS ' * (1 << 18))\n"      # about 10 MB
    result = grade_submission("flood.py", code, time_limit=30)
    assert len(result["report"]) < OUTPUT_LIMIT + 1000 and "more bytes of output dropped" in result["report"]
