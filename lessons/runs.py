"""A lesson's independent runs: where they execute (here, one per core in forked
worker processes, or on a Dask cluster), their progress, and the store that keeps
finished runs in ``<out>/runs.json`` with the identity of the run that made them,
so an interrupted lesson resumes and a changed setting is refused by name."""
import contextlib
import json
import os
import sys
import threading
import warnings

import minidl as md
from lessons.chapter import LiveText, write_json


class ResumeError(SystemExit):
    """A checkpoint in the output folder was made by a different run."""


def run_identity(**settings):
    """What a checkpoint records about the run that made it: the settings that
    change training, and the minidl version, as JSON will read them back (a
    tuple becomes a list), so a resumed run compares equal to the one it saved."""
    return json.loads(json.dumps(dict(settings, minidl=md.__version__)))


def check_resume(path, saved, wanted):
    """Refuse to resume ``path`` when the run that saved it (``saved``, the JSON
    string stored in the checkpoint, None if it stored none) differs from this
    one (``wanted``), naming every difference."""
    saved = {} if saved is None else (json.loads(str(saved)) or {})
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {wanted.get(k)!r}"
             for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diffs:
        raise ResumeError(
            f"{path} was made by a different run, so resuming it would report its numbers as "
            "this run's:\n  " + "\n  ".join(diffs) +
            "\nStart afresh with --fresh (overwrites it), or choose another folder with --out.")


def default_workers():
    """How many runs go at once by default: the cores this process may use
    (``os.sched_getaffinity`` where it exists), 1 on the CuPy backend (one GPU)."""
    if md.get_backend() == "cupy":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Every run multiplies with one BLAS thread, however many runs share the machine:
# OpenBLAS's results change in their last bits with its thread count (measured:
# a LeNet-5 run's final loss 1.0327963 on 1 thread, 1.0327965 on 2), and short
# runs amplify that. One thread costs a run nothing measurable here: minidl's
# products are too small to gain from a second thread, and the cores go to runs.
BLAS_THREADS_PER_RUN = 1
# A worker process (or a cluster's) gives minidl's ops one thread too
# (md.set_num_threads): the workers already fill the cores. Runs one after
# another here keep every thread. Either way the numbers are the same, to the
# last bit: minidl's results do not depend on its thread count.
THREADS_PER_WORKER = 1


def _start_worker(blas_threads):
    """In each worker process: its share of the BLAS threads, and no progress bars
    (the parent shows one line per run)."""
    global _limits
    from threadpoolctl import threadpool_limits
    os.environ["MINIDL_PROGRESS"] = "0"
    # a forked worker must not write through the parent's streams (a notebook kernel's
    # are sockets served by threads the child does not have): what it has to say, it returns
    sys.stdout = sys.stderr = open(os.devnull, "w")
    _limits = threadpool_limits(blas_threads)       # kept alive for the worker's life
    md.set_num_threads(THREADS_PER_WORKER)


_FORKED_RUNS = {}   # the runs a forked pool's workers find by key (a lesson's functions need no pickling)


def _run_forked(key, blas_threads):
    function, args = _FORKED_RUNS[key]
    return _run_one(function, args, blas_threads, THREADS_PER_WORKER)


# One run at a time in a process: minidl's random generator belongs to the process
# (as PyTorch's does), so two runs seeding and drawing from it in two threads of one
# process (a Dask worker's, or a thread pool's) would interleave their draws and
# change each other's numbers. Measured on a Dask worker with two threads: without
# this, bn_placement's quick run gave another test accuracy for one seed in fourteen.
_ONE_RUN_AT_A_TIME = threading.Lock()


def _run_one(function, args, blas_threads, threads=None):
    """One run where it executes: alone in its process, with a fixed number of BLAS
    threads, so its numbers do not depend on how many runs share the machine, and
    ``threads`` for minidl's ops (None: as they are)."""
    from threadpoolctl import threadpool_limits
    with _ONE_RUN_AT_A_TIME, threadpool_limits(blas_threads):
        before = md.get_num_threads()
        md.set_num_threads(threads or before)
        try:
            return function(*args)
        finally:
            md.set_num_threads(before)


def _note(error, text):
    """Say where an exception came from (its notes print under the traceback; Python 3.11+)."""
    if hasattr(error, "add_note"):
        error.add_note(text)


class RunsProgress:
    """One line per run in progress and a count of finished runs, on a ``LiveText``."""

    def __init__(self, total, desc):
        self.total, self.desc, self.finished, self.running = total, desc or "runs", 0, {}
        self.text = LiveText()

    def update(self):
        import time
        now = time.time()
        self.text.write([f"{self.desc}: {self.finished}/{self.total} finished"] + [
            f"  running {key} ({now - t0:.0f} s)" for key, t0 in self.running.items()])

    def start(self, key):
        import time
        self.running[key] = time.time()
        self.update()

    def done(self, key):
        self.running.pop(key, None)
        self.finished += 1
        self.update()

    def close(self):
        self.text.close()


