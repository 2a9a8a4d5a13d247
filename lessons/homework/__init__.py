"""The BatchNorm homework grader, behind ``python -m lessons.homework check``
(the student's self-check) and ``grade`` (a class's submissions, each in its own
sandboxed process: ``lessons.homework.sandbox``).

It grades either of the two things the course asks a student to write, each in
its own module, both through one tolerance scheme and one report
(``lessons.homework.common``):

- a module class, the homework as the course's slides (deck 002) hand it out:
  ``lessons.homework.module.grade_module``;
- a backward function ``batchnorm_backward(dy, x, gamma, beta, eps) -> (dx,
  dgamma, dbeta)``: ``lessons.homework.backward.grade_backward``.
"""
from lessons.homework.backward import grade_backward
from lessons.homework.common import Report, StudentError, load_function, short_error
from lessons.homework.module import grade_module
from lessons.homework.cli import check_line, module_passes    # the hand-out notebook's cells call these


def grade_any(obj):
    """Grade a backward function or a module class, whichever ``obj`` is; the Report."""
    if isinstance(obj, type):
        return grade_module(obj)
    return grade_backward(obj)


__all__ = ["check_line", "module_passes", "grade_any", "grade_backward", "grade_module", "load_function", "Report", "short_error", "StudentError"]

