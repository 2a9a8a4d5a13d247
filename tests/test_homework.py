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
from homework_class import PLANTED, TORCH_HOMEWORK, write_class, write_forgeries, write_odd_files
from lessons.homework import cli as homework
from lessons.homework.sandbox import sandbox_problem

SANDBOX_PROBLEM = sandbox_problem()
needs_sandbox = pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=str(SANDBOX_PROBLEM))
# generous: importing PyTorch inside the sandbox took 12 s on a loaded 2-core machine
LIMITS = ["--time-limit", "25", "--memory-limit", "1500"]
SECRET = "the-other-students-answer-8c1f"


def grade(folder, out, *flags, env=None, fallback=True):
    """``grade`` as a teacher runs it: sandboxed where bubblewrap starts here, else (``fallback``) with --no-sandbox."""
    sandbox = ["--no-sandbox"] if fallback and SANDBOX_PROBLEM is not None and "--no-sandbox" not in flags else []
    return subprocess.run([sys.executable, "-m", "lessons.homework", "grade", str(folder), "--out", str(out),
                           *LIMITS, *sandbox, *flags], capture_output=True, text=True, timeout=600, env=env)


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
    assert gradebook(out)["a.py"]["seed"] != first["a.py"]["seed"]                  # a fresh exam each run
    again = grade(folder, out, "--fresh", "--seed", first["b.py"]["seed"])
    assert gradebook(out)["b.py"]["failed_lines"] == first["b.py"]["failed_lines"]
    assert gradebook(out)["b.py"]["seed"] == first["b.py"]["seed"]