def run_all(runs, store, workers=None, scheduler=None, executor=None, desc=None):
    """Run every one of ``runs``, a dict {key: (function, args)}, that ``store``
    (a RunStore, or any dict) does not hold yet, and store each result under its
    key as it finishes. ``function(*args)`` trains one model and returns its
    result; it seeds itself from its arguments, so a run's numbers do not depend
    on the number of workers or the order runs finish.

    ``workers=1`` runs them here, one after another (None: ``default_workers()``). More runs them in that many
    worker processes of the standard library's pool (forked: they share this
    process's data), each run with one BLAS thread (``BLAS_THREADS_PER_RUN``) and
    one thread for minidl's ops (``THREADS_PER_WORKER``). ``executor``,
    any ``concurrent.futures.Executor`` (a thread pool, or a cluster's, such as
    Dask's ``Client(...).get_executor()``), is used instead of the local pool;
    ``scheduler``, a Dask scheduler's address, uses that cluster's executor (each
    run's function and data travel to a worker by cloudpickle).
    An exception in a run stops everything: it is raised here, noting the run's
    key and the worker's traceback;
    Ctrl-C stops the workers, and the runs finished so far stay stored."""
    import concurrent.futures as cf
    import multiprocessing
    import traceback
    if scheduler is not None:
        if executor is not None:
            raise ValueError("run_all: give an executor or a scheduler address, not both")
        with cluster_executor(scheduler) as executor:
            return run_all(runs, store, workers, executor=executor, desc=desc)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"run_all: workers must be >= 1, got {workers}")
    if executor is None and workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        print(f"{desc or 'run_all'}: this system cannot fork worker processes (Windows): running the runs "
              "one after another; pass executor= to use a pool of your own")
        workers = 1
    todo = [key for key in runs if key not in store]
    progress_line = RunsProgress(len(runs), desc)
    progress_line.finished = len(runs) - len(todo)
    if executor is None and workers <= 1:
        try:
            for key in todo:
                function, args = runs[key]
                progress_line.start(key)
                try:
                    store[key] = _run_one(function, args, BLAS_THREADS_PER_RUN)
                except BaseException as error:
                    _note(error, f"in run {key!r} of {desc or 'run_all'}")
                    raise
                progress_line.done(key)
        finally:
            progress_line.close()
        return store
    threads = BLAS_THREADS_PER_RUN
    own = executor is None
    if own:
        _FORKED_RUNS.clear()
        _FORKED_RUNS.update(runs)              # before the fork: each worker inherits it
        # fork: the workers share this process's data and the lesson's functions, even a
        # notebook's; they only compute, so the parent's threads they lack are never needed
        executor = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                          initializer=_start_worker, initargs=(threads,))
    futures, queued = {}, list(todo)        # a pool starts its tasks in the order they were submitted
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            for key in todo:
                function, args = runs[key]
                futures[executor.submit(_run_forked, key, threads) if own else
                        executor.submit(_run_one, function, args, threads, THREADS_PER_WORKER)] = key
        for key in queued[:workers]:
            progress_line.start(key)
        del queued[:workers]
        for future in cf.as_completed(futures):
            key = futures[future]
            error = future.exception()
            if error is not None:              # the run's own exception, with its key and the worker's traceback
                _note(error, f"in run {key!r} of {desc or 'run_all'}; in its worker:\n"
                             + "".join(traceback.format_exception(error)).rstrip())
                raise error
            store[key] = future.result()
            progress_line.done(key)
            if queued:
                progress_line.start(queued.pop(0))
    except BaseException as stop:
        for future in futures:
            future.cancel()
        if own:
            for process in list(getattr(executor, "_processes", {}).values()):   # stop the runs in flight
                process.terminate()
            executor.shutdown(wait=True, cancel_futures=True)
        if isinstance(stop, KeyboardInterrupt):
            raise KeyboardInterrupt(f"stopped; {sum(k in store for k in runs)} finished run(s) are stored") from None
        raise
    finally:
        progress_line.close()
    if own:
        executor.shutdown()
    return store


@contextlib.contextmanager
def cluster_executor(address):
    """A ``concurrent.futures`` executor on the Dask cluster whose scheduler is at
    ``address``; the connection is closed when the block ends."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise SystemExit(f"--scheduler {address}: Dask is not installed; pip install -e '.[cluster]'") from None
    client = Client(address, timeout="20s")
    try:
        yield client.get_executor()
    finally:
        client.close()


class RunStore:
    """Finished runs of a lesson, kept in ``<out>/runs.json`` with the identity
    of the lesson run that made them: an interrupted lesson resumes at the first
    unfinished run, and a changed setting refuses to mix old runs with new ones
    (--fresh starts over)."""

    def __init__(self, out, identity, fresh=False):
        self.path, self.identity = os.path.join(out, "runs.json"), identity
        self.runs = {}
        if os.path.exists(self.path) and not fresh:
            with open(self.path) as f:
                saved = json.load(f)
            check_resume(self.path, json.dumps(saved.get("identity")), identity)
            self.runs = saved["runs"]
            if self.runs:
                print(f"resuming: {len(self.runs)} finished run(s) in {self.path}")

    def __contains__(self, key):
        return key in self.runs

    def __getitem__(self, key):
        return self.runs[key]

    def __setitem__(self, key, result):
        self.runs[key] = result
        write_json(self.path, {"identity": self.identity, "runs": self.runs})
