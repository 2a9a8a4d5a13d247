"""What every lesson shares: its output folder, JSON/Markdown writers, a progress bar."""
import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")   # lessons save PNGs; no display needed


def out_dir(path):
    os.makedirs(path, exist_ok=True)
    return path


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


class Progress:
    """A one-line progress bar with rate and ETA (stderr, so logs stay clean)."""

    def __init__(self, total, label):
        self.total, self.label, self.start, self.done = total, label, time.time(), 0

    def update(self, n=1, info=""):
        self.done += n
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0
        width = 24
        filled = int(width * self.done / self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.done}/{self.total} {elapsed:5.0f}s eta {eta:4.0f}s {info}   ")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
