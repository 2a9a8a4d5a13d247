"""Every lesson's --quick mode, end to end: as a script, as a user runs it, and
as a Jupyter notebook (jupytext → nbclient on a real IPython kernel), as a
teacher opens it."""
import json
import os
import re
import runpy
import struct
import subprocess
import sys

import numpy as np
import pytest

LESSONS = {  # lesson: files its quick run must write
    "conditioning": ["loss.png", "contours.png", "fit.png", "results.json", "summary.md"],
    "batchnorm_backward": ["gradcheck_errors.png", "graph_autograd.png", "graph_hand_derived.png",
                           "graph_step_xhat.png", "steps_bn.html", "steps_block.html", "results.json",
                           "summary.md"],
    "lenet5_batchnorm": ["loss.png", "accuracy.png", "running_stats.png", "results.json", "summary.md"],
    "normalizers": ["cube.png", "switch_weights.png", "ssn_radius.png", "bn_backward_geometry.png",
                    "results.json", "summary.md"],
    "batch_size": ["error_vs_batch.png", "bn_modes.png", "results.json", "summary.md"],
    "bn_placement": ["placement.png", "results.json", "summary.md"],
    "deep_signal": ["plain_mlp.png", "residual_init.png", "training.png", "results.json", "summary.md"],
    "smoothness": ["landscape.png", "noisy_bn.png", "results.json", "summary.md"],
    "weight_init": ["weight_init.png", "results.json", "summary.md"],
    "bn_regularization": ["ablation.png", "results.json", "summary.md"],
}


def lesson_docstring(name):
    """The lesson's module docstring, read from its file (running it would run the lesson)."""
    import ast
    import lessons
    with open(os.path.join(os.path.dirname(lessons.__file__), f"{name}.py")) as f:
        return ast.get_docstring(ast.parse(f.read()))


VERDICT_WORDS = re.compile(r"\b(agrees?|disagrees?|more robust|less robust|opposite sign|about the same|same sign|"
                           r"is better|is worse|confirms?|contradicts?)\b", re.IGNORECASE)


def png_size(path):
    """A PNG's (width, height) in pixels, from its IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def literal_slips(markdown):
    """Places where a Markdown output would turn literal text into emphasis: an
    unescaped * between two word characters (``area*0.01, price*0.1`` renders as
    "area0.01, price0.1" in italics), outside code spans and formulas."""
    text = re.sub(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$", "", markdown, flags=re.DOTALL)
    return re.findall(r"\S*\w(?<!\\)\*\w\S*", text)


def check_quick_output(out, texts):
    """What a quick run may show a class: its summary.md opens by saying it is a
    quick run, links only pictures that exist, every PNG is wide enough for a
    projector and no taller than 1.2 times its width, and nothing printed draws a
    verdict or calls a difference resolved."""
    summary = (out / "summary.md").read_text()
    assert "quick run" in "\n".join(summary.splitlines()[:4]).lower(), "summary.md does not open as a quick run"
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", summary):
        assert (out / link).exists(), f"summary.md links {link}, which was not drawn"
    for png in out.glob("*.png"):
        width, height = png_size(png)
        assert width >= 900, f"{png.name} is {width} px wide, under 900"
        assert height <= 1.2 * width, f"{png.name} is {width}×{height} px: taller than 1.2× its width"
    printed = "\n".join(texts)
    words = VERDICT_WORDS.findall(printed)
    assert not words, f"a quick run printed verdict words: {words}"
    assert not re.search(r"resolved\??\s*(\|\s*)?yes|\byes\s*$", printed, re.IGNORECASE | re.MULTILINE), \
        "a quick run calls a difference resolved"
    assert not re.search(r"^\s*\(\d+\): \w+\(", printed, re.MULTILINE), "a quick run prints a model's layers"


def run_lesson(name, *argv, monkeypatch):
    """Run lessons.<name> as `python -m` does, in this process; its globals."""
    monkeypatch.setattr(sys, "argv", [f"lessons/{name}.py", *argv])
    return runpy.run_module(f"lessons.{name}", run_name="__main__")


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_runs_as_a_notebook(name, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    import lessons
    notebook = jupytext.read(os.path.join(os.path.dirname(lessons.__file__), f"{name}.py"))
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code_cells) >= 4, "a lesson is a sequence of cells"
    assert all(not c.source.startswith((" ", "\t")) for c in code_cells), "a cell is indented"
    out = tmp_path / "out"
    os.environ["MINIDL_LESSON_ARGS"] = f"--quick --out {out}"
    try:
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        del os.environ["MINIDL_LESSON_ARGS"]
    for f in LESSONS[name]:
        assert (out / f).stat().st_size > 0, f"{name} as a notebook wrote no {f}"
    outputs = [o for c in code_cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # a chapter: its story in Markdown, under a title
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    assert len(markdown) >= 4 and markdown[0].startswith("# "), "a lesson's story is in Markdown cells"
    # clean output: no progress bar (nor anything else) left on stderr, no leftover bar, no docstring echo
    covered = [o["text"] for o in outputs if "the legend covers" in o.get("text", "")]
    assert not covered, f"a legend drawn over a plotted line: {covered}"
    assert not [o for o in outputs if o.get("name") == "stderr"], "output on stderr"
    rendered = [o.get("data", {}).get("text/markdown", "") for o in outputs]
    slips = [m for text in rendered for m in literal_slips(text)]
    assert not slips, f"literal text read as Markdown emphasis: {slips}"
    shown = "\n".join(rendered + [o.get("text", "") for o in outputs])
    assert shown.count("No verdict") <= 1, f"\"No verdict\" {shown.count('No verdict')} times in one run"
    texts = [o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs]
    assert not [t for t in texts if "█" in t or "·····" in t], "a progress bar left in the notebook"
    assert not [t for t in texts if "|---|" in t], "a table echoed as raw Markdown text"
    assert not [t for t in texts if " object at 0x" in t], "an object's repr echoed as a cell's value"
    doc = lesson_docstring(name).strip().splitlines()[0]
    assert not [t for t in texts if doc in t], "an output repeats the docstring"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert not [t for t in texts if re.search(r"<[\w.]+ (object )?at 0x[0-9a-f]+>", t)], "an object's repr echoed"
    check_quick_output(out, texts)


class Parsed(Exception):
    """Raised by the stand-in for settings() once a lesson's flags are parsed: the lesson stops there."""


