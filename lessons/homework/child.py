"""The process that grades one submission (started by ``lessons.homework.sandbox``,
inside its limits and sandbox): it imports the submission, grades it, prints the
report and writes the result as JSON to the file descriptor it was given.

    python -m lessons.homework.child --result-fd FD SUBMISSION.py NAME
"""
import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lessons.homework.child")
    p.add_argument("submission")
    p.add_argument("name")
    p.add_argument("--result-fd", type=int, required=True)
    args = p.parse_args(argv)
    result = os.fdopen(args.result_fd, "w")

    def finish(status, report=None, message=None):
        if message:
            print(message)
        result.write(json.dumps(dict(status=status, **(report.result() if report else dict(score=0, failed=[])))))
        result.close()
        return 0

    try:
        from lessons import homework as grader      # imported before the submission: a MemoryError below is the student's
        obj = grader.load_function(f"{args.submission}:{args.name}", flag="name")
        report = grader.grade_any(obj)
    except MemoryError:
        sys.stdout.flush()
        return finish("memory limit", message="\nStopped: MemoryError, the memory limit was reached.")
    except SystemExit as e:          # the file could not be imported, or holds no such name
        return finish("error", message=str(e.code) if e.code not in (None, 0, 1) else "the submission exited")
    sys.stdout.flush()
    return finish("graded", report)


if __name__ == "__main__":
    sys.exit(main())
