"""The README's usage example runs as written."""
import os
import re


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    code = re.search(r"## Using it\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["x"].grad is not None and namespace["bn"].decay == 0.9
    assert (tmp_path / "graph.dot").exists()


# ---- the README's figures come from recorded runs ---------------------------
ROOT = os.path.join(os.path.dirname(__file__), "..")


def read(path):
    with open(path) as f:
        return f.read()
RESULT_LINK = re.compile(r"\]\((docs/results/(\w+)\.md)\)")
FIGURE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w])")


def figures(text):
    """The numbers a piece of the README quotes, as written (− read as -), leaving
    out link targets and `code`, which hold file names and commands."""
    text = re.sub(r"\]\([^)]*\)|`[^`]*`", " ", text.replace("−", "-"))
    return FIGURE.findall(text)


def contains(text, figure):
    """``figure`` appears in ``text`` as a number of its own (0.45 is not in 0.452)."""
    return re.search(r"(?<![\d.])" + re.escape(figure.lstrip("-")) + r"(?!\d)", text.replace("−", "-")) is not None


def readme_quotes():
    """(quote, files) for each table cell or paragraph of the README that links a
    recorded result, docs/results/<lesson>.md."""
    readme = read(os.path.join(ROOT, "README.md"))
    pieces = [cell for line in readme.splitlines() if line.startswith("|") for cell in line.split(" | ")]
    pieces += [p for p in re.split(r"\n\s*\n", readme) if not p.lstrip().startswith("|")]
    return [(p, sorted({m.group(1) for m in RESULT_LINK.finditer(p)})) for p in pieces if RESULT_LINK.search(p)]


def lessons_table():
    """The README's lessons table: (lesson, what it shows, its recorded run) per row."""
    readme = read(os.path.join(ROOT, "README.md"))
    rows = re.findall(r"^\| `lessons\.(\w+)` \| (.*) \| (.*) \|$", readme, re.MULTILINE)
    assert len(rows) == 10, f"the README's lessons table has {len(rows)} rows"
    return rows


def test_every_figure_the_readme_quotes_from_a_lesson_is_in_its_recorded_result():
    quotes = readme_quotes()
    assert quotes, "the README cites no recorded result"
    for quote, files in quotes:
        recorded = ""
        for f in files:
            path = os.path.join(ROOT, f)
            assert os.path.exists(path), f"the README cites {f}, which no run recorded"
            recorded += read(path)
        missing = [x for x in figures(quote) if not contains(recorded, x)]
        assert not missing, f"the README quotes {missing}, not in {', '.join(files)}:\n{quote}"


def test_the_lessons_table_quotes_results_only_from_recorded_runs():
    """A lesson's row says what the lesson shows in figures its code holds (its
    settings); its results and wall time come from its recorded run, or the row
    names the command that records one."""
    for name, shows, run in lessons_table():
        source = read(os.path.join(ROOT, "lessons", f"{name}.py"))
        stray = [x for x in figures(shows) if not contains(source, x)]
        assert not stray, f"lessons.{name}: the README's description quotes {stray}, which its code does not hold"
        if f"docs/results/{name}.md" not in run:
            assert "not recorded" in run and f"python -m lessons.{name} --record" in run, run
            assert not figures(run), f"lessons.{name}: figures {figures(run)} quoted from no recorded run"


def test_the_quote_check_catches_a_stale_figure():
    recorded = "| wall time | 126 s |\n area BN 0.465, no BN 0.611; p = 1.5e-04"
    assert all(contains(recorded, x) for x in figures("0.465 against 0.611, 126 s, p = 1.5e-04"))
    assert [x for x in figures("area 0.452 against 0.61 (`--record`, [file](docs/results/x.md))")
            if not contains(recorded, x)] == ["0.452", "0.61"]
    assert figures("−0.160 [docs](docs/results/bn_regularization.md)") == ["-0.160"]


# ---- --record: how a lesson writes the file ---------------------------------
def git_checkout(root):
    """A tiny source checkout: docs/, and lessons/ committed."""
    import subprocess
    (root / "docs").mkdir(parents=True)
    (root / "lessons").mkdir()
    (root / "lessons" / "x.py").write_text("X = 1\n")
    git = lambda *a: subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                    check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("add", "lessons")
    git("commit", "-q", "-m", "x")
    return git("rev-parse", "HEAD")


def run_lesson(name, *argv, monkeypatch):
    import runpy
    import sys
    monkeypatch.setattr(sys, "argv", [f"lessons/{name}.py", *argv])
    return runpy.run_module(f"lessons.{name}", run_name="__main__")


def test_record_writes_the_default_runs_results_with_what_made_them(tmp_path, monkeypatch):
    from lessons import record
    root = tmp_path / "checkout"
    commit = git_checkout(root)
    monkeypatch.setattr(record, "ROOT", str(root))
    out = tmp_path / "run"
    (out).mkdir()
    (out / "runs.json").write_text("{}")
    g = run_lesson("conditioning", "--record", "--out", str(out), monkeypatch=monkeypatch)
    assert g["s"].fresh                                 # a recorded wall time is never a resumed run's
    text = (root / "docs" / "results" / "conditioning.md").read_text()
    assert text.startswith("# Conditioning") and f"| commit | {commit} |" in text
    assert f"| command | `python -m lessons.conditioning --record --out {out}` |" in text
    assert re.search(r"\| wall time \| \d+ s \|", text) and re.search(r"\| started \| 20\d\d-", text)
    assert "| machine | " in text and "NumPy" in text
    kappa = g["results"]["standardized"]["condition_number"]
    assert f"| {kappa:.4g} |" in text                     # the run's own table
    assert "![" not in text and "loss.png" not in text    # its plots stay in the run's folder


def test_record_refuses_what_is_not_a_default_run_of_committed_code(tmp_path, monkeypatch, capsys):
    import pytest
    from lessons import record
    root = tmp_path / "checkout"
    git_checkout(root)
    monkeypatch.setattr(record, "ROOT", str(root))
    refusals = {("--quick",): "a quick run", ("--iters", "10"): "differ from it: --iters"}
    for argv, why in refusals.items():
        with pytest.raises(SystemExit) as stop:
            run_lesson("conditioning", "--record", *argv, "--out", str(tmp_path / "out"), monkeypatch=monkeypatch)
        assert stop.value.code == 2 and why in capsys.readouterr().err
    (root / "lessons" / "x.py").write_text("X = 2\n")
    with pytest.raises(ValueError, match="uncommitted changes in lessons/x.py"):
        record.start("conditioning", [], False, [], False)
    monkeypatch.setattr(record, "ROOT", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere" / "docs").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a git checkout"):
        record.start("conditioning", [], False, [], False)
    assert not (root / "docs" / "results").exists()


def test_readme_writing_your_own_op_runs(tmp_path, monkeypatch):
    """Both ways of writing an op, as the README shows them, in one namespace."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    section = re.search(r"## Writing your own op\n(.*?)\n## ", readme, re.S).group(1)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    x = namespace["x"]
    y = namespace["CubeTorch"].apply(x)
    assert y.creator is not None and (namespace["cube"](x).data == y.data).all()