def flag_values(defaults, types):
    """A command line giving every setting a value other than its default, and the
    value each should then hold."""
    argv, expected = [], {}
    for key, default in defaults.items():
        flag, kind = "--" + key.replace("_", "-"), types.get(key, type(default))
        assert default is not None or key in types, f"{flag} defaults to None and declares no type"
        if kind is bool:
            argv, expected[key] = argv + [flag], True
        elif isinstance(default, (list, tuple)):
            values = [default[0], default[-1]]
            argv, expected[key] = argv + [flag, *map(str, values)], values
        else:
            value = {int: 7, float: 0.125, str: "x"}[kind]
            argv, expected[key] = argv + [flag, str(value)], value
    return argv, expected


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_every_flag_of_a_lesson_parses_to_its_settings_type(name, tmp_path, monkeypatch):
    """Each lesson's every flag given a value: each setting holds a value of its
    default's type (or of the type the lesson declares for a None default), never
    a string where a number was meant (--subset 1000 once crashed lenet5_batchnorm)."""
    import lessons.settings
    real, seen = lessons.settings.settings, {}

    def parse(lesson, defaults, **kwargs):
        argv, expected = flag_values(defaults, kwargs.get("types") or {})
        extra = ["--workers", "1", "--scheduler", "tcp://127.0.0.1:1"] if kwargs.get("runs") else []
        monkeypatch.setattr(sys, "argv", [lesson, *argv, *extra, "--quick", "--fresh", "--out", str(tmp_path)])
        seen.update(settings=real(lesson, defaults, **kwargs), expected=expected)
        raise Parsed

    monkeypatch.setattr(lessons.settings, "settings", parse)
    with pytest.raises(Parsed):
        runpy.run_module(f"lessons.{name}", run_name="__main__")
    s, expected = seen["settings"], seen["expected"]
    for key, value in expected.items():
        got = getattr(s, key)
        assert got == value and type(got) is type(value), f"--{key.replace('_', '-')} {value!r} gave {got!r}"
    assert s.quick and s.fresh and s.out == str(tmp_path)


