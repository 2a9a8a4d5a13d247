"""The sandbox every submission runs in (lessons.homework.sandbox): it starts
wherever Python lives (/tmp included) or refuses, holds the whole submission to
its limits through control groups, reports a status only from what it observed,
and always cleans up. Each attack here once got through (#37).

Generous limits throughout: the machine these run on may be a loaded 2-core one."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest

from lessons.homework import sandbox
from lessons.homework.sandbox import (OUTPUT_LIMIT, RESULTS_LIMIT, SandboxUnavailable, remove_tree,
                                      run_untrusted)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = sandbox.sandbox_problem()
SANDBOXED = PROBLEM is None
needs_sandbox = pytest.mark.skipif(not SANDBOXED, reason=str(PROBLEM))
CONTROLLERS, MISSING = sandbox._group_parents()


def needs_group(controller):
    return pytest.mark.skipif(controller not in CONTROLLERS,
                              reason=f"no {controller} control group for this user: {'; '.join(MISSING)}")


def run(code, **kw):
    """``code`` run by Python in the sandbox (or, where it cannot start here, without it)."""
    kw = {"time_limit": 60, "sandbox": SANDBOXED, **kw}
    return run_untrusted([sys.executable, "-c", textwrap.dedent(code)], {}, **kw)


def processes_with(marker):
    """The pids whose command line holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Each run's work folder made in ``tmp_path``, so a test sees whether one is left behind."""
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    return tmp_path


# ---- fail closed: the sandbox starts wherever Python lives, or refuses -------------------
CHECKOUT_PROBE = '''
import importlib.util, os, sys, minidl
print("prefix", sys.prefix)
print("minidl", minidl.__file__)
print("lessons", importlib.util.find_spec("lessons"))
print("checkout visible", os.path.exists({checkout!r}))
print("uid", os.getuid())
'''


