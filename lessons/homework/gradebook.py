"""The gradebook: ``grades.csv`` (one row per submission), ``feedback/`` (one
report per submission) and ``summary.txt``, written so that every file is safe
to open: names and text escaped where they hold control characters or terminal
escapes, feedback files named by safe names, no cell a spreadsheet would read
as a formula."""
import collections
import csv
import hashlib
import os
import re

from lessons.homework.submissions import printable

COLUMNS = ("submission", "score", "max_score", "status", "failed_lines", "copies", "borrows", "sandboxed", "seconds",
           "seed", "sha256")
STATUSES = ("graded", "error", "time limit", "memory limit")


def read(path):
    """The rows of a gradebook, by submission ({} when there is none, or it is not one)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "submission" not in reader.fieldnames:
            return {}
        return {cell_text(row["submission"]): {k: cell_text(v) for k, v in row.items()} for row in reader}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_text(cell):
    """A cell a spreadsheet shows as text: one that starts with = + - @ would be
    read as a formula (a submission chooses its name and its output), so it gets
    the quote a spreadsheet hides; one that starts with a quote gets another, so
    "'=a.py" and "=a.py" never show the same."""
    return "'" + cell if isinstance(cell, str) and cell[:1] in FORMULA_STARTS else cell


def cell_text(cell):
    """What ``spreadsheet_text`` was given: the gradebook read back keys its rows
    by the names it was written with."""
    return cell[1:] if isinstance(cell, str) and cell[:1] == "'" and cell[1:2] in FORMULA_STARTS else cell


def write(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow({k: spreadsheet_text(printable(str(rows[name].get(k, "")))) for k in COLUMNS})
    os.replace(tmp, path)


def feedback_name(shown):
    """A file name for a submission's feedback: its name where that is plain
    (letters, digits, ``._-``, at most 100 characters), else a cleaned, shortened
    one with a hash of the name, so two names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", shown)[:100]
    if safe != shown or safe.startswith("."):
        safe = safe.lstrip(".")[:80] + "-" + hashlib.sha256(shown.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return safe + ".txt"


def write_feedback(out, shown, text):
    with open(os.path.join(out, "feedback", feedback_name(shown)), "w", encoding="utf-8") as f:
        f.write(printable(text))


def summarize(rows, names, protections=""):
    """The lines printed (and saved) after grading."""
    graded = [rows[n] for n in names if n in rows]
    full = sum(1 for r in graded if r["status"] == "graded" and str(r["score"]) == str(r["max_score"]))
    statuses = collections.Counter(r["status"] for r in graded)
    lines = [f"{len(graded)} submission(s): {full} at full marks, "
             + ", ".join(f"{statuses[s]} {s}" for s in STATUSES if statuses[s])]
    failed = collections.Counter(f.split(" on ")[0] for r in graded for f in r["failed_lines"].split("; ") if f)
    if failed:
        line, count = failed.most_common(1)[0]
        lines.append(f"Most frequent failed line: {line} ({count} time(s))")
    copies = sum(1 for r in graded if r.get("copies"))
    if copies:
        lines.append(f"{copies} submission(s) share their code with another (the copies column names them).")
    borrowing = sum(1 for r in graded if r.get("borrows"))
    if borrowing:
        lines.append(f"{borrowing} submission(s) name a library's own batch norm (the borrows column names it).")
    unsandboxed = sorted({r["sandboxed"] for r in graded if r["sandboxed"] not in ("yes", "not run")})
    lines += [f"Not sandboxed: {why}" for why in unsandboxed]
    if not unsandboxed and any(r["sandboxed"] == "yes" for r in graded):
        lines.append("Every submission ran sandboxed (bubblewrap: no network, only its own file and a scratch folder).")
    if protections:
        lines.append(protections)
    return [printable(line) for line in lines]
