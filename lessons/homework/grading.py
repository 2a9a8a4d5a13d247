"""Grading a class: every submission of a folder, each run by the runner in the
sandbox (``lessons.homework.sandbox``) on one exam drawn for this grading run,
marked by the judge in the teacher's process, into the gradebook. The
submissions go out through the executor the lessons' runs use
(``lessons.runs.run_all``): one per core here, or on a Dask cluster's workers.

The verdict never depends on what a submission says about itself: the judge
marks the runner's raw results against references the sandbox never sees, and
the status comes from what the teacher's process observed of the run (its exit,
the limits' accounting)."""
import os
import sys

from lessons.homework import gradebook, submissions
from lessons.homework.judge import Exam, parse_records

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
MODULE_FILE = "submission.py"         # the name the submission's code has inside the sandbox


def kind_named(target):
    """What a target's name says it is: a class is CapWords (BatchNorm2d), a function is not."""
    return "module" if target[:1].isupper() else "backward"


def run_submission(code, exam, time_limit, memory_limit, sandbox=True):
    """Run ``code`` (a submission's Python source) under the exam's plan in the
    sandbox; returns (the sandbox's Run, the records its runner sent)."""
    from lessons.homework import sandbox as box
    with open(RUNNER, "rb") as f:
        runner = f.read()
    run = box.run_untrusted([sys.executable, "/submission/runner.py", "/submission/" + MODULE_FILE, exam.target,
                             exam.kind], {"runner.py": runner, MODULE_FILE: code.encode("utf-8", "surrogatepass")},
                            stdin=exam.request(), time_limit=time_limit, memory_limit=memory_limit, sandbox=sandbox)
    return run, parse_records(run.results, exam.keys)


STOPPED = {"time limit": "Stopped: the time limit of {time_limit:g} s was reached.",
           "memory limit": "Stopped: the memory limit of {memory_limit:g} MB was reached.",
           "killed": "Stopped: the process was killed by a signal."}


def grade_one(entry, exam, time_limit, memory_limit, sandbox=True):
    """One submission's gradebook row and feedback: {"row": ..., "feedback": text}.
    Never raises: whatever happens is the row's status."""
    row = dict(submission=entry.shown, max_score=exam.max_score, score=0, failed_lines="", seed=exam.seed,
               copies="; ".join(entry.copies), borrows="; ".join(entry.borrows), sha256=entry.sha256,
               sandboxed="not run", seconds="")
    if entry.error:
        return {"row": dict(row, status="error"), "feedback": entry.error + "\n", "protections": ""}
    try:
        run, records = run_submission(entry.code, exam, time_limit, memory_limit, sandbox)
    except Exception as e:        # the sandbox itself failed: this row says so, the class goes on
        return {"row": dict(row, status="error"), "protections": "",
                "feedback": f"The grader could not run this submission: {type(e).__name__}: {e}\n"}
    try:
        report = exam.mark(records)
    except Exception as e:        # a result no check foresaw must not stop the class: this row says so
        return {"row": dict(row, status="error", sandboxed=run.sandboxed, seconds=round(run.seconds, 2)),
                "protections": run.protections,
                "feedback": f"The grader could not read this submission's results ({type(e).__name__}): score 0.\n"}
    if run.status == "exited":
        status = "graded" if "done" in records else "error"
    else:
        status = run.status if run.status in ("time limit", "memory limit") else "error"
    text = str(report)
    if run.status in STOPPED:
        text += "\n\n" + STOPPED[run.status].format(time_limit=time_limit, memory_limit=memory_limit)
    elif status == "error" and "load" in records and "done" not in records:
        pass                                  # the load error is the report
    elif status == "error":
        text += f"\n\nThe run ended before every line was run (exit status {run.returncode}): the lines it did " \
                "not reach score nothing."
    if run.output.strip():
        text += "\n\n---- what your code printed ----\n" + run.output
    row.update(status=status, score=report.score if status in ("graded", "error") else 0,
               failed_lines="; ".join(report.failed_lines()), sandboxed=run.sandboxed, seconds=round(run.seconds, 2))
    return {"row": row, "feedback": text + "\n", "protections": run.protections}


