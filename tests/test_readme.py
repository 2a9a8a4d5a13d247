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
