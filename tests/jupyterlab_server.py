"""A real JupyterLab for the browser tests: started on 127.0.0.1 at a free port
with its own token, settings and workspace in a temporary folder (the default
layout: the file browser open), stopped when the test ends."""
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path, cells, markdown=()):
    """A notebook of cells (code, but those whose index is in ``markdown``), no outputs."""
    code = lambda k, source: {"cell_type": "code", "id": f"cell{k}", "metadata": {}, "execution_count": None,
                              "outputs": [], "source": source}
    text = lambda k, source: {"cell_type": "markdown", "id": f"cell{k}", "metadata": {}, "source": source}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
        "cells": [(text if k in markdown else code)(k, source) for k, source in enumerate(cells)]}
    path.write_text(json.dumps(nb), encoding="utf-8")


@contextlib.contextmanager
def jupyterlab(folder, timeout=90):
    """Yields (url of the lab, token); its kernels import minidl from this checkout."""
    if shutil.which("jupyter-lab") is None and subprocess.run(
            [sys.executable, "-c", "import jupyterlab"], capture_output=True).returncode != 0:
        raise RuntimeError("jupyterlab is not installed")
    home = folder / "jupyter"
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no news or update check: a notification would cover the notebook (and ask the network)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    token, port = secrets.token_hex(16), free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               MPLBACKEND="agg")
    log = open(folder / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--ServerApp.port_retries=0"]
        + ["--allow-root"] * (hasattr(os, "geteuid") and os.geteuid() == 0),
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n"
                                   + (folder / "jupyterlab.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {timeout} s")
            time.sleep(0.3)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
