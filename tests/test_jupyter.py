"""The lessons and hand-outs through a real Jupyter server's contents API, as
JupyterLab opens and saves them: with jupytext's contents manager (what the
README's ``pip install -e ".[notebook]"`` and ``jupytext-config
set-default-viewer python`` set up) and without it (plain Jupyter Notebook)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

pytest.importorskip("jupyter_server", reason="the Jupyter server tests need jupyter_server (pip install -e '.[test]')")
pytest.importorskip("jupytext", reason="the Jupyter server tests need jupytext (pip install -e '.[test]')")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON_NAMES = ["conditioning", "batchnorm_backward", "lenet5_batchnorm", "normalizers", "batch_size",
                "bn_placement", "deep_signal", "smoothness", "weight_init", "bn_regularization"]


def python_path():
    """This checkout first, then what the suite was given (the CuPy stand-in in CI's second pass)."""
    return os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``jupyter server`` on 127.0.0.1 with a token, serving ``root``; stopped by ``stop``."""

    def __init__(self, root, home, jupytext):
        self.port, self.token = free_port(), uuid.uuid4().hex
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"), PYTHONPATH=python_path())
        os.makedirs(env["JUPYTER_CONFIG_DIR"], exist_ok=True)
        if jupytext:    # the README's setting; it tells JupyterLab's front end to open .py files as notebooks
            subprocess.run([sys.executable, "-c", "from jupytext_config.__main__ import main; main()",
                            "set-default-viewer", "python"], env=env, check=True, capture_output=True)
        # jupytext's server extension swaps in its contents manager; plain Jupyter runs without it
        with open(os.path.join(env["JUPYTER_CONFIG_DIR"], "jupyter_server_config.json"), "w") as f:
            json.dump({"ServerApp": {"jpserver_extensions": {"jupyterlab_jupytext": jupytext}}}, f)
        self.log = open(home / "server.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while True:
            try:
                self.request("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"jupyter server did not start:\n{self.output()}")
                time.sleep(0.3)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                   headers={"Authorization": f"token {self.token}",
                                            "Content-Type": "application/json"})
        with urllib.request.urlopen(r, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def contents(self, path, **query):
        """GET /api/contents/<path>: (status, model or the error's message)."""
        q = "&".join(f"{k}={v}" for k, v in dict(query, content=1).items())
        try:
            return 200, self.request("GET", f"/api/contents/{path}?{q}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}").get("message")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder with the lessons' .py files, batchnorm_backward's quick hand-out and
    the homework's hand-out, written by the commands a teacher runs."""
    root = tmp_path_factory.mktemp("served")
    for name in LESSON_NAMES:
        shutil.copy(os.path.join(ROOT, "lessons", f"{name}.py"), root / f"{name}.py")
    env = dict(os.environ, PYTHONPATH=python_path(), MINIDL_PROGRESS="0")
    for command in (["lessons.handout", "--quick", "batchnorm_backward", "--out", str(root / "handouts")],
                    ["lessons.homework", "handout", "--out", str(root / "homework")]):
        subprocess.run([sys.executable, "-m", *command], env=env, check=True, capture_output=True, timeout=600,
                       cwd=root)
    return root


@pytest.fixture(scope="module")
def servers(served, tmp_path_factory):
    """servers(kind): the server of that kind ("jupytext" or "plain") on ``served``, started once."""
    started = {}

    def get(kind):
        if kind not in started:
            started[kind] = Server(served, tmp_path_factory.mktemp(kind), jupytext=kind == "jupytext")
        return started[kind]

    yield get
    for server in started.values():
        server.stop()


@pytest.mark.parametrize("kind", ["jupytext", "plain"])
@pytest.mark.parametrize("handout", ["handouts/batchnorm_backward.ipynb", "homework/homework.ipynb"])
def test_a_handout_opens_through_the_contents_api(servers, served, kind, handout):
    server = servers(kind)
    status, model = server.contents(handout)
    assert status == 200, f"{kind} Jupyter cannot open {handout}: HTTP {status}: {model}"
    with open(served / handout) as f:
        written = json.load(f)
    assert model["type"] == "notebook" and len(model["content"]["cells"]) == len(written["cells"])
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    # the lesson's .py opens as a notebook exactly where jupytext's contents manager serves it
    status, _ = server.contents("conditioning.py", type="notebook")
    assert (status == 200) == (kind == "jupytext"), f"{kind}: conditioning.py as a notebook: HTTP {status}"


@pytest.mark.parametrize("name", LESSON_NAMES)
def test_a_lesson_opened_and_saved_unchanged_stays_byte_identical(servers, served, name):
    """What JupyterLab does on open and save (no edits): GET the notebook model of
    the .py, PUT the same model back. Jupytext writes its version numbers into a
    header that lacks them, which dirtied the teacher's checkout at every class."""
    server = servers("jupytext")
    path = served / f"{name}.py"
    before = path.read_bytes()
    status, model = server.contents(f"{name}.py", type="notebook")
    assert status == 200, f"{name}.py does not open as a notebook: HTTP {status}: {model}"
    server.request("PUT", f"/api/contents/{name}.py", {"type": "notebook", "format": "json",
                                                        "content": model["content"]})
    after = path.read_bytes()
    assert after == before, f"saving {name}.py unchanged rewrote it:\n" + "\n".join(
        line for line in after.decode().splitlines()[:20] if line not in before.decode().splitlines())
