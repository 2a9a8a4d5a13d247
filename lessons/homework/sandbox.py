"""Every submission is untrusted code: each is graded in its own process, with a
CPU and wall-clock time limit and an address-space limit, and, where bubblewrap
(``bwrap``) is installed and can start here, inside it: no network, its own
process namespace, a read-only view of the system and Python, and nothing of the
teacher's files but the grader's own code: only the submission (read-only) and a
scratch folder (writable) are visible. The grader's process never imports a
submission; it reads back the report and a JSON result.

Inside bubblewrap the process holds no capabilities (``--cap-drop ALL``; as root
it also runs as ``nobody`` in its own user namespace), so it cannot remount what
it sees read-only; ``/tmp`` and ``/dev/shm`` are read-only, so memory cannot hide
in a RAM disk, and files it writes in its scratch folder are capped in size.

What the sandbox does not protect: the grade itself. The submission runs in the
same process as the grading (as in otter-grader and nbgrader), so code that sets
out to patch the grader, or to write its own result, could fake a full mark and
its feedback. The teacher's process accepts only a well-formed result (a known
status, a score within its maximum that agrees with the failed lines), so a forged
one cannot stop the grading of the others. The sandbox keeps the machine, the
other submissions and the teacher's files safe from it. A submission that forks
can hold the memory limit once per process until its time limit ends it.

:func:`grade_submission` is a plain function of its arguments (the code travels
as text), so a Dask worker on another machine runs it just as a local thread does.
"""
import concurrent.futures
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import minidl
import lessons

INSTALL_BWRAP = "install bubblewrap to sandbox each submission: apt-get install bubblewrap"
TIME_LIMIT, MEMORY_LIMIT = 60, 2048     # seconds, MB: a correct module grades in a few seconds and ~300 MB
STATUSES = ("graded", "error", "time limit", "memory limit")


def _code_roots():
    """The folders holding the packages ``minidl`` and ``lessons`` (what the child imports)."""
    return sorted({os.path.dirname(os.path.dirname(os.path.abspath(p.__file__))) for p in (minidl, lessons)})


def _python_dirs():
    """Python's installation: its prefixes, standard library and site-packages (the
    user's too), which the sandbox shows read-only. Not the rest of ``sys.path``:
    that holds the folder the grader was started from, the teacher's own, where
    the submissions and the gradebook may lie."""
    import site
    import sysconfig
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    dirs |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    dirs = {d for d in dirs if d and os.path.isdir(d)}
    dirs = sorted(os.path.realpath(d) for d in dirs)
    return [d for k, d in enumerate(dirs) if not any(d.startswith(o + os.sep) for o in dirs[:k])]


def bwrap_args(submission, scratch):
    """bubblewrap's command line: the system and Python read-only, the packages
    ``minidl`` and ``lessons`` read-only, the submission read-only at
    /submission/<name>, the scratch folder writable at /scratch; no network, its
    own process namespace, killed with its parent."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if os.geteuid() == 0:       # root keeps every capability in bwrap: run as nobody in a user namespace of its own
        args += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    # /tmp and /dev/shm are RAM disks: read-only, so no memory hides there beyond the address-space limit
    args += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
             "--remount-ro", "/tmp", "--remount-ro", "/dev"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime", "/etc/ssl/certs"):
        args += ["--ro-bind-try", etc, etc]           # shared libraries (BLAS via alternatives), time zone
    for folder in _python_dirs():
        args += ["--ro-bind", folder, folder]
    for root in _code_roots():
        for package in ("minidl", "lessons"):
            if os.path.isdir(os.path.join(root, package)):
                args += ["--ro-bind", os.path.join(root, package), os.path.join(root, package)]
    args += ["--ro-bind", submission, "/submission/" + os.path.basename(submission),
             "--bind", scratch, "/scratch", "--chdir", "/scratch"]
    return args


@functools.lru_cache(maxsize=None)
def sandbox_problem():
    """Why submissions cannot be sandboxed here (None when they can): bubblewrap is
    missing, or it cannot start (user namespaces restricted, as in some containers)."""
    if shutil.which("bwrap") is None:
        return "not sandboxed: bubblewrap (bwrap) is not installed; " + INSTALL_BWRAP
    with tempfile.TemporaryDirectory() as scratch:
        probe = os.path.join(scratch, "probe.py")
        with open(probe, "w") as f:
            f.write("import minidl, lessons.homework\n")
        os.mkdir(os.path.join(scratch, "scratch"))
        try:
            r = subprocess.run(bwrap_args(probe, os.path.join(scratch, "scratch"))
                               + [sys.executable, "/submission/probe.py"], env=_child_env(),
                               capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"not sandboxed: bubblewrap could not start ({e})"
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        return f"not sandboxed: bubblewrap is installed but cannot start here ({why})"
    return None


def _child_env(scratch="/scratch"):
    """A small environment: no teacher's variables, one BLAS thread (submissions run side by side)."""
    return {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(_code_roots()), "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPLCONFIGDIR": scratch, "MINIDL_PROGRESS": "0"}