@needs_sandbox
def test_a_venv_and_a_checkout_under_tmp_run_sandboxed(tmp_path):
    """Python in a venv under /tmp, minidl and the grader in a checkout under /tmp:
    once bwrap's read-only /tmp hid them, the sandbox failed, and grading went on
    unsandboxed as root."""
    assert str(tmp_path).startswith("/tmp/"), "pytest's tmp_path lies under /tmp unless told otherwise"
    venv, checkout = tmp_path / "venv", tmp_path / "checkout"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    shutil.copytree(os.path.join(ROOT, "minidl"), checkout / "minidl")
    shutil.copytree(os.path.join(ROOT, "lessons"), checkout / "lessons")
    grader = textwrap.dedent(f'''
        import sys
        from lessons.homework import sandbox
        assert sandbox.__file__.startswith({str(checkout)!r}), sandbox.__file__
        r = sandbox.run_untrusted([sys.executable, "-c", {CHECKOUT_PROBE.format(checkout=str(checkout))!r}], {{}},
                                  time_limit=120)
        print(r.sandboxed, r.status)
        print(r.output)
    ''')
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    r = subprocess.run([str(venv / "bin" / "python"), "-c", grader], cwd=checkout, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "yes exited" in r.stdout, r.stdout
    assert f"prefix {venv}" in r.stdout and "minidl /packages/minidl/__init__.py" in r.stdout, r.stdout
    assert "lessons None" in r.stdout and "checkout visible False" in r.stdout, r.stdout


def _python_for_nobody():
    """A Python the user nobody can run and read all of (this one may live in root's home), or None."""
    readable = "import os, sys; os.stat(os.path.realpath(sys.executable)); os.listdir(sys.base_prefix)"
    for python in (sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"):
        if python and os.path.exists(python) and subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", readable],
                capture_output=True, timeout=120).returncode == 0:
            return python
    return None


@pytest.fixture
def nobody_tmp():
    """A folder under /tmp that belongs to the user nobody (pytest's tmp_path is root's alone)."""
    place = tempfile.mkdtemp(prefix="minidl-nobody-", dir="/tmp")
    os.chmod(place, 0o755)
    shutil.chown(place, 65534, 65534)
    yield pathlib.Path(place)
    remove_tree(place)


@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the grader as an ordinary user (as root, the test above "
                           "already runs it as one)")
def test_an_ordinary_user_grading_from_tmp_runs_sandboxed(nobody_tmp):
    """The grader as the user nobody, its venv and checkout under /tmp: sandboxed;
    without a control group it may write, it says which protection is missing."""
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python here that the user nobody may run")
    place = nobody_tmp
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    subprocess.run(as_nobody + [python, "-m", "venv", "--without-pip", str(place / "venv")], check=True,
                   timeout=300)
    checkout = place / "checkout"
    shutil.copytree(os.path.join(ROOT, "minidl"), checkout / "minidl")     # found, never imported, by the grader
    shutil.copy(os.path.join(ROOT, "lessons", "homework", "sandbox.py"), checkout / "sandbox.py")
    (place / "grades.csv").write_text("alice.py,14\n")
    subprocess.run(["chmod", "-R", "a+rX", str(checkout)], check=True)
    probe = ("import importlib.util, os; print('minidl', importlib.util.find_spec('minidl').origin); "
             "print('lessons', importlib.util.find_spec('lessons')); print('uid', os.getuid()); "
             f"print('checkout', os.path.exists({str(checkout)!r}), os.path.exists({str(place / 'grades.csv')!r}))")
    grader = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(checkout)!r})
        import sandbox                              # the sandbox alone: this Python may lack NumPy
        r = sandbox.run_untrusted([sys.executable, "-c", {probe!r}], {{}}, time_limit=120)
        print(r.sandboxed, r.status)
        print("protections", r.protections)
        print(r.output)
    ''')
    r = subprocess.run(as_nobody + [str(place / "venv" / "bin" / "python"), "-c", grader], cwd=str(place),
                       env={"PATH": os.environ["PATH"], "HOME": str(place)}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "yes exited" in r.stdout and "minidl /packages/minidl/__init__.py" in r.stdout, r.stdout
    assert "lessons None" in r.stdout and "checkout False False" in r.stdout and "uid 65534" in r.stdout, r.stdout
    memory = CONTROLLERS.get("memory")
    if memory is None or os.stat(memory[0]).st_uid != 65534:       # no memory group nobody may write to
        assert "protections memory limited per process" in r.stdout, r.stdout


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """A PATH with the system's tools but no bubblewrap, or a bubblewrap of the test's making."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "python3"):
        if shutil.which(tool):
            os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    sandbox.sandbox_problem.cache_clear()
    yield bin_dir
    sandbox.sandbox_problem.cache_clear()


def test_without_bubblewrap_run_untrusted_refuses_with_the_fix(fake_path):
    """Once a missing bwrap meant grading unsandboxed; now only the explicit opt-out does."""
    with pytest.raises(SandboxUnavailable, match="bubblewrap .bwrap. is not installed.*apt-get install bubblewrap"):
        run("print('ran')")
    r = run("print('ran')", sandbox=False)
    assert r.status == "exited" and r.output == "ran\n" and r.sandboxed.startswith("not sandboxed")


def test_a_bubblewrap_that_cannot_start_is_refused_with_its_reason(fake_path):
    """bwrap installed but unable to start (user namespaces off): refused, with bwrap's own words."""
    fake = fake_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable) as refused:
        run("print('ran')", sandbox=True)
    assert "setting up uid map: Permission denied" in str(refused.value)
    assert "user namespaces" in str(refused.value) and "--no-sandbox" in str(refused.value)


# ---- what the child sees ----------------------------------------------------------------
@needs_sandbox
def test_minidl_is_importable_and_the_grader_and_the_teacher_are_not_visible(tmp_path, monkeypatch):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "grades.csv").write_text("alice.py,14\n")
    monkeypatch.chdir(teacher)                       # grading started from the teacher's folder
    r = run_untrusted([sys.executable, "/submission/probe.py", "/submission/data.txt"],
                      {"probe.py": textwrap.dedent(f'''
                          import importlib.util, os, socket, sys
                          import minidl
                          print("minidl", minidl.__file__, minidl.Tensor.__name__)
                          print("lessons", importlib.util.find_spec("lessons"))
                          print("teacher", os.path.exists({str(teacher)!r}), os.path.exists({ROOT!r}))
                          print("data", open(sys.argv[1]).read())
                          print("cwd", os.getcwd(), "uid", os.getuid())
                          print("CapEff", open("/proc/self/status").read().split("CapEff:")[1].split()[0])
                          print("pid 1 is bwrap", open("/proc/1/comm").read().strip() == "bwrap")
                          try:
                              socket.create_connection(("127.0.0.1", 22), timeout=5)
                          except OSError as e:
                              print("network", type(e).__name__)
                          ''').encode(), "data.txt": b"given"}, time_limit=120)
    assert r.status == "exited" and r.returncode == 0 and r.sandboxed == "yes", r
    assert "minidl /packages/minidl/__init__.py Tensor" in r.output and "lessons None" in r.output, r.output
    assert "teacher False False" in r.output and "data given" in r.output, r.output
    assert "cwd /scratch" in r.output and "CapEff 0000000000000000" in r.output, r.output
    assert "pid 1 is bwrap True" in r.output and "network" in r.output, r.output
    if os.geteuid() == 0:
        assert "uid 65534" in r.output


@needs_sandbox
def test_nothing_outside_scratch_is_writable_and_scratch_is_a_folder_of_its_own():
    """The root was a writable RAM disk (1.8 GB hidden there once); /tmp, /dev/shm and
    the submission read-only; only the scratch folder takes files."""
    r = run('''
        import os
        for path in ("/x", "/tmp/x", "/dev/shm/x", "/usr/x", "/submission/x", "/packages/x", "/proc/x"):
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError:
                pass
        open("scratch.txt", "w").write("kept")
        print("scratch", open(os.path.join(os.environ["TMPDIR"], "scratch.txt")).read())
    ''')
    assert r.status == "exited" and "wrote" not in r.output and "scratch kept" in r.output, r.output


def test_stdin_goes_in_and_results_come_back_through_their_pipe():
    r = run('''
        import os, sys
        data = sys.stdin.buffer.read()
        os.write(int(os.environ["GRADER_RESULTS_FD"]), data[::-1])
        print("read", len(data))
    ''', stdin=b"abc" * 100_000)
    assert r.status == "exited" and r.returncode == 0 and r.output == "read 300000\n", r
    assert r.results == b"cba" * 100_000


def test_a_flood_of_output_and_of_results_is_cut_not_kept():
    r = run('''
        import os
        for _ in range(12):
            os.write(1, b"PASS " * (1 << 18))                                     # about 15 MB
        fd = int(os.environ["GRADER_RESULTS_FD"])
        for _ in range(66):
            os.write(fd, b"r" * (1 << 20))                                        # 66 MB
    ''')
    assert r.status == "exited", r
    assert len(r.output) < OUTPUT_LIMIT + 100 and "more bytes of output dropped" in r.output
    assert len(r.results) == RESULTS_LIMIT


# ---- the status: only what this process observed ----------------------------------------
@pytest.mark.parametrize("words", ["MemoryError", "Killed", "time limit", "memory limit"])
def test_the_status_never_comes_from_what_the_child_prints(words):
    """A submission that printed "MemoryError" and exited got `memory limit`."""
    r = run(f"import sys\nprint({words!r})\nsys.exit(1)\n", memory_limit=512)
    assert r.status == "exited" and r.returncode == 1, r


def test_the_time_limit_ends_a_loop_and_a_sleeper():
    for code in ("while True: pass", "import time; time.sleep(1000)"):
        r = run(code, time_limit=3)
        assert r.status == "time limit" and r.seconds < 30, (code, r)


# ---- limits on the whole submission -----------------------------------------------------
FORKS = '''
import os, time
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray(600 << 20)
        for offset in range(0, len(block), 4096):          # touch every page: 600 MB resident
            block[offset] = 1
        time.sleep(5)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("four children of 600 MB")