class Store:
    """Where finished submissions go (``run_all``'s store): their row into the
    gradebook, written at once, their feedback into ``feedback/``."""

    def __init__(self, out, rows):
        self.out, self.rows, self.protections = out, rows, set()
        self.path = os.path.join(out, "grades.csv")

    def __contains__(self, shown):
        return False            # grade_folder hands run_all only the submissions to grade

    def __setitem__(self, shown, result):
        self.rows[shown] = result["row"]
        gradebook.write_feedback(self.out, shown, result["feedback"])
        gradebook.write(self.path, self.rows)
        if result.get("protections"):
            self.protections.add(result["protections"])


def probe_sandbox():
    """The line saying which protection is missing here ("" when none), or
    SystemExit with why the sandbox cannot start and the fix."""
    from lessons.homework import sandbox as box
    try:
        run = box.run_untrusted([sys.executable, "-c", "pass"], {}, time_limit=30)
    except box.SandboxUnavailable as e:
        raise SystemExit(f"grade: the sandbox cannot start here: {e}\nGrading runs every submission sandboxed; "
                         "--no-sandbox grades without it (every row then says so).") from None
    return run.protections


def grade_folder(folder, out, target="BatchNorm2d", workers=None, scheduler=None, time_limit=None,
                 memory_limit=None, fresh=False, sandbox=True, seed=None):
    """Grade every submission in ``folder`` into ``out``/grades.csv and
    ``out``/feedback/; returns (rows, summary lines)."""
    from lessons.homework import sandbox as box
    from lessons.runs import run_all
    time_limit = box.TIME_LIMIT if time_limit is None else time_limit
    memory_limit = box.MEMORY_LIMIT if memory_limit is None else memory_limit
    if scheduler is None and workers is not None and workers < 1:
        raise SystemExit(f"grade: --workers must be >= 1, got {workers}")
    protections = probe_sandbox() if sandbox else ""
    entries = submissions.find(folder)
    os.makedirs(os.path.join(out, "feedback"), exist_ok=True)
    path = os.path.join(out, "grades.csv")
    rows = {} if fresh else gradebook.read(path)
    shown = {e.shown for e in entries}
    for name in list(rows):
        if name not in shown:
            del rows[name]                              # a submission no longer in the folder
    todo = [e for e in entries if not (e.shown in rows and rows[e.shown]["status"] == "graded"
                                       and rows[e.shown].get("sha256") == e.sha256 and not e.error)]
    if len(todo) < len(entries):
        print(f"{len(entries) - len(todo)} of {len(entries)} submission(s) already in {path} (graded and unchanged): "
              f"grading the other {len(todo)} (--fresh: all)")
    for e in entries:                                   # copies change with the folder: kept current on every row
        if e.shown in rows:
            rows[e.shown]["copies"] = "; ".join(submissions.shown_name(c) for c in e.copies)
    for e in todo:
        e.copies = [submissions.shown_name(c) for c in e.copies]
    exam = Exam(kind_named(target), target, seed)
    store = Store(out, rows)
    run_all({e.shown: (grade_one, (e, exam, time_limit, memory_limit, sandbox)) for e in todo}, store,
            workers, scheduler, desc="grading")
    gradebook.write(path, rows)
    summary = gradebook.summarize(rows, [e.shown for e in entries],
                                  "\n".join(sorted(({protections} | store.protections) - {""})))
    skipped = submissions.others(folder)
    if skipped:
        summary.append(f"{len(skipped)} other file(s) in {folder}, neither .py nor .ipynb, not graded: "
                       + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    if not sandbox:
        summary.append("Graded with --no-sandbox: every submission ran unsandboxed, with the teacher's rights.")
    summary.append(f"Exam seed {exam.seed} (drawn for this run; each row names the seed it was graded with).")
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    return rows, summary, entries