def _limit(time_limit, memory_limit):
    """In the child, before it runs anything: its CPU time, its address space, and
    the size of any file it writes (the scratch folder is on disk)."""
    def apply():
        cpu = max(1, int(time_limit))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        memory = int(memory_limit) * 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (memory, memory))
    return apply


OUTPUT_LIMIT = 1 << 20     # bytes of a submission's output kept for its feedback; the rest is read and dropped


def _read_capped(stream, limit=OUTPUT_LIMIT):
    """Everything the child writes, keeping the first ``limit`` bytes: a flood of
    output costs the teacher's process no memory."""
    kept, dropped = bytearray(), 0
    for chunk in iter(lambda: stream.read(1 << 16), b""):
        room = limit - len(kept)
        kept += chunk[:room]
        dropped += max(0, len(chunk) - room)
    return bytes(kept) + (f"\n[{dropped} more bytes of output dropped]".encode() if dropped else b"")


def _accepted(raw, output):
    """The child's result as the teacher's process takes it: only a known status,
    whole-number scores with 0 <= score <= max_score, failed lines as short text,
    and a full mark only with no failed line. Anything else is an error, so no
    submission can stop the grading of the others. The report is what it printed."""
    try:
        given = json.loads(raw)
        status, score, top, failed = given["status"], given.get("score", 0), given.get("max_score"), given["failed"]
        assert status in STATUSES and isinstance(failed, list) and all(isinstance(f, str) for f in failed)
        assert type(score) is int and (top is None or (type(top) is int and 0 <= score <= top))
        assert not (failed and top is not None and score == top)
    except (ValueError, KeyError, TypeError, AssertionError):
        return dict(status="error", score=0, max_score=None, failed=[],
                    report=output + "\nThe grading process sent a result that is not a grade.")
    return dict(status=status, score=score, max_score=top, failed=[f[:200] for f in failed[:20]], report=output)


def grade_submission(name, code, target="BatchNorm2d", time_limit=TIME_LIMIT, memory_limit=MEMORY_LIMIT,
                     sandbox=True):
    """Grade one submission, ``code`` (Python source) saved as ``name``, in its own
    limited process (in bubblewrap where it can start, unless ``sandbox`` is
    False). Returns a dict: status (one of STATUSES), score, max_score, failed
    (lines), report (what ``check`` would print), sandboxed ("yes" or "not
    sandboxed: why"), seconds."""
    problem = sandbox_problem() if sandbox else "not sandboxed: --no-sandbox"
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="grade-") as work:
        submission = os.path.join(work, os.path.basename(name) if name.endswith(".py") else "submission.py")
        scratch = os.path.join(work, "scratch")
        os.mkdir(scratch)
        with open(submission, "w") as f:
            f.write(code)
        os.chmod(submission, 0o444)
        result_r, result_w = os.pipe()
        child = [sys.executable, "-m", "lessons.homework.child", "--result-fd", str(result_w)]
        if problem is None:
            command = bwrap_args(submission, scratch) + child + ["/submission/" + os.path.basename(submission),
                                                                   target]
            env = _child_env()
        else:
            command, env = child + [submission, target], _child_env(scratch)
        process = subprocess.Popen(command, env=env, cwd=scratch, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(result_w,),
                                   start_new_session=True, preexec_fn=_limit(time_limit, memory_limit))
        os.close(result_w)
        timed_out = False
        with concurrent.futures.ThreadPoolExecutor(2) as readers:
            output = readers.submit(_read_capped, process.stdout)
            result_text = readers.submit(_read_capped, os.fdopen(result_r, "rb"), 1 << 16)
            try:
                process.wait(timeout=time_limit)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)               # whatever it left running in its process group
                process.wait()
            output, raw = output.result().decode("utf-8", "replace"), result_text.result().decode("utf-8", "replace")
    result = _accepted(raw, output) if raw else dict(status="error", score=0, max_score=None, failed=[],
                                                     report=output)
    result["sandboxed"] = "yes" if problem is None else problem
    # killed for CPU time: SIGXCPU, or SIGKILL at the hard limit (bwrap reports a signal as 128 + its number)
    signalled = {-process.returncode if process.returncode < 0 else process.returncode - 128}
    cpu_killed = not raw and (signal.SIGXCPU in signalled or (signal.SIGKILL in signalled
                                                               and time.time() - start >= int(time_limit)))
    if timed_out or cpu_killed:
        result.update(status="time limit", score=0,
                      report=output + f"\nStopped: the time limit of {time_limit:g} s was reached.")
    elif not raw and ("MemoryError" in output or "Cannot allocate memory" in output or "bad_alloc" in output):
        result.update(status="memory limit", score=0,
                      report=output + f"\nStopped: the memory limit of {memory_limit:g} MB was reached.")
    elif not raw:
        result["report"] = output + f"\nThe grading process ended without a result (exit status {process.returncode})."
    if result["status"] != "graded":
        result["score"] = 0
    result["seconds"] = round(time.time() - start, 2)
    return result


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