'''

# written through its descriptor, never mapped: no address space is used, only the memfd's pages
MEMFD = '''
import os
fd = os.memfd_create("hidden")
for _ in range(2400):
    os.write(fd, b"x" * (1 << 20))
print("2.4 GB in a memfd")
'''

SCRATCH_FILES = '''
for k in range(3):
    with open(f"hidden{k}", "wb") as f:
        for _ in range(800):
            f.write(b"x" * (1 << 20))
print("2.4 GB in files")
'''


@needs_group("memory")
@pytest.mark.parametrize("attack", ["four forked children", "a memfd", "files in scratch"])
def test_memory_over_all_processes_shared_memory_and_files_ends_as_memory_limit(attack):
    """Each got 2.4 GB under a 1024 MB limit, graded normally: the limit was per process."""
    code = {"four forked children": FORKS, "a memfd": MEMFD, "files in scratch": SCRATCH_FILES}[attack]
    r = run(code, memory_limit=1024)
    assert r.status == "memory limit", r
    assert "2.4 GB" not in r.output and "four children" not in r.output, r.output


def test_one_allocation_larger_than_the_whole_limit_fails_at_once_as_an_error():
    """Refused by the address-space cap before any page is touched (with or without a
    control group): the child sees MemoryError, its run is an error, never a silent pass."""
    size = 256 + sandbox.MAPPED_RESERVE + 64          # MB: beyond the cap where a group counts memory too
    r = run(f"block = bytearray({size} << 20)\nprint('allocated')", memory_limit=256)
    assert r.status == "exited" and r.returncode != 0, r
    assert "MemoryError" in r.output and "allocated" not in r.output, r.output


@needs_group("memory")
def test_address_space_mapped_and_never_touched_is_allowed_beyond_the_limit():
    """What libraries map without using (PyTorch on one thread: 600 MB mapped, 230 MB
    used) is no memory the group counts: within MAPPED_RESERVE it is allowed."""
    r = run("import mmap\nm = mmap.mmap(-1, 600 << 20)\nm[0] = 1\nprint('mapped')", memory_limit=256)
    assert r.status == "exited" and r.returncode == 0 and r.output == "mapped\n", r


def test_without_control_groups_the_closest_limits_hold_and_the_run_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox, "_group_parents", lambda: ({}, ["memory: not mounted", "pids: not mounted"]))
    r = run("block = bytearray(600 << 20)\nprint('allocated')", memory_limit=256)
    assert r.status == "exited" and "MemoryError" in r.output and "allocated" not in r.output, r
    assert r.protections.startswith("memory limited per process"), r.protections
    assert "memory: not mounted" in r.protections and "systemd-run --user --scope" in r.protections


@needs_group("pids")
def test_a_fork_bomb_ends_at_the_time_limit_within_its_process_cap(monkeypatch):
    """Once capped only by the time limit, and by nothing as root."""
    monkeypatch.setattr(sandbox, "PIDS_LIMIT", 64)
    marker = f"bomb-{uuid.uuid4().hex}"
    r = run(f'''
        import os
        "{marker}"
        while True:
            try:
                os.fork()
            except OSError:
                pass
    ''', time_limit=5)
    assert r.status == "time limit" and r.seconds < 60, r
    assert processes_with(marker) == []
    assert run("print('after')").output == "after\n"


def test_a_detached_daemon_neither_survives_nor_holds_the_run(private_tmp):
    """A grandchild in its own session, holding the output pipe: it hung the class run for
    the whole time limit, and lived on."""
    if not SANDBOXED and "pids" not in CONTROLLERS and "memory" not in CONTROLLERS:
        pytest.skip("neither the sandbox nor a control group here: a daemon can escape the process group")
    marker = f"daemon-{uuid.uuid4().hex}"
    r = run(f'''
        import os, time
        "{marker}"
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        print("parent leaves")
    ''')
    assert r.status == "exited" and r.output == "parent leaves\n" and r.seconds < 30, r
    assert processes_with(marker) == []
    assert list(private_tmp.iterdir()) == []


# ---- cleanup always succeeds ------------------------------------------------------------
DEEP_TREE = '''
import os
for _ in range(3000):
    os.mkdir("d")
    os.chdir("d")
