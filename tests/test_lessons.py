"""Every lesson's --quick mode, as a user runs it, end to end."""
import json
import os

import numpy as np

from lessons import batchnorm_backward, conditioning, lenet5_batchnorm


def test_conditioning(tmp_path):
    r = conditioning.main(["--quick", "--out", str(tmp_path)])
    assert r["area*0.01, price*0.1"]["condition_number"] > 1000
    assert r["standardized"]["distance_to_optimum"] < 1e-6
    assert r["area*0.01, price*0.1"]["distance_to_optimum"] > 1
    for f in ("loss.png", "contours.png", "fit.png", "results.json", "summary.md"):
        assert (tmp_path / f).stat().st_size > 0


def test_conditioning_reads_a_users_csv(tmp_path):
    (tmp_path / "h.csv").write_text("area,price\n1000,100\n2000,210\n3000,290\n")
    r = conditioning.main(["--quick", "--csv", str(tmp_path / "h.csv"), "--out", str(tmp_path / "o")])
    assert r["standardized"]["condition_number"] < 1.0001


def test_batchnorm_backward_grades_a_students_function(tmp_path, monkeypatch):
    (tmp_path / "student.py").write_text(
        "import numpy as np\n"
        "def wrong(dy, x, gamma, beta, eps):\n"
        "    xh = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)\n"
        "    return dy * gamma / np.sqrt(x.var(0) + eps), (dy * xh).sum(0), dy.sum(0)\n")
    monkeypatch.chdir(tmp_path)
    r = batchnorm_backward.main(["--check", "student:wrong", "--out", str(tmp_path / "o")])
    assert r["your_backward"] == {"dx": "wrong", "dgamma": "fine", "dbeta": "fine"}
    assert r["dl/dx max difference"]["staged_vs_autograd"] < 1e-10
    assert r["ones_upstream_max_abs_dx"] < 1e-12
    assert "more than 1 value per channel" in r["single_sample_error"]


def test_lenet5_batchnorm_quick_and_resume(tmp_path, capsys):
    out = str(tmp_path)
    r = lenet5_batchnorm.main(["--quick", "--out", out])
    assert set(r) == {"no BN", "BN decay=0.99", "BN decay=0.9"}
    for h in r.values():
        assert len(h["train_loss"]) == 2 and np.isfinite(h["val_loss"]).all()
    assert r["BN decay=0.9"]["lag_mean"] and not r["no BN"]["lag_mean"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"]["no BN"]["test_acc"] == r["no BN"]["test_acc"]
    for f in ("loss.png", "accuracy.png", "running_stats.png", "summary.md"):
        assert os.path.getsize(tmp_path / f) > 0
    again = lenet5_batchnorm.main(["--quick", "--out", out])      # resumes: nothing left to train
    assert "resumed after epoch 2" in capsys.readouterr().out
    assert again["BN decay=0.9"]["test_acc"] == r["BN decay=0.9"]["test_acc"]
