"""Runnable lessons: ``python -m lessons.<name> --help``."""