def test_without_bubblewrap_grade_refuses_unless_told_and_then_says_so_on_every_row(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "a.py").write_text(PLANTED)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))      # no bwrap on this PATH
    refused = grade(folder, tmp_path / "grades", env=env, fallback=False)
    assert refused.returncode != 0 and "apt-get install bubblewrap" in refused.stderr, refused.stdout + refused.stderr
    assert "--no-sandbox" in refused.stderr and not (tmp_path / "grades" / "grades.csv").exists()
    r = grade(folder, tmp_path / "grades", "--no-sandbox", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    row = gradebook(tmp_path / "grades")["a.py"]
    assert row["score"] == "14" and row["sandboxed"].startswith("not sandboxed")
    assert "--no-sandbox" in r.stdout and "unsandboxed" in r.stdout


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
    from lessons.homework import grade
    report = grade(getattr(homework_bn, cls))
    out = capsys.readouterr().out
    assert line in {f["name"] for f in report.failures} and hint in out, out
    assert "moving mean is off" not in out          # the mean is right in each of them


def test_one_cause_is_one_message(capsys):
    import homework_bn
    from lessons.homework import grade
    report = grade(homework_bn.Float64Gamma)
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


# ---- what a hostile submission, or an odd file, did to the grader; each closed ----------
ESCAPES = PLANTED + '\nprint("\\x1b[2J\\x1b]52;c;cm0gLXJmIH4=\\x07 cleared \\u202e txt.exe")\n'
REFORMATTED = "# my own work\n\n\n" + PLANTED.replace("    def forward(self, X):", "\n    def forward(self,   X):  # here")
BACKWARD_AS_MODULE = '''from minidl.ops import norm as N

def BatchNorm2d(dy, x, gamma, beta, eps):       # a correct backward function under the module's name
    axes = (0,) + tuple(range(2, x.ndim))
    t = N.backward_staged(dy, x, gamma.reshape(N.channel_shape(x.shape)), eps, axes)
    return t.g_x, t.g_gamma.reshape(-1), t.g_beta.reshape(-1)
'''


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    """Forgeries on the skeleton, escapes in the output, a copy, a function for a class: graded once."""
    tmp = tmp_path_factory.mktemp("attacks")
    folder, out = tmp / "submissions", tmp / "grades"
    write_forgeries(str(folder))
    (folder / "correct.py").write_text(PLANTED)
    (folder / "reformatted_copy.py").write_text(REFORMATTED)
    (folder / "escapes.py").write_text(ESCAPES)
    (folder / "function_for_a_class.py").write_text(BACKWARD_AS_MODULE)
    r = grade(folder, out, "--workers", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(r=r, rows=gradebook(out), out=out)


def feedback(out, name):
    return (out / "feedback" / f"{name}.txt").read_text()


@pytest.mark.parametrize("forgery", ["patches_the_grader", "writes_a_result", "says_memory_error"])
def test_a_forgery_earns_no_more_than_the_skeleton_it_is_built_on(attacks, forgery):
    rows = attacks["rows"]
    skeleton, forged = rows["skeleton.py"], rows[f"{forgery}.py"]
    assert skeleton["status"] == "graded" and int(skeleton["score"]) == 2, skeleton    # γ and β, both shapes
    assert int(forged["score"]) <= int(skeleton["score"]), forged
    assert forged["max_score"] == "14" and forged["status"] in ("graded", "error"), forged   # never "memory limit"
    assert "PASS  training forward" not in feedback(attacks["out"], f"{forgery}.py")


def test_identical_code_under_two_names_is_flagged(attacks):
    rows = attacks["rows"]
    assert rows["correct.py"]["copies"] == "reformatted_copy.py" and rows["reformatted_copy.py"]["copies"] == "correct.py"
    assert rows["reformatted_copy.py"]["score"] == "14"
    assert "share their code" in attacks["r"].stdout
    assert rows["escapes.py"]["copies"] == ""                         # one more line of code: not a copy


def test_a_function_where_a_class_is_expected_is_refused(attacks):
    row = attacks["rows"]["function_for_a_class.py"]
    assert row["status"] == "error" and row["score"] == "0" and row["max_score"] == "14", row
    assert "BatchNorm2d is a function, not a class" in feedback(attacks["out"], "function_for_a_class.py")


def test_terminal_escapes_in_output_are_shown_escaped(attacks):
    text = feedback(attacks["out"], "escapes.py")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text and "cleared" in text
    assert attacks["rows"]["escapes.py"]["score"] == "14"


def test_a_class_where_a_backward_function_is_expected_is_refused(tmp_path):
    folder = tmp_path / "backward"
    folder.mkdir()
    (folder / "module.py").write_text(PLANTED + "\nbatchnorm_backward = BatchNorm2d\n")
    (folder / "function.py").write_text(BACKWARD_AS_MODULE.replace("def BatchNorm2d", "def batchnorm_backward"))
    r = grade(folder, tmp_path / "grades", "--name", "batchnorm_backward")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = gradebook(tmp_path / "grades")
    assert (rows["function.py"]["score"], rows["function.py"]["max_score"]) == ("6", "6"), rows
    assert (rows["module.py"]["status"], rows["module.py"]["score"], rows["module.py"]["max_score"]) == ("error", "0", "6")
    assert "batchnorm_backward is a class, not a function" in (tmp_path / "grades" / "feedback" / "module.py.txt").read_text()


def test_every_odd_file_gets_a_row_and_the_class_is_graded_to_the_end(tmp_path):
    folder, out, scratch = tmp_path / "odd", tmp_path / "grades", tmp_path / "tmp"
    scratch.mkdir()
    expected = write_odd_files(str(folder))
    (folder / "notes.txt").write_text("not a submission")
    r = grade(folder, out, "--workers", "2", env=dict(os.environ, TMPDIR=str(scratch)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 other file(s)" in r.stdout and "not graded: notes.txt" in r.stdout       # named, no row
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["submission"] for row in rows) == sorted(expected)
    for row in rows:
        name, says = row["submission"], expected[row["submission"]]
        assert None not in row and all(v is not None for v in row.values()), row      # every row whole: valid CSV
        if says == "graded":
            assert (row["status"], row["score"]) == ("graded", "14"), row
        else:
            assert row["status"] == "error" and row["score"] == "0", row
            reasons = [f.read_text() for f in (out / "feedback").iterdir() if f.read_text().startswith(name)]
            assert len(reasons) == 1 and says in reasons[0] and len(reasons[0].strip().splitlines()) == 1, (name, reasons)
    rows = {row["submission"]: row for row in rows}
    assert rows["linked_copy.py"]["copies"] == "correct.py" and "linked_copy.py" in rows["correct.py"]["copies"]
    assert len(os.listdir(out / "feedback")) == len(expected)
    assert all(len(f) <= 120 for f in os.listdir(out / "feedback"))
    assert os.listdir(scratch) == [], "a scratch folder was left behind"


# ---- the judge: inputs it alone knows, results it reads as untrusted data --------------
def test_each_grading_run_draws_its_own_exam_and_the_runner_never_sees_the_seed():
    from lessons.homework.judge import Exam
    a, b = Exam("module", "BatchNorm2d"), Exam("module", "BatchNorm2d")
    assert a.seed != b.seed
    assert str(a.seed).encode() not in a.request() and b"seed" not in a.request()
    key = "0/training forward/x"
    assert not (a.inputs[key] == b.inputs[key]).all()
    assert (Exam("module", "BatchNorm2d", seed=a.seed).inputs[key] == a.inputs[key]).all()   # the teacher can redo it


JUNK = [b"", b"\x00\xff" * 100, b"[" * 100000, b'{"step": "load", "framework": 5}\n',
        b'{"step": "0/training forward", "ops": [{}, {}, {"y": {"shape": [16, 3], "dtype": "float32", '
        b'"data": "not a list"}}]}\n',
        b'{"step": "0/training forward", "ops": [{}, {}, {"y": {"shape": [1000000000], "dtype": "x", "data": []}}]}\n',
        b'{"step": "0/parameters", "ops": [{"gamma": {"registered": "yes", "shape": 3}}]}\n' * 3,
        b'{"step": "0/gradients", "ops": [{}, {}, {"y": null}, {"dx": {"shape": [2], "data": [1e308, NaN]}}]}\n',
        b'{"step": "0/training forward", "ops": [{}, {}, {"y": {"shape": [1], "dtype": "f", "data": [1' + b'0' * 400
        + b']}}]}\n', b"\n" * (64 << 20),
        b'{"step": "0/moving averages", "ops": [{}, {}, {"found": true, "mean_name": "moving_mean", "var_name": '
        b'"moving_var", "mean": {"shape": [2], "dtype": "float32", "data": [0, 0]}, "var": {"shape": [2], '
        b'"dtype": "float32", "data": [1, 1]}}]}\n']


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_malformed_results_are_no_result_never_a_crash_or_a_mark(junk):
    from lessons.homework.judge import Exam, parse_records
    exam = Exam("module", "BatchNorm2d")
    for raw in (junk, b'{"step": "load", "framework": "minidl"}\n' + junk):     # the lines judged too
        report = exam.mark(parse_records(raw, exam.keys))
        assert report.score == 0 and report.max_score == 14


def test_the_judge_reads_any_mutation_of_honest_results_without_raising():
    """Honest records with one to three of their values replaced by any JSON value:
    every line is judged (no exception), and the score stays within the exam's."""
    import copy
    import random
    import homework_bn
    from lessons.homework import runner
    from lessons.homework.judge import Exam
    exam, records = Exam("module", "BatchNorm2d"), {}
    runner.run_plan(homework_bn.BatchNorm2d, exam.plan(), lambda r: records.setdefault(r["step"], json.loads(json.dumps(r))))
    assert exam.mark(records).passed

    def paths(o, p=()):
        yield p
        for k, v in (o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) and len(o) < 20 else ()):
            yield from paths(v, p + (k,))
    places = [(key, p) for key, r in records.items() for p in paths(r) if p]
    values = [None, True, 0, -1, 1.5, float("nan"), "x", "moving_var", [], {}, [1, 2], ["moving_mean"], 10 ** 400,
              {"shape": [2], "dtype": "float32", "data": [1, 2]}, {"shape": [1, 3], "dtype": "float32", "data": [1, 2, 3]}]
    rng = random.Random(0)
    for _ in range(400):
        mutated = copy.deepcopy(records)
        for _ in range(rng.randint(1, 3)):
            key, p = rng.choice(places)
            try:
                o = mutated[key]
                for q in p[:-1]:
                    o = o[q]
                o[p[-1]] = rng.choice(values)
            except (KeyError, IndexError, TypeError):
                pass                              # an earlier mutation replaced a parent
        report = exam.mark(mutated)
        assert 0 <= report.score <= report.max_score == 14 and len(report.lines) == 14


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_an_output_of_nan_or_infinity_fails_its_line(value):
    from lessons.homework.judge import Exam, parse_records
    exam = Exam("module", "BatchNorm2d")
    y = {"shape": [16, 3], "dtype": "float32", "data": [value] * 48}
    raw = (f'{{"step": "load", "framework": "minidl"}}\n{{"step": "0/training forward", "ops": [{{}}, {{}}, '
           f'{{"y": {json.dumps(y).replace(chr(34) + value + chr(34), value)}}}]}}\n').encode()
    report = exam.mark(parse_records(raw, exam.keys))
    line = next(line for line in report.lines if line["name"] == "training forward" and "(N, D)" in line["case"])
    assert line["status"] == "FAIL" and "relative error inf" in line["message"], line


def _backward_missing(term):
    """A batchnorm_backward that leaves out one term of dx (or uses the unbiased variance)."""
    import numpy as np
    from minidl.ops import norm as N

    def backward(dy, x, gamma, beta, eps):
        axes = (0,) + tuple(range(2, x.ndim))
        m = x.size // x.shape[1]
        t = N.backward_staged(dy, x, gamma.reshape(N.channel_shape(x.shape)), eps, axes)
        x_mu = x - t.mu
        if term == "unbiased":
            sigma = (t.var * m / (m - 1) + eps) ** 0.5
            g_var = (t.g_xhat * x_mu).sum(axes, keepdims=True) * -0.5 * sigma ** -3
            dx = t.g_xhat / sigma + g_var * 2 * x_mu / (m - 1) + (-t.g_xhat / sigma).sum(axes, keepdims=True) / m
        else:
            terms = {"direct": t.g_xhat / t.sigma, "var": t.g_var * 2 * x_mu / m, "mu": t.g_mu / m}
            dx = sum(v for k, v in terms.items() if k != term)
        return dx, np.asarray(t.g_gamma).reshape(-1), np.asarray(t.g_beta).reshape(-1)
    backward.__name__ = "batchnorm_backward"
    return backward


@pytest.mark.parametrize("term, hint", [
    ("var", "dx is missing the term through σ²"), ("mu", "dx is missing the term through μ"),
    ("direct", "dx is missing the direct term"), ("unbiased", "dx uses the unbiased variance"),
])
def test_the_backward_hint_names_the_missing_term(term, hint):
    from lessons.homework import grade
    report = grade(_backward_missing(term), quiet=True)
    failed = [line for line in report.failures if line["name"] == "dx"]
    assert len(failed) == 2 and all(hint in line["message"] for line in failed), report.failures
    assert {line["name"] for line in report.failures} == {"dx"} or term == "unbiased"


def test_the_handout_checks_every_line_with_the_judges_constructor():
    import jupytext
    from lessons.homework import module
    notebook = jupytext.read(homework.NOTEBOOK)
    checked = [c.source.split("'")[1] for c in notebook.cells if c.source.startswith("check_line(")]
    assert checked == list(module.LINE_NAMES)
    assert f"momentum={module.MOMENTUM}, eps=1e-5" in notebook.cells[-1].source