open("f", "w").write("x")
os.mkdir("locked")
open("locked/f", "w").write("x")
os.chmod("locked", 0o500)
os.chmod(os.path.join(os.environ["TMPDIR"], "d"), 0o000)
print("built")
'''


@pytest.mark.parametrize("sandboxed", [True, False])
def test_a_3000_deep_tree_with_locked_folders_is_cleaned_up(sandboxed, private_tmp):
    """Such a tree crashed the cleanup (RecursionError), aborted the class and stayed behind."""
    if sandboxed and not SANDBOXED:
        pytest.skip(str(PROBLEM))
    r = run(DEEP_TREE, sandbox=sandboxed)
    assert r.status == "exited" and "built" in r.output, r
    assert list(private_tmp.iterdir()) == []


def test_remove_tree_takes_any_depth_any_mode_and_never_follows_a_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    top = tmp_path / "tree"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for depth in range(3000):                  # deeper than PATH_MAX: made one folder at a time
        os.mkdir("d", dir_fd=fd)
        os.symlink(str(outside), "link", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        if depth % 500 == 0:
            os.chmod(fd, 0o500)
        os.close(fd)
        fd = inner
    os.mkfifo("fifo", dir_fd=fd)
    os.chmod(fd, 0o000)
    os.close(fd)
    remove_tree(str(top))
    assert not top.exists() and (outside / "keep").read_text() == "kept"
    remove_tree(str(top))                      # gone already: nothing to do