def test_conditioning(tmp_path, monkeypatch):
    g = run_lesson("conditioning", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    r = g["results"]
    assert r["area*0.01, price*0.1"]["condition_number"] > 1000
    assert r["standardized"]["distance_to_optimum"] < 1e-6
    assert r["area*0.01, price*0.1"]["distance_to_optimum"] > 1
    for f in LESSONS["conditioning"]:
        assert (tmp_path / f).stat().st_size > 0


def test_conditioning_contours_are_drawn_to_scale(tmp_path, monkeypatch):
    g = run_lesson("conditioning", "--out", str(tmp_path), monkeypatch=monkeypatch)
    assert all(ax.get_aspect() == 1.0 for ax in g["contour_fig"].axes)   # circles look like circles


def test_conditioning_reads_a_users_csv(tmp_path, monkeypatch):
    (tmp_path / "h.csv").write_text("area,price\n1000,100\n2000,210\n3000,290\n")
    g = run_lesson("conditioning", "--quick", "--csv", str(tmp_path / "h.csv"), "--out",
                   str(tmp_path / "o"), monkeypatch=monkeypatch)
    assert g["results"]["standardized"]["condition_number"] < 1.0001


def test_quick_runs_never_write_into_a_real_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_lesson("conditioning", "--quick", monkeypatch=monkeypatch)
    assert (tmp_path / "runs" / "conditioning-quick" / "summary.md").exists()
    assert not (tmp_path / "runs" / "conditioning").exists()


def test_batchnorm_backward_lesson(tmp_path, monkeypatch):
    g = run_lesson("batchnorm_backward", "--out", str(tmp_path), monkeypatch=monkeypatch)
    r = g["results"]
    assert r["dl/dx"]["staged vs autograd"] < 1e-10 and r["dl/dx"]["staged vs compact"] < 1e-10
    assert max(g["differences"].values()) < 1e-12          # the chapter's own terms = backward_staged
    assert set(g["differences"]) >= {"dl/dx̂", "dl/dσ²", "dl/dμ", "dl/dx"}
    # the course's terms read off the autograd graph (retain_grad), and a walk through its backward
    assert set(r["retained_vs_hand_derived"]) == {"dl/dx̂", "dl/dσ²", "dl/dμ", "dl/dx"}
    assert max(r["retained_vs_hand_derived"].values()) < 1e-12
    assert g["at_xhat"].output is g["x_hat"] and [s.op for s in g["block"]][:3] == ["ReLU", "Normalize", "Conv2d"]
    assert r["ones_upstream_max_abs_dx"] < 1e-12
    assert "more than 1 value per channel" in r["single_sample_error"]
    assert r["ops_in_graph"]["hand_derived"] == 1 and r["ops_in_graph"]["autograd"] > 10
    assert max(r["gradcheck_worst_relative_error"].values()) < 1e-6
    # each of the course's six terms is complete at a step of the pass; dl/dx at the last
    done = r["term_completed_at_step"]
    assert set(done) == {"dl/dβ", "dl/dγ", "dl/dx̂", "dl/dσ²", "dl/dμ", "dl/dx"}
    assert done["dl/dx"] == len(g["steps"]) and done["dl/dx̂"] < done["dl/dσ²"] < done["dl/dμ"] < done["dl/dx"]
    assert g["square"].number == g["square"].index + 1 == 9         # (x − μ)², counted as the stepper counts
    assert r["conv_bias_grad_max_abs"] < 1e-12                      # BN after a conv: its bias gets no gradient
    assert "rankdir=LR" in g["graph_autograd"] and "‖" not in g["graph_autograd"]   # wider than tall; no "ll" in Graphviz
    summary = (tmp_path / "summary.md").read_text()
    linked = re.findall(r"\]\(([^)]+)\)", summary)
    assert "graph_autograd.png" in linked and all((tmp_path / f).exists() for f in linked)


# ---- the homework grader ----------------------------------------------------
STUDENT = '''import numpy as np

def _stats(x):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return axes, shape

def right(dy, x, gamma, beta, eps):
    axes, shape = _stats(x)
    m = x.size // x.shape[1]
    mu, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    xh = (x - mu) / np.sqrt(var + eps)
    g = dy * gamma.reshape(shape)
    dx = (m * g - g.sum(axes, keepdims=True) - xh * (g * xh).sum(axes, keepdims=True)) / (m * np.sqrt(var + eps))
    return dx, (dy * xh).sum(axes), dy.sum(axes)

def right_float32(dy, x, gamma, beta, eps):
    return tuple(a.astype(np.float32) for a in right(*(a.astype(np.float32) for a in (dy, x, gamma, beta)), eps))

def wrong_dx(dy, x, gamma, beta, eps):
    axes, shape = _stats(x)
    xh = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    return dy * gamma.reshape(shape) / np.sqrt(x.var(axes, keepdims=True) + eps), (dy * xh).sum(axes), dy.sum(axes)

def only_2d(dy, x, gamma, beta, eps):
    if x.ndim != 2:
        raise NotImplementedError("only fully connected")
    return right(dy, x, gamma, beta, eps)

def two_values(dy, x, gamma, beta, eps):
    return right(dy, x, gamma, beta, eps)[:2]

def kept_shape(dy, x, gamma, beta, eps):
    dx, dg, db = right(dy, x, gamma, beta, eps)
    return dx, dg.reshape(1, -1), db[None]

def bad_shape(dy, x, gamma, beta, eps):
    dx, dg, db = right(dy, x, gamma, beta, eps)
    return dx.T if x.ndim == 2 else dx[:1], dg, db
'''


def grade(tmp_path, function):
    (tmp_path / "my_bn.py").write_text(STUDENT)
    return subprocess.run([sys.executable, "-m", "lessons.batchnorm_backward", "--check",
                           f"{tmp_path / 'my_bn.py'}:{function}", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)


def test_grader_passes_a_correct_backward_and_prints_only_the_grading(tmp_path):
    r = grade(tmp_path, "right")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "PASS"
    assert "(N, C, H, W)" in r.stdout and "(N, D)" in r.stdout
    assert "== 1. forward" not in r.stdout          # no lesson unless --lesson
    assert "a correct backward computed in float32 lands here" in r.stdout


def test_grader_passes_a_correct_float32_backward_in_the_check_band(tmp_path):
    r = grade(tmp_path, "right_float32")
    assert r.returncode == 0, r.stdout
    assert "check (float32)" in r.stdout


@pytest.mark.parametrize("function, expected", [
    ("wrong_dx", "FAIL: dx on (N, D) = (4, 3): relative error"),
    ("only_2d", "FAIL: your function on (N, C, H, W) = (4, 3, 2, 2): raised NotImplementedError: only fully connected"),
    ("two_values", "FAIL: your function on (N, D) = (4, 3): returned 2 value(s); expected three"),
    ("bad_shape", "FAIL: dx on (N, D) = (4, 3): has shape (3, 4), expected (4, 3)"),
])
def test_grader_fails_with_a_line_naming_the_gradient_and_exits_1(tmp_path, function, expected):
    r = grade(tmp_path, function)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith(expected), r.stdout
    assert "Traceback (most recent call last)" not in r.stderr


def test_grader_accepts_gamma_shaped_gradients_and_a_module_name(tmp_path):
    assert grade(tmp_path, "kept_shape").returncode == 0
    r = subprocess.run([sys.executable, "-m", "lessons.batchnorm_backward", "--check", "my_bn:right",
                        "--out", "o"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("PASS"), r.stdout + r.stderr


def test_grader_says_what_is_missing(tmp_path):
    r = grade(tmp_path, "nope")
    assert r.returncode != 0 and "has no function 'nope'" in r.stderr and "right" in r.stderr


# ---- LeNet-5: resume only what this run made --------------------------------
def test_lenet5_batchnorm_quick_and_resume(tmp_path, monkeypatch, capsys):
    out = str(tmp_path)
    r = run_lesson("lenet5_batchnorm", "--quick", "--out", out, monkeypatch=monkeypatch)["results"]
    assert set(r) == {"no BN", "BN decay=0.99", "BN decay=0.9"}
    for h in r.values():
        assert len(h["train_loss"]) == 2 and np.isfinite(h["val_loss"]).all()
    assert r["BN decay=0.9"]["lag_mean"] and not r["no BN"]["lag_mean"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"]["no BN"]["test_acc"] == r["no BN"]["test_acc"]
    for f in LESSONS["lenet5_batchnorm"]:
        assert os.path.getsize(tmp_path / f) > 0
    again = run_lesson("lenet5_batchnorm", "--quick", "--out", out, monkeypatch=monkeypatch)["results"]
    assert "resumed after epoch 2" in capsys.readouterr().out
    assert again["BN decay=0.9"]["test_acc"] == r["BN decay=0.9"]["test_acc"]


def test_lenet5_refuses_to_resume_another_runs_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path)
    run_lesson("lenet5_batchnorm", "--quick", "--out", out, monkeypatch=monkeypatch)
    with pytest.raises(SystemExit) as e:
        run_lesson("lenet5_batchnorm", "--quick", "--out", out, "--lr", "0.05", "--epochs", "1",
                   monkeypatch=monkeypatch)
    message = str(e.value)
    assert "made by a different run" in message and "--fresh" in message
    assert "lr: checkpoint 0.01, this run 0.05" in message and "epochs: checkpoint 2, this run 1" in message
    g = run_lesson("lenet5_batchnorm", "--quick", "--out", out, "--lr", "0.05", "--fresh",
                   monkeypatch=monkeypatch)
    assert len(g["results"]["no BN"]["train_loss"]) == 2       # trained afresh, its own numbers


# ---- the second wave: what each lesson's numbers must show ---------------------
def test_a_legend_over_a_line_is_found_by_bounding_boxes():
    """What the notebook test relies on: show_figure warns where a legend's box
    covers a line's segments or markers (gradcheck_errors.png's legend once sat
    on its "wrong above" line), and not where the legend is beside the axes."""
    import matplotlib.pyplot as plt
    from lessons.chapter import legend_beside, legend_overlaps
    x = np.linspace(0, 1, 50)

    def drawn(place, y=0.95, marker=None):
        fig, ax = plt.subplots()
        ax.plot(x, 1 - x, label="falling")
        if marker:
            ax.plot([0.1], [y], marker, ms=12, label="mark")
        else:
            ax.axhline(y, label="limit")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        place(ax)
        fig.tight_layout()
        fig.canvas.draw()
        found = [line for _, line in legend_overlaps(fig)]
        plt.close(fig)
        return found

    assert drawn(lambda ax: ax.legend(loc="upper right")) == ["limit"]          # a line across the box
    assert drawn(lambda ax: ax.legend(loc="upper left"), marker="o") == ["falling", "mark"]  # a marker in it
    assert drawn(lambda ax: ax.legend(loc="lower left"), y=0.5) == []
    assert drawn(legend_beside) == []


def test_two_seeds_carry_no_welch_statistics_and_no_verdict_repeats():
    """A quick run's 2 seeds once printed "smallest resolvable" differences of
    1735 points; its three verdicts each said "No verdict"."""
    from lessons import verdicts
    two, three = ({"a": [50.0, 60.0, 55.0][:n], "b": [20.0, 80.0, 40.0][:n]} for n in (2, 3))
    [c2], [c3] = verdicts.compare(two, [("a", "b")]), verdicts.compare(three, [("a", "b")])
    row = verdicts.comparison_rows([c2], quick=False, accuracies=[50, 60, 55, 40])[0]
    assert row[2:5] == ["needs ≥ 3 seeds"] * 3 and row[5] == "–"
    assert verdicts.carried(c2, f"{c2.smallest:.2f}") == "needs ≥ 3 seeds"
    assert verdicts.carried(c3, "7.5") == "7.5" and "needs" not in " ".join(
        verdicts.comparison_rows([c3], quick=False, accuracies=[50, 60])[0])
    verdicts.SAID.clear()
    said = [verdicts.verdict("agrees", [90.0], quick=True) for _ in range(3)]
    assert said == [verdicts.QUICK_REASON, "", ""]
    assert verdicts.verdict("agrees", [90.0], quick=False) == "agrees"


def test_normalizers_lesson(tmp_path, monkeypatch):
    g = run_lesson("normalizers", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    assert max(g["results"]["meta_normalization_max_difference"].values()) < 1e-10
    exact = g["results"]["geometry"]["0.0"]
    assert exact["|P² − P|"] < 1e-12 and abs(exact["x̂·dl/dx"]) < 1e-12 and abs(exact["1·dl/dx"]) < 1e-12
    assert g["results"]["geometry"]["0.1"]["|P² − P|"] > 1e-3
    for layer, (names, w, v) in g["store"]["sparse_switch"]["weights"].items():   # radius reached 1: one-hot
        assert max(w) == 1.0 and max(v) == 1.0, layer
    assert set(g["store"]["switch"]["weights"]) == {"features.1", "features.5", "classifier.2", "classifier.5"}
    # one legend per panel, naming the normalizer whose weight each line draws
    for ax in g["radius_fig"].axes:
        names = g["store"]["sparse_switch"]["weights"][ax.get_title()][0]
        assert [line.get_label() for line in ax.get_lines()] == names
        assert [t.get_text() for t in ax.get_legend().get_texts()] == names
        assert names == (["LN", "BN"] if ax.get_title().startswith("classifier") else ["IN", "LN", "BN"])


def test_batch_size_lesson_resumes_its_finished_runs(tmp_path, monkeypatch, capsys):
    args = ("--quick", "--out", str(tmp_path))
    g = run_lesson("batch_size", *args, monkeypatch=monkeypatch)
    first, conv_only = g["store"].runs, g["CONV_ONLY"]
    norms = ("BatchNorm", conv_only, "GroupNorm", "LayerNorm", "none")
    assert set(first) == {f"{n}/{b}" for n in norms for b in (2, 8, 32)}
    # both BN networks are tested in both modes, at every batch size, and results.json has them
    results = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert all("test_error_batch_statistics" in results[f"{n}/{b}"]
               for n in ("BatchNorm", conv_only) for b in (2, 8, 32))
    assert first["BatchNorm/8"]["lr"] == 0.01 * 8 / 32
    # the sentence names the worse mode at the smallest batch and by how much
    for n in ("BatchNorm", conv_only):
        ev, tr = g["modes_at"](n, 2)
        sentence = g["which_mode"](n)
        assert sentence.startswith(f"{n} at B=2")
        margin = g["mode_margin"](n)
        assert margin == pytest.approx(196 * np.sqrt((ev / 100 * (1 - ev / 100) + tr / 100 * (1 - tr / 100)) / 200),
                                       rel=1e-3)      # 200 test images in a quick run
        if abs(tr - ev) > margin:
            assert sentence.split(":")[1].strip().startswith("train mode" if tr > ev else "eval mode")
            assert f"{abs(tr - ev):.2f} points worse" in sentence
        else:
            assert "neither mode is shown to be worse" in sentence
    again = run_lesson("batch_size", *args, monkeypatch=monkeypatch)["store"].runs
    assert "resuming: 15 finished run(s)" in capsys.readouterr().out and again == first
    with pytest.raises(SystemExit, match="lr_per_32: checkpoint 0.01, this run 0.02"):
        run_lesson("batch_size", *args, "--lr-per-32", "0.02", monkeypatch=monkeypatch)


def test_error_margin_is_the_binomial_interval_of_a_difference():
    from lessons.verdicts import error_margin
    # 19 % and 19 % on 2000 images: 1.96 · √(2 · 0.19 · 0.81 / 2000) = 2.43 points
    assert error_margin(19.0, 19.0, 2000) == pytest.approx(2.431, abs=1e-3)
    assert error_margin(19.0, 19.0, 8000) == pytest.approx(2.431 / 2, abs=1e-3)     # 4× the images, half the margin
    assert error_margin(0.0, 0.0, 2000) == 0.0


def holm_by_hand(p):
    """Holm's step-down adjusted p-values, written out independently of lessons.verdicts."""
    order, m = np.argsort(p), len(p)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate([(m - k) * p[i] for k, i in enumerate(order)]))
    return adjusted


def test_bn_placement_lesson(tmp_path, monkeypatch, capsys):
    from scipy import stats
    g = run_lesson("bn_placement", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    assert set(g["summary"]) == set(g["VARIANTS"]) and all(len(v["runs"]) == 2 for v in g["summary"].values())
    model = g["lenet5"]("after", False, "tanh")
    kinds = [type(m).__name__ for m in model.children()]
    assert kinds[:3] == ["Conv2d", "Tanh", "BatchNorm2d"] and model[2].gamma is None
    # every `resolved` in results.json is Welch's test with Holm's correction on the per-seed accuracies beside it
    r = json.loads((tmp_path / "results.json").read_text())
    accs, comparisons = r["test_accuracy"], r["comparisons"]
    assert len(comparisons) == 7 and all(len(v) == 2 for v in accs.values())
    p = np.array([stats.ttest_ind(accs[c["a"]], accs[c["b"]], equal_var=False).pvalue for c in comparisons])
    for c, p_welch, p_holm in zip(comparisons, p, holm_by_hand(p)):
        assert c["difference"] == pytest.approx(np.mean(accs[c["a"]]) - np.mean(accs[c["b"]]))
        assert c["p"] == pytest.approx(p_welch) and c["p_holm"] == pytest.approx(p_holm)
        assert c["resolved"] == bool(p_holm < r["alpha"] == 0.05)
    # a quick run is a smoke test: no "yes" in the resolved column, no verdict words
    out = capsys.readouterr().out
    table = out[out.index("comparison  "):].split("\n\n")[0].splitlines()
    column = re.split(r"\s{2,}", table[0]).index("resolved?")
    cells = [re.split(r"\s{2,}", row)[column] for row in table[2:]]
    assert len(cells) == 7 and set(cells) == {"–"}
    assert "same sign" not in out and "No verdict" in out
    assert not any("resolved" in line for line in g["lines"])


def test_verdicts_resolves_a_shift_of_several_standard_deviations_not_the_spread_of_one_distribution():
    from lessons.verdicts import compare
    rng = np.random.default_rng(0)
    same = {"a": rng.normal(80, 1, 10), "b": rng.normal(80, 1, 10)}
    [c] = compare(same, [("a", "b")])
    assert not c.resolved and c.p > 0.05 and c.low < 0 < c.high
    shifted = {"a": rng.normal(85, 1, 10), "b": rng.normal(80, 1, 10)}
    [c] = compare(shifted, [("a", "b")])
    assert c.resolved and c.p < 1e-6 and 4 < c.low < c.difference < c.high < 6
    assert c.smallest < c.difference and c.seeds == 10


def test_verdicts_holm_step_matches_a_hand_computation():
    from scipy import stats
    from lessons.verdicts import compare, holm
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 → 0.06 (never below the one before)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])                              # capped at 1
    rng = np.random.default_rng(1)
    samples = {k: rng.normal(mean, 1, 6) for k, mean in (("a", 0), ("b", 1.5), ("c", 3), ("d", 0.2))}
    pairs = [("b", "a"), ("c", "a"), ("d", "a")]
    comparisons = compare(samples, pairs)
    p = np.array([stats.ttest_ind(samples[a], samples[b], equal_var=False).pvalue for a, b in pairs])
    assert [c.p for c in comparisons] == pytest.approx(p)
    assert [c.p_holm for c in comparisons] == pytest.approx(holm_by_hand(p))
    assert [c.resolved for c in comparisons] == [q < 0.05 for q in holm_by_hand(p)]
    # the 95 % interval is Welch's, as scipy computes it
    ci = stats.ttest_ind(samples["c"], samples["a"], equal_var=False).confidence_interval(0.95)
    assert (comparisons[1].low, comparisons[1].high) == pytest.approx((ci.low, ci.high))


def test_deep_signal_lesson(tmp_path, monkeypatch, capsys):
    g = run_lesson("deep_signal", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    ratios = g["results"]["residual_variance_ratio"]
    assert ratios["x + F(x)"][-1] > 50 * ratios["RescaleNet, c = L"][-1]      # tripling vs nearly flat
    assert 0.5 < ratios["RescaleNet, c = L"][-1] < 4
    grads = g["results"]["gradient_norm_squared"]
    assert grads["rescale c=L"][-1] / grads["rescale c=L"][0] < grads["plain"][-1] / grads["plain"][0]
    dead = g["results"]["plain_mlp"]["no_bias"]["dead_fraction"]
    assert len(dead) == 12 and all(0 <= d <= 1 for d in dead)
    with_m = g["ResidualMLP"](4, 8, "rescale", multipliers=True)
    assert "m" in dict(with_m.named_parameters())
    # theory beside measurement at every depth, both c for eq. 8, in results.json
    saved = json.loads((tmp_path / "results.json").read_text())
    depths = saved["gradient_norm_squared"]["depths"]
    for key in ("rescale c=1", "rescale c=L"):
        for kind in ("ours", "slide"):
            assert len(saved["gradient_norm_squared_theory"][kind][key]) == len(depths)
    for label, measured in saved["residual_variance_ratio"].items():
        assert len(saved["residual_variance_ratio_theory"][label]) == len(measured) == max(depths)
    # eq. 9 with Var F = 2 E[x²]: (2L+1)/(L+1) for the second moment, exactly at L = 1 with no mean
    assert g["variance_theory"]("rescale", 1, 1.0, 0.0, 1) == [1.5]
    assert g["variance_theory"]("plain", 2, 1.0, 0.0, None) == [3.0, 9.0]
    # a rate is stable only for every seed; the count is saved
    counts = saved["stable_count"]
    assert all(0 <= n <= 3 for c in counts.values() for n in c.values()) and len(saved["stability_seeds"]) == 3
    # a quick run says nothing about the results, and says each line once
    assert "about the same" not in out.lower() and out.count("at layer 12:") == 3   # per bias setting and the slides' line
    assert (tmp_path / "summary.md").read_text().split("\n\n")[1].startswith("**Quick run: a smoke test.**")


def test_smoothness_lesson(tmp_path, monkeypatch, capsys):
    import minidl as md
    g = run_lesson("smoothness", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    for key in ("no BN/0.01", "BN/0.01", "no BN/0.05", "BN/0.05"):
        probes = g["store"][key]["probes"]
        assert probes and all(p["loss_range"] >= 0 and p["beta_smoothness"] > 0 for p in probes)
    snaps = g["store"]["noise/noisy BN/0"]["snapshots"]
    assert len(snaps) >= 2 and len(snaps[0]["values"]) > 10
    # noisy BN evaluated both ways, every seed, in results.json; no verdict from a quick run
    saved = json.loads((tmp_path / "results.json").read_text())
    for way in ("as trained", "re-estimated"):
        assert len(saved["noisy_bn_test_acc"][f"noisy BN, {way}"]) == 2
    assert len(saved["noisy_bn_comparisons"]) == 3
    assert "no verdict" in out.lower() and "agrees" not in out and " yes " not in out
    assert (tmp_path / "summary.md").read_text().split("\n\n")[1].startswith("**Quick run: a smoke test.**")
    # the noise follows the input's dtype
    layer = g["NoisyBN"](md.nn.BatchNorm(3, 4)).astype("float64")
    y = layer(md.Tensor(np.random.default_rng(0).standard_normal((4, 3, 5, 5))))
    assert y.dtype == np.float64
    # re-estimation: the cumulative average of the batches' statistics, noise off, weights and mode kept
    model = g["noisy_lenet"](0)
    model.eval()
    weights = [p.data.copy() for p in model.parameters()]
    data = g["train"]
    g["reestimate_running_stats"](model, data)
    bn = model.features[1].bn
    batches = [x for x, _ in md.data.DataLoader(data, g["batch"], drop_last=True)]
    first = [model.features[0](x).numpy() for x in batches]
    assert np.allclose(bn.running_mean.numpy(), np.mean([f.mean(axis=(0, 2, 3)) for f in first], axis=0), atol=1e-5)
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))
    assert not model.training and all(m.noise for m in model.modules() if isinstance(m, g["NoisyBN"]))


def test_weight_init_lesson(tmp_path, monkeypatch):
    g = run_lesson("weight_init", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    assert len(g["store"].runs) == 6
    # without BN a small std starves the last layer; BN rescales it back to unit size
    # (not at 1e-4: there the pre-BN variance falls below BN's ε, and ε sets the scale)
    assert g["init_stats"][(False, 1e-2)][1] < 1e-6 < 0.1 < g["init_stats"][(True, 1e-2)][1]
    # the std of float32 activations spreading by about 1e-23 (float32 squares there are subnormal) is exact
    import minidl as md
    tiny = (np.random.default_rng(0).random(4000) * 1e-23).astype(np.float32)
    exact = tiny.astype(np.float64).std()
    assert abs(g["activation_std"](md.Tensor(tiny)) - exact) <= 1e-6 * exact
    assert abs(float(tiny.std()) - exact) > 1e-3 * exact          # where a float32 std is off
    # a diverged run is marked on the accuracy plot, not dropped
    assert g["store"]["no BN/1.00e+00"]["diverged"]
    assert "diverged (no accuracy)" in g["axes"][0].get_legend_handles_labels()[1]


def test_bn_regularization_lesson(tmp_path, monkeypatch):
    g = run_lesson("bn_regularization", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    for label in ("no BN", "BN"):
        for statistics in ("running", "batch"):
            curve = g["summary"][label][statistics]["mean_curve"]
            assert len(curve) == 5 and curve[0] == g["summary"][label][statistics]["intact_acc"]
        # the accuracy it prints (eval mode) is the intact point of its running-statistics curve
        assert g["summary"][label]["test_acc"] == g["summary"][label]["running"]["intact_acc"]
        assert not any(m.training for m in g["models"][label].modules())
    # no BN has one curve for both protocols; BN's batch statistics change its curve
    assert g["summary"]["no BN"]["running"] == g["summary"]["no BN"]["batch"]
    assert g["summary"]["BN"]["running"]["areas"] != g["summary"]["BN"]["batch"]["areas"]
    assert set(g["comparisons"]) == {"running", "batch"} and g["comparisons"]["batch"].b == "no BN"
    assert "running statistics" in g["measured"] and "each test batch's statistics" in g["measured"]
    # no verdict: the quick run's banner said so once, and the verdict says nothing more
    assert g["answer"] == ""


def test_bn_regularization_batch_statistics_leave_the_network_as_it_was(tmp_path, monkeypatch):
    """The second protocol puts BN layers in train mode, where they would update
    their running statistics; it must freeze them and give every layer its mode back."""
    g = run_lesson("bn_regularization", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    bn, plain, accuracy = g["models"]["BN"], g["models"]["no BN"], g["accuracy_with_ablated"]
    list(bn.modules())[1].train(True)               # a layer set apart: its mode must come back too
    modes_before, state_before = modes(bn), bn.state_dict()
    with g["normalizing_with"](bn, "batch"):
        assert all(m.training == isinstance(m, g["BN_LAYERS"]) for m in bn.modules())
    ablated = {(0, 1), (0, 4), (1, 2), (1, 9)}
    assert accuracy(bn, ablated, "batch") != accuracy(bn, ablated, "running")
    assert modes(bn) == modes_before
    for name, value in bn.state_dict().items():
        assert np.array_equal(value, state_before[name]), f"{name} changed under the batch-statistics protocol"
    assert accuracy(plain, ablated, "batch") == accuracy(plain, ablated, "running")      # nothing to renormalize
    with pytest.raises(ValueError, match="statistics must be one of"):
        accuracy(bn, ablated, "test")


def test_bn_regularization_says_whether_the_verdict_depends_on_the_protocol(tmp_path, monkeypatch):
    from lessons.verdicts import Comparison
    g = run_lesson("bn_regularization", "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    c = lambda difference, resolved: Comparison("BN", "no BN", difference, 0, 0, 0.01, 0.01, resolved, 0, 10)
    flips = g["mode_dependence"]({"running": c(-0.16, True), "batch": c(0.1, True)})
    assert flips.startswith("The verdict depends on the protocol") and "less robust" in flips \
        and "more robust" in flips and "cannot renormalize" in flips
    unresolved = g["mode_dependence"]({"running": c(-0.16, True), "batch": c(0.02, False)})
    assert unresolved.startswith("The verdict depends") and "neither network is shown" in unresolved
    same = g["mode_dependence"]({"running": c(-0.16, True), "batch": c(-0.05, True)})
    assert same == "The verdict does not depend on the protocol: under both, the BN network is less robust."


# ---- evaluation leaves a model as it found it ------------------------------
def small_bn_model():
    import minidl as md
    md.manual_seed(0)
    return md.nn.Sequential(md.nn.Conv2d(1, 4, 3), md.nn.BatchNorm2d(4), md.nn.ReLU(), md.nn.Dropout(0.5),
                            md.nn.Flatten(), md.nn.Linear(16, 3))


def modes(model):
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
def test_evaluate_leaves_the_model_in_the_mode_it_found(start):
    import minidl as md
    from lessons.training import evaluate
    model = small_bn_model()
    if start == "eval":
        model.eval()
    elif start == "mixed":                                  # a lesson may set one layer apart
        list(model.modules())[2].eval()
    before = modes(model)
    data = md.data.ArrayDataset(np.random.default_rng(0).standard_normal((20, 1, 4, 4)).astype(np.float32),
                                np.arange(20) % 3)
    evaluate(model, data, batch_size=8)
    assert modes(model) == before


@pytest.mark.parametrize("helper", ["evaluating", "in_mode"])
def test_mode_contexts_restore_every_layers_mode_even_after_an_error(helper):
    from lessons import training
    model = small_bn_model()
    list(model.modules())[3].eval()
    before = modes(model)
    context = training.evaluating(model) if helper == "evaluating" else training.in_mode(model, True)
    with pytest.raises(RuntimeError, match="inside"):
        with context:
            assert all(m.training == (helper == "in_mode") for m in model.modules())
            raise RuntimeError("inside")
    assert modes(model) == before


def test_no_lesson_flips_a_models_mode_outside_a_context():
    """The bug behind bn_regularization's reversed verdict: a helper that ended
    with model.train(). In lessons/, a bare .train()/.eval() call is allowed only
    where a lesson sets up a model it then uses in that mode."""
    import lessons
    folder = os.path.dirname(lessons.__file__)
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                for k, line in enumerate(f, 1):
                    if re.search(r"\.train\(\)|\.train\(True\)|\.train\(False\)", line):
                        found.setdefault(name, []).append(k)
    assert not found, f"model.train() outside a mode context: {found}"


# ---- output for a person ----------------------------------------------------
def test_no_verdict_from_models_that_learned_nothing():
    from lessons.verdicts import SAID, verdict
    SAID.clear()                    # a new run: no reason given yet (settings() clears it for a lesson)
    assert verdict("It agrees.", [85.0, 90.0], quick=False) == "It agrees."
    at_chance = verdict("It agrees.", [10.5, 90.0], quick=False)
    assert "agrees" not in at_chance and "10.5%" in at_chance and "twice chance" in at_chance
    assert verdict("It agrees.", [85.0, float("nan")], quick=False) != "It agrees."
    assert "quick run" in verdict("It agrees.", [85.0, 90.0], quick=True)


@pytest.mark.parametrize("name", ["weight_init", "bn_regularization", "batch_size"])
def test_a_quick_run_prints_no_verdict(name, tmp_path, capsys, monkeypatch):
    run_lesson(name, "--quick", "--out", str(tmp_path), monkeypatch=monkeypatch)
    out = capsys.readouterr().out.lower()
    assert "smoke test" in out and "no verdict" in out
    for word in ("agrees", "disagrees", "more robust", "less robust", "opposite sign"):
        assert word not in out, word


def test_quick_never_overrides_a_flag_the_user_gave(tmp_path, monkeypatch):
    g = run_lesson("batch_size", "--quick", "--batch-sizes", "4", "--out", str(tmp_path), monkeypatch=monkeypatch)
    assert g["s"].batch_sizes == [4] and g["s"].train_size == 192     # the flag kept, the rest quick
    assert set(g["store"].runs) == {f"{n}/4" for n in ("BatchNorm", g["CONV_ONLY"], "GroupNorm", "LayerNorm", "none")}


def test_tables_render_as_aligned_text_on_the_command_line(capsys):
    from lessons.chapter import show_table
    markdown = show_table(["a", "long header"], [["x*y", 1], ["longer cell", 22]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a            long header") and set(lines[1]) <= {"-", " "}
    assert "x\\*y" in markdown and markdown.splitlines()[1] == "|---|---|"


def test_handout_writes_executed_notebooks_and_html(tmp_path):
    pytest.importorskip("nbconvert")
    pytest.importorskip("nbclient")
    from lessons import handout
    handout.main(["conditioning", "--quick", "--out", str(tmp_path)])
    import nbformat
    nb = nbformat.read(tmp_path / "conditioning.ipynb", as_version=4)
    assert any(o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Why normalize?" in (tmp_path / "conditioning.html").read_text()
    with pytest.raises(SystemExit):
        handout.main(["no_such_lesson", "--out", str(tmp_path)])


# ---- the homework as the course sets it: a BatchNorm module -------------------
HOMEWORK = os.path.join(os.path.dirname(__file__), "homework_bn.py")
MODULE_LINES = ("parameters", "training forward", "moving averages", "eval mode", "saved by state_dict",
                "off the graph", "gradients")


def check_module(spec, cwd):
    r = subprocess.run([sys.executable, "-m", "lessons.batchnorm_backward", "--check", spec, "--out", "o"],
                       capture_output=True, text=True, cwd=cwd)
    lines = {}
    for line in r.stdout.splitlines():
        status, _, rest = line.strip().partition("  ")
        if status in ("PASS", "FAIL", "SKIP") and rest:
            lines.setdefault(rest.split(":")[0], set()).add(status)
    return r, lines


def test_module_grader_passes_the_homework_written_in_minidl(tmp_path):
    r, lines = check_module(f"{HOMEWORK}:BatchNorm2d", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines == {name: {"PASS"} for name in MODULE_LINES}
    assert r.stdout.strip().splitlines()[-1] == "PASS"
    assert "the biased one (the course's convention)" in r.stdout


@pytest.mark.parametrize("cls, line, hint", [
    ("NoEps", "training forward", "without ε"),
    ("MomentumReversed", "moving averages", "weighs the NEW value"),
    ("EvalUsesBatch", "eval mode", "batch's own statistics"),
    ("OnTheGraph", "off the graph", "no_grad"),
    ("NotSaved", "saved by state_dict", "plain tensor attributes"),
    ("GammaNotAParameter", "parameters", "not a registered parameter"),
])
def test_module_grader_fails_each_planted_mistake_on_its_line_only(tmp_path, cls, line, hint):
    r, lines = check_module(f"{HOMEWORK}:{cls}", tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert {name for name, status in lines.items() if "FAIL" in status} == {line}, r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith(f"FAIL: {line} on (N, D)") and hint in r.stdout
    assert "Traceback" not in r.stderr


from homework_class import TORCH_HOMEWORK  # noqa: E402  (one copy, shared with test_homework)


@pytest.mark.parametrize("unbiased", [False, True])
def test_module_grader_grades_the_pytorch_homework_and_names_the_variance(tmp_path, unbiased):
    pytest.importorskip("torch")
    count = "(X.numel() / X.shape[1]) / (X.numel() / X.shape[1] - 1)" if unbiased else "1"
    (tmp_path / "hw.py").write_text(TORCH_HOMEWORK.replace("{unbias}", count))
    r, lines = check_module("hw.py:BatchNorm2d", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(PyTorch module)" in r.stdout and lines == {name: {"PASS"} for name in MODULE_LINES}
    assert ("the unbiased one (PyTorch's convention" if unbiased else "the biased one (the course's") in r.stdout


def test_lenet5_trains_the_students_module_beside_minidls(tmp_path, monkeypatch):
    g = run_lesson("lenet5_batchnorm", "--quick", "--norm", f"{HOMEWORK}:BatchNorm2d", "--out", str(tmp_path),
                   monkeypatch=monkeypatch)
    assert list(g["results"]) == ["no BN", "your BatchNorm2d", "minidl BN decay=0.9"]
    assert type(g["make_model"](g["RUNS"]["your BatchNorm2d"]).features[1]).__name__ == "BatchNorm2d"
    for f in ("loss.png", "accuracy.png", "results.json", "summary.md"):
        assert (tmp_path / f).stat().st_size > 0
    assert "your BatchNorm2d" in (tmp_path / "summary.md").read_text()
    # the course's CIFAR-10 figures only in the course's own rows, never beside the student's module
    rows = [line for line in g["table"].splitlines() if line.startswith("| ") and "model" not in line]
    course = {line.split(" | ")[0][2:]: line for line in rows if "CIFAR-10" in line}
    assert set(course) == {"the course's no BN", "the course's BN decay=0.99", "the course's BN decay=0.9"}
    for line in rows:
        if "CIFAR-10" not in line:
            assert not re.search(r"74\.33|78\.16|78\.26", line), f"a course figure in our row: {line}"
    assert "your" not in g["ranking"].split("the course's")[1]
    # the student's module and minidl's BN compute the same training step
    assert g["results"]["your BatchNorm2d"]["step_loss"] == pytest.approx(
        g["results"]["minidl BN decay=0.9"]["step_loss"], rel=1e-4)


# ---- every core at work: independent runs in parallel, identical results ----------------
def square_after(x, seconds):
    import time
    time.sleep(seconds)                 # later keys finish first: storing must not depend on order
    return {"x": x, "square": x * x}


def fails_on(x):
    if x == 2:
        raise ZeroDivisionError("run 2 broke")
    return x


@pytest.mark.parametrize("make", ["thread", "process", "workers", "in-process"])
def test_run_all_stores_every_result_by_key_with_any_executor(make):
    import concurrent.futures as cf
    from lessons.runs import run_all
    runs = {f"x={x}": (square_after, (x, 0.05 * (3 - x))) for x in range(4)}
    store = {"x=0": {"x": 0, "square": 0}}          # finished before: not run again
    if make in ("thread", "process"):
        pool = cf.ThreadPoolExecutor(2) if make == "thread" else cf.ProcessPoolExecutor(2)
        with pool:
            run_all(runs, store, executor=pool)
    else:
        run_all(runs, store, workers=2 if make == "workers" else 1)
    assert store == {f"x={x}": {"x": x, "square": x * x} for x in range(4)}


def threads_of_a_run():
    import minidl as md
    return md.get_num_threads()


@pytest.mark.parametrize("make", ["thread", "process", "workers", "in-process"])
def test_runs_in_workers_give_minidl_one_thread_and_runs_here_every_thread(make):
    import concurrent.futures as cf
    import minidl as md
    from lessons.runs import run_all
    before = md.get_num_threads()
    md.set_num_threads(3)
    try:
        store = {}
        runs = {"a": (threads_of_a_run, ()), "b": (threads_of_a_run, ())}
        if make in ("thread", "process"):
            with (cf.ThreadPoolExecutor(2) if make == "thread" else cf.ProcessPoolExecutor(2)) as pool:
                run_all(runs, store, executor=pool)
        else:
            run_all(runs, store, workers=2 if make == "workers" else 1)
        assert store == ({"a": 3, "b": 3} if make == "in-process" else {"a": 1, "b": 1})
        assert md.get_num_threads() == 3              # the caller's count, as it was
    finally:
        md.set_num_threads(before)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_run_stops_everything_naming_its_key_and_traceback(workers):
    from lessons.runs import run_all
    store = {}
    with pytest.raises(ZeroDivisionError, match="run 2 broke") as e:
        run_all({f"run {x}": (fails_on, (x,)) for x in range(4)}, store, workers=workers, desc="test")
    notes = "\n".join(getattr(e.value, "__notes__", []))
    if sys.version_info >= (3, 11):
        assert "in run 'run 2' of test" in notes
        if workers > 1:
            assert "fails_on" in notes and 'raise ZeroDivisionError("run 2 broke")' in notes   # the worker's traceback
    assert "run 2" not in store


def test_a_lessons_results_do_not_depend_on_the_number_of_workers(tmp_path, monkeypatch):
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run_lesson("bn_placement", "--quick", "--workers", str(workers), "--out", str(out), monkeypatch=monkeypatch)
        results[workers] = json.loads((out / "results.json").read_text())
    assert results[1] == results[2]


def test_ctrl_c_stops_the_workers_and_keeps_the_finished_runs():
    import signal
    import threading
    import time
    from lessons.runs import run_all
    store = {}
    runs = {"fast": (square_after, (1, 0.05)), **{f"slow {x}": (square_after, (x, 30.0)) for x in range(3)}}
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    start = time.time()
    with pytest.raises(KeyboardInterrupt, match=r"stopped; 1 finished run\(s\) are stored"):
        run_all(runs, store, workers=2)
    assert list(store) == ["fast"] and time.time() - start < 10      # the 30 s runs were stopped, not awaited
