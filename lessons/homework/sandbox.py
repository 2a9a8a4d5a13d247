"""Every submission is untrusted code: :func:`run_untrusted` runs a command in
its own process, inside bubblewrap (``bwrap``) and a control group, and hands
back what the teacher's process observed (:class:`Run`). Where the sandbox
cannot start it refuses (:class:`SandboxUnavailable`); only ``sandbox=False``,
the teacher's explicit opt-out, runs a submission without it, and says so in
``Run.sandboxed``.

Inside bubblewrap the child sees the system and Python read-only (wherever they
live, /tmp included), the package ``minidl`` read-only at /packages, its files
read-only at /submission, and a writable scratch folder; nothing of the
grader's code (``lessons``), the teacher's folders or the folder grading was
started from. It has no network, its own process namespace and no capabilities
(as root it runs as ``nobody`` in a user namespace of its own). Its root,
/tmp and /dev are read-only; the scratch folder is a RAM disk of at most the
memory limit, mounted inside the sandbox, so what it writes there is charged to
its control group like any other memory and vanishes with it.

The limits hold for the whole submission, all its processes together, through
the kernel's control groups (cgroup v2's memory and pids controllers, or v1's,
whichever this machine mounts and this user may write): memory (shared memory
and the scratch folder's files included) and the process count, with the time
limit (wall clock, and CPU time per process) ending every process of the group.
Each process's address space is capped too (at the memory limit plus
MAPPED_RESERVE, what libraries map and never touch), so one allocation that
could never fit fails at once (the child sees MemoryError and its run ends as an
error) rather than filling memory up to the limit first.
Where no control group can be made, the closest limits stand in (address space
and file size per process, the process count per user) and ``Run.protections``
says which protection is missing. The status comes from what this process
observed (exit, signal, time, the control group's own count of out-of-memory
kills), never from what the child printed or wrote.
"""
import dataclasses
import functools
import importlib.util
import itertools
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

INSTALL_BWRAP = "install bubblewrap to sandbox each submission: apt-get install bubblewrap"
TIME_LIMIT, MEMORY_LIMIT = 60, 2048     # seconds, MB: a correct module grades in a few seconds and ~300 MB
# MB of address space a process may map beyond the memory limit where a control group counts its
# memory: what Python, NumPy and PyTorch map and never touch (PyTorch on one thread: 600 MB mapped, 230 used)
MAPPED_RESERVE = 1024
PIDS_LIMIT = 256                        # processes and threads of one submission: a fork bomb stops here
OUTPUT_LIMIT = 1 << 20                  # bytes of a submission's output kept; the rest is read and dropped
RESULTS_LIMIT = 64 << 20                # bytes of its results pipe kept
RUN_STATUSES = ("exited", "time limit", "memory limit", "killed")


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot start here; the message says why and what to do."""


@dataclasses.dataclass
class Run:
    """What the teacher's process observed of one untrusted run."""
    status: str             # one of RUN_STATUSES
    returncode: int | None  # the exit status, or minus the signal that ended it
    output: str             # stdout and stderr, the first OUTPUT_LIMIT bytes
    results: bytes          # what it wrote to its results pipe, the first RESULTS_LIMIT bytes
    sandboxed: str          # "yes", or "not sandboxed: <why>"
    protections: str        # "", or which protection this machine lacks
    seconds: float


# ---- what the sandbox shows ---------------------------------------------------------------
def _python_dirs():
    """Python's installation: its prefixes, standard library and site-packages (the
    user's too), which the sandbox shows read-only. Not the rest of ``sys.path``:
    that holds the folder the grader was started from, the teacher's own, where
    the submissions and the gradebook may lie."""
    import site
    import sysconfig
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
            os.path.dirname(os.path.abspath(sys.executable))}
    dirs |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    dirs = sorted({os.path.realpath(d) for d in dirs if d and os.path.isdir(d)})
    return [d for k, d in enumerate(dirs) if not any(d.startswith(o + os.sep) for o in dirs[:k])]


