"""The README's usage example runs as written."""
import os
import re


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    code = re.search(r"## Using it\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["x"].grad is not None and namespace["bn"].decay == 0.9
    assert (tmp_path / "graph.dot").exists()
