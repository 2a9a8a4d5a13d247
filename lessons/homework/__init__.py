"""The BatchNorm homework, from hand-out to gradebook: ``python -m lessons.homework
handout | check | grade`` (``lessons.homework.cli``).

One module per concern, one word per thing: a **submission** is a file a student
hands in; its **target** is the class or function it must define (``BatchNorm2d``,
or ``batchnorm_backward``); an **exam** is the inputs and references drawn for one
grading run.

- ``notebook.py``: the hand-out notebook, a Jupytext source file;
- ``submissions.py``: reading a folder's submissions, each file an entry, copies found;
- ``runner.py``: what runs a submission (in the sandbox) and returns raw results;
- ``sandbox.py``: the sandbox, its limits and their accounting;
- ``judge.py``, with ``module.py`` and ``backward.py``: the exam and every verdict,
  in the teacher's process;
- ``gradebook.py``: grades.csv, the feedback files, the summary;
- ``grading.py``: a folder graded on local cores or a Dask cluster;
- ``check.py``: grading here, on the student's own code (``check``, the hand-out's
  check cells, the lessons' ``--norm`` and ``--check``).
"""
from lessons.homework.check import StudentError, check_line, grade, load_target, module_passes, short_error
from lessons.homework.judge import Report

__all__ = ["check_line", "grade", "load_target", "module_passes", "Report", "short_error", "StudentError"]