def _package_dir(name):
    """The folder of package ``name`` as this process would import it (without importing it), or None."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def bwrap_args(files_dir, memory_limit=MEMORY_LIMIT, packages=("minidl",)):
    """bubblewrap's command line. Mounts are made in order on a fresh root: /tmp
    stays writable until every folder under it (a venv, a checkout) is bound, and
    the root, /tmp and /dev turn read-only last. ``packages`` are shown read-only in
    /packages (the child's PYTHONPATH); the folder ``files_dir`` read-only at
    /submission; /scratch is a RAM disk of ``memory_limit`` MB, the child's working
    folder, whose pages count in its control group."""
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if os.geteuid() == 0:       # root keeps every capability in bwrap: run as nobody in a user namespace of its own
        args += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    args += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime", "/etc/ssl/certs"):
        args += ["--ro-bind-try", etc, etc]           # shared libraries (BLAS via alternatives), time zone
    python = _python_dirs()
    for folder in python:
        args += ["--ro-bind", folder, folder]
    hidden = _package_dir("lessons")
    if hidden and any(hidden.startswith(folder + os.sep) for folder in python):
        args += ["--tmpfs", hidden, "--remount-ro", hidden]    # the grader installed beside Python: not shown
    for name in packages:
        if _package_dir(name):
            args += ["--ro-bind", _package_dir(name), "/packages/" + name]
    args += ["--ro-bind", files_dir, "/submission",
             "--size", str(int(memory_limit) << 20), "--perms", "0700", "--tmpfs", "/scratch", "--chdir", "/scratch",
             "--remount-ro", "/tmp", "--remount-ro", "/dev", "--remount-ro", "/"]
    return args


def _child_env(scratch, packages, results_fd):
    """A small environment: no teacher's variables, one BLAS thread (submissions run side by side)."""
    return {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
            "PYTHONPATH": packages, "PYTHONDONTWRITEBYTECODE": "1", "GRADER_RESULTS_FD": str(results_fd),
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPLCONFIGDIR": scratch, "MINIDL_PROGRESS": "0"}


@functools.lru_cache(maxsize=None)
def sandbox_problem():
    """Why submissions cannot be sandboxed here (None when they can): bubblewrap is
    missing, or it cannot start (user namespaces restricted, as in some containers)."""
    if shutil.which("bwrap") is None:
        return "not sandboxed: bubblewrap (bwrap) is not installed; " + INSTALL_BWRAP
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('minidl') is None)"
    try:
        run = _run([sys.executable, "-c", probe], {}, b"", 60, MEMORY_LIMIT, ("minidl",), True)
    except OSError as e:
        return f"not sandboxed: bubblewrap could not start ({e})"
    if run.status == "exited" and run.returncode == 1 and not run.output:
        return "not sandboxed: this Python cannot import minidl; install it (pip install -e .) or put it on PYTHONPATH"
    if run.status != "exited" or run.returncode != 0:
        why = (run.output.strip().splitlines() or [f"{run.status}, exit status {run.returncode}"])[-1]
        if any(words in why for words in ("namespace", "uid map", "Operation not permitted", "No permissions")):
            fix = ("bubblewrap needs unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 "
                   "(Debian), kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 24.04), or run as root")
        else:
            fix = (f"the sandbox shows Python's own folders ({', '.join(_python_dirs())}) read-only: this user "
                   f"must be able to read them, and {sys.executable} must lie in one")
        return f"not sandboxed: bubblewrap is installed but cannot start here ({why}); {fix}; or opt out: --no-sandbox"
    return None


# ---- control groups -----------------------------------------------------------------------
CONTROLLERS = ("memory", "pids", "cpuacct")     # cpuacct: the CPU time of the whole group, for its status


def _mounts():
    """{controller: (hierarchy's mount point, "v1" or "v2", its root)} for CONTROLLERS, where
    mounted. cgroup v2 counts CPU time in every group (cpu.stat), so it serves as cpuacct."""
    found = {}
    try:
        lines = open("/proc/self/mountinfo").read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        fstype, options = fields[fields.index("-") + 1], fields[-1].split(",")
        if fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in options:
                    found.setdefault(controller, (fields[4], "v1", fields[3]))
        elif fstype == "cgroup2":
            try:
                controllers = open(os.path.join(fields[4], "cgroup.controllers")).read().split()
            except OSError:
                continue
            for controller in CONTROLLERS:
                if controller in controllers + ["cpuacct"]:
                    found.setdefault(controller, (fields[4], "v2", fields[3]))
    return found


def _own_group(version, controller, mount_root):
    """The path of this process's own group in the hierarchy of ``controller``."""
    for line in open("/proc/self/cgroup").read().splitlines():
        number, controllers, path = line.split(":", 2)
        if (version == "v2" and number == "0") or (version == "v1" and controller in controllers.split(",")):
            if mount_root != "/" and path.startswith(mount_root):
                path = path[len(mount_root):]
            return path
    return None


@functools.lru_cache(maxsize=None)
def _group_parents():
    """{controller: (folder under which this process may make groups, version)},
    and the lines saying which controller is missing and why."""
    parents, missing = {}, []
    mounts = _mounts()
    # read before any move: _enable may move this process into a leaf of its own group
    folders = {controller: os.path.join(mount, (_own_group(version, controller, root) or "/").lstrip("/"))
               for controller, (mount, version, root) in mounts.items()}
    for controller in CONTROLLERS:
        if controller not in mounts:
            missing.append(f"no {controller} control group is mounted")
            continue
        version, folder = mounts[controller][1], folders[controller]
        if version == "v2" and controller != "cpuacct":
            try:
                _enable(folder, controller)
            except OSError as e:
                missing.append(f"{controller}: cannot be enabled in {folder} ({e.strerror})")
                continue
        if not os.access(folder, os.W_OK):
            missing.append(f"{controller}: {folder} is not writable by this user")
            continue
        parents[controller] = (folder, version)
    return parents, [line for line in missing if "cpuacct" not in line]     # CPU time is also in the wait status


def _enable(folder, controller):
    """Let the groups made under the v2 group ``folder`` use ``controller``. A group
    that holds processes cannot hand controllers down (cgroup v2's rule), so where
    this process is alone in its own group (a delegated scope: systemd-run --user
    --scope -p Delegate=yes) it first moves itself into a leaf beside the runs'."""
    if controller in _read(folder, "cgroup.subtree_control").split():
        return
    try:
        _write(folder, "cgroup.subtree_control", "+" + controller)
    except OSError:
        if _read(folder, "cgroup.procs").split() != [str(os.getpid())]:
            raise
        leaf = os.path.join(folder, "minidl-grader")
        os.makedirs(leaf, exist_ok=True)
        _write(leaf, "cgroup.procs", 0)
        _write(folder, "cgroup.subtree_control", "+" + controller)


_names = itertools.count()


class Group:
    """The control groups of one run (one per hierarchy holding a controller):
    made with their limits before the child starts; :meth:`close` kills every
    process in them, reads what they counted, and removes them."""

    def __init__(self, memory_limit, pids_limit):
        parents, self.missing = _group_parents()
        self.folders, self.version = {}, {}
        self.oom_kills, self.cpu_seconds = 0, None       # what close() read
        self.oom_event = None         # readable once the kernel killed a process for the memory limit (v1)
        name = f"minidl-run-{os.getpid()}-{next(_names)}"
        memory = int(memory_limit) << 20
        try:
            for controller, (parent, version) in parents.items():
                folder = os.path.join(parent, name)
                if folder not in self.folders.values():
                    os.mkdir(folder)
                self.folders[controller], self.version[controller] = folder, version
                if controller == "memory" and version == "v1":
                    _write(folder, "memory.limit_in_bytes", memory)
                    _write(folder, "memory.memsw.limit_in_bytes", memory, optional=True)   # swap counted too
                    self.oom_event = _oom_eventfd(folder)    # v1 kills one process: the run ends it all
                elif controller == "memory":
                    _write(folder, "memory.max", memory)
                    _write(folder, "memory.swap.max", 0, optional=True)
                    _write(folder, "memory.oom.group", 1, optional=True)     # one kill ends the submission
                elif controller == "pids":
                    _write(folder, "pids.max", pids_limit)
        except OSError:
            self.close()
            raise
        self.controllers = set(self.folders)
    def procs_files(self):
        return sorted({os.path.join(folder, "cgroup.procs") for folder in self.folders.values()})

    def _read_counts(self):
        memory, cpu = self.folders.get("memory"), self.folders.get("cpuacct")
        if memory is not None:
            events = "memory.oom_control" if self.version["memory"] == "v1" else "memory.events"
            counts = dict(line.split() for line in _read(memory, events).splitlines())
            self.oom_kills = max(self.oom_kills, int(counts.get("oom_kill", 0)) + int(counts.get("oom_group_kill", 0)))
        if cpu is not None and self.version["cpuacct"] == "v1":
            self.cpu_seconds = int(_read(cpu, "cpuacct.usage") or 0) / 1e9
        elif cpu is not None:
            counts = dict(line.split() for line in _read(cpu, "cpu.stat").splitlines())
            self.cpu_seconds = int(counts.get("usage_usec", 0)) / 1e6

    def close(self, patience=5.0):
        """Kill every process in the groups (a daemon the child left included: the
        groups' own lists, not a process group), read their counts, remove them."""
        end = time.monotonic() + patience
        for folder in set(self.folders.values()):
            _write(folder, "cgroup.kill", 1, optional=True)       # cgroup v2 since Linux 5.14: all at once
        while self.folders:
            pids = {int(p) for procs in self.procs_files() for p in _read(procs).split()}
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                self._read_counts()
                for controller, folder in sorted(self.folders.items(), key=lambda item: item[1], reverse=True):
                    try:
                        os.rmdir(folder)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        continue                # its last processes are still exiting
                    del self.folders[controller]
            if time.monotonic() > end:
                break
            time.sleep(0.01)
        if self.oom_event is not None and not self.folders:
            os.close(self.oom_event)
            self.oom_event = None


def _oom_eventfd(folder):
    """An eventfd the kernel signals at each out-of-memory event of the v1 memory
    group ``folder`` (cgroup.event_control), or None where it cannot."""
    event = os.eventfd(0, os.EFD_CLOEXEC)
    control = os.open(os.path.join(folder, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _write(folder, "cgroup.event_control", f"{event} {control}")
    except OSError:
        os.close(event)
        return None
    finally:
        os.close(control)
    return event


def _write(folder, name, value, optional=False):
    try:
        with open(os.path.join(folder, name), "w") as f:
            f.write(str(value))
    except OSError:
        if not optional:
            raise


def _read(*path):
    try:
        with open(os.path.join(*path)) as f:
            return f.read()
    except OSError:
        return ""


def _start_script(group, time_limit, memory_limit, sandboxed):
    """The shell line the child starts under: it joins its control groups and sets
    its limits, then becomes the command (no Python code runs between fork and exec,
    so the child can be started from any thread)."""
    lines = [f"echo 0 > {shlex.quote(procs)} || exit 125" for procs in (group.procs_files() if group else ())]
    # an allocation that could never fit fails at once (MemoryError, an error row) instead of first
    # filling memory up to the limit; where a control group counts memory, the address space keeps
    # MAPPED_RESERVE more for what libraries map and never touch
    counted = group is not None and "memory" in group.controllers
    address_space = int(memory_limit) + (MAPPED_RESERVE if counted else 0)
    limits = [f"ulimit -t {_cpu_limit(time_limit)}", f"ulimit -v {address_space * 1024}"]
    if group is None or "memory" not in group.controllers or not sandboxed:
        limits.append(f"ulimit -f {int(memory_limit) * 2048}")     # a file on disk, or in RAM no group counts
    if (group is None or "pids" not in group.controllers) and os.geteuid() != 0:
        limits.append(f"ulimit -p {PIDS_LIMIT + _user_processes()}")   # counted over all this user's processes
    return "; ".join(lines + [" && ".join(limits) + " || exit 125", 'exec "$@"'])


def _cpu_limit(time_limit):
    """RLIMIT_CPU of each process: whole seconds, at least one."""
    return max(1, int(-(-time_limit // 1)))


def _user_processes():
    uid = os.getuid()
    count = 0
    for pid in os.listdir("/proc"):
        try:
            count += pid.isdigit() and os.stat("/proc/" + pid).st_uid == uid
        except OSError:
            pass
    return count


def _protections(group, why=None):
    """Empty where the run had every protection; else which it lacked, and why."""
    controllers = group.controllers if group is not None else set()
    missing = []
    if "memory" not in controllers:
        missing.append("memory limited per process (address space), not over the whole submission, and its "
                       "status not observed")
    if "pids" not in controllers:
        missing.append("process count limited per user" if os.geteuid() != 0 else "no process count limit")
    if not missing:
        return ""
    why = why or "; ".join(group.missing)
    return ("; ".join(missing) + f" (no control group: {why}; run the grader as root, or in a delegated group: "
            "systemd-run --user --scope -p Delegate=yes)")


# ---- one run ----------------------------------------------------------------------------
def run_untrusted(argv, files, stdin=b"", time_limit=TIME_LIMIT, memory_limit=MEMORY_LIMIT, sandbox=True):
    """Run ``argv`` on ``files`` ({file name: bytes}, read-only in /submission/)
    in the sandbox, feeding it ``stdin``; the :class:`Run`. The child's working
    folder is a writable scratch folder; the number of the file descriptor of its
    results pipe is in its environment variable GRADER_RESULTS_FD. Raises
    :class:`SandboxUnavailable` where the sandbox cannot start, unless
    ``sandbox`` is False (then the child runs as this user, with its files and
    scratch folder in a temporary folder, and ``Run.sandboxed`` says so)."""
    if sandbox:
        problem = sandbox_problem()
        if problem is not None:
            raise SandboxUnavailable(problem)
    return _run(argv, files, stdin, time_limit, memory_limit, ("minidl",), sandbox)


def _run(argv, files, stdin, time_limit, memory_limit, packages, sandbox):
    start = time.monotonic()
    work = tempfile.mkdtemp(prefix="minidl-run-")
    group = None
    try:
        files_dir, scratch, package_dir = (os.path.join(work, d) for d in ("submission", "scratch", "packages"))
        for folder in (files_dir, scratch, package_dir):
            os.mkdir(folder)
        for name, data in files.items():
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise ValueError(f"run_untrusted: a file name must be a plain name, got {name!r}")
            path = os.path.join(files_dir, name)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o444)
        try:
            group = Group(memory_limit, PIDS_LIMIT)
        except OSError as e:
            group, why = None, f"it could not be made ({e})"
        else:
            why = None
        results_r, results_w = os.pipe()
        if sandbox:
            command = bwrap_args(files_dir, memory_limit, packages) + list(argv)
            env = _child_env("/scratch", "/packages", results_w)
        else:
            for name in filter(_package_dir, packages):
                os.symlink(_package_dir(name), os.path.join(package_dir, name))
            command = [files_dir + a[len("/submission"):] if a.startswith("/submission/") else a for a in argv]
            env = _child_env(scratch, package_dir, results_w)
        script = _start_script(group, time_limit, memory_limit, sandbox)
        try:
            process = subprocess.Popen(["/bin/sh", "-c", script, "sh"] + command, env=env, cwd=scratch,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       pass_fds=(results_w,), start_new_session=True)
        except BaseException:
            os.close(results_r)
            raise
        finally:
            os.close(results_w)
        observed = _watch(process, results_r, stdin, time_limit, group)
    finally:
        if group is not None:
            group.close()
        remove_tree(work)
    timed_out, returncode, cpu, output, results = observed
    if group is not None and group.cpu_seconds is not None:
        cpu = group.cpu_seconds                 # every process of the run, not only those waited for
    if sandbox and returncode is not None and returncode > 128:
        returncode = 128 - returncode           # bwrap reports a signal as 128 + its number
    if group is not None and group.oom_kills:
        status = "memory limit"
    elif timed_out or cpu >= _cpu_limit(time_limit) - 0.01:
        status = "time limit"
    elif returncode is not None and returncode < 0:
        status = "killed"
    else:
        status = "exited"
    protections = _protections(group, why)
    return Run(status=status, returncode=returncode, output=output, results=results,
               sandboxed="yes" if sandbox else "not sandboxed: run without the sandbox (--no-sandbox)",
               protections=protections, seconds=round(time.monotonic() - start, 3))


def _watch(process, results_r, stdin, time_limit, group):
    """Feed stdin, read output and results (each capped) until the child ends or
    the time limit passes, then end every process of the group. (timed out,
    return code, CPU seconds of the child and every descendant it waited for,
    output text, results bytes)."""
    deadline = time.monotonic() + time_limit
    out_fd = process.stdout.fileno()
    kept = {out_fd: bytearray(), results_r: bytearray()}
    caps = {out_fd: OUTPUT_LIMIT, results_r: RESULTS_LIMIT}
    dropped = {fd: 0 for fd in kept}
    feed = process.stdin.fileno()
    os.set_blocking(feed, False)
    pending = memoryview(stdin)
    if not pending:
        process.stdin.close()
    pidfd = os.pidfd_open(process.pid)
    # the run ends when the child does, or at the first process killed for memory
    ends = [pidfd] + ([group.oom_event] if group is not None and group.oom_event is not None else [])
    timed_out, status, usage = False, None, None
    try:
        open_fds = set(kept)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            writers = [feed] if pending else []
            ready, writable = _ready(list(open_fds) + ends, writers, left)
            if writable:
                try:
                    pending = pending[os.write(feed, pending[:1 << 16]):]
                except BrokenPipeError:
                    pending = pending[:0]
                if not pending:
                    process.stdin.close()
            for fd in ready & open_fds:
                if not _read_into(fd, kept[fd], caps[fd], dropped):
                    open_fds.discard(fd)
            if group is not None and group.oom_event in ready:
                group.oom_kills += 1           # the kernel's out-of-memory event, seen before its kill
            if ready & set(ends):
                break
        if not process.stdin.closed:
            process.stdin.close()
        # its process group first (bubblewrap's, whose pid namespace dies with it): where no controller
        # could be made, the group below holds no process and this is all that ends the run
        _kill_session(process)
        if group is not None:
            group.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        # what is still buffered in the pipes; a writer that escaped the group cannot hold them open past a second
        end = time.monotonic() + 1.0
        while open_fds and time.monotonic() < end:
            ready, _ = _ready(list(open_fds), [], end - time.monotonic())
            for fd in ready:
                if not _read_into(fd, kept[fd], caps[fd], dropped):
                    open_fds.discard(fd)
    finally:
        os.close(pidfd)
        os.close(results_r)
        process.stdout.close()
        if process.returncode is None:
            _kill_session(process)
            process.wait()
    output = bytes(kept[out_fd])
    if dropped[out_fd]:
        output += f"\n[{dropped[out_fd]} more bytes of output dropped]".encode()
    cpu = usage.ru_utime + usage.ru_stime if usage else 0.0
    return timed_out, process.returncode, cpu, output.decode("utf-8", "replace"), bytes(kept[results_r])


def _ready(readers, writers, timeout):
    """Which of ``readers`` can be read (or hit end of file) and which of ``writers``
    written, waiting at most ``timeout`` seconds (poll, not select: any descriptor number)."""
    poller = select.poll()
    for fd in readers:
        poller.register(fd, select.POLLIN)
    for fd in writers:
        poller.register(fd, select.POLLOUT)
    events = poller.poll(max(0, int(timeout * 1000) + 1))
    return {fd for fd, _ in events if fd in readers}, {fd for fd, _ in events if fd in writers}


def _read_into(fd, buffer, cap, dropped):
    """Read what ``fd`` holds into ``buffer`` up to ``cap`` bytes, counting the rest
    as dropped; False at end of file."""
    chunk = os.read(fd, 1 << 16)
    if not chunk:
        return False
    room = cap - len(buffer)
    buffer += chunk[:max(0, room)]
    dropped[fd] += max(0, len(chunk) - max(0, room))
    return True


def _kill_session(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def remove_tree(path):
    """Remove ``path`` and everything under it, however deep and whatever its modes:
    iteratively (no recursion limit), one directory file descriptor at a time (no
    path-length limit, no more than two descriptors open), each directory made
    writable before it is emptied; symbolic links are removed, never followed."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    os.chmod(path, 0o700)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(path, flags)
    stack = [(None, _empty_files(fd))]          # (name in its parent, its subdirectories left to remove)
    try:
        while stack:
            name, subdirs = stack[-1]
            child = next(subdirs, None)
            if child is not None:
                os.chmod(child, 0o700, dir_fd=fd)
                inner = os.open(child, flags, dir_fd=fd)
                os.close(fd)
                fd = inner
                stack.append((child, _empty_files(fd)))
                continue
            stack.pop()
            if stack:
                parent = os.open("..", flags, dir_fd=fd)
                os.close(fd)
                fd = parent
                os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _empty_files(fd):
    """Unlink every entry of the directory ``fd`` that is not a directory; an iterator over the rest."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return iter(subdirs)
