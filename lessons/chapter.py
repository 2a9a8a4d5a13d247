"""A lesson's output for a person: Markdown, tables and figures where a notebook
renders them (plain text and PNG files elsewhere), progress that updates in
place and leaves nothing behind, and the files a run writes."""
import json
import os
import sys
import time
import warnings

import matplotlib


def in_notebook():
    """True inside a Jupyter kernel (not merely where ipykernel was imported)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


if not in_notebook():
    matplotlib.use("Agg")   # a script saves PNGs and needs no display; a notebook keeps its inline backend

# A projector shows a 900-px-wide figure across a room; at 150 dpi the lessons'
# 6-inch figures are 900 px and their text stays legible from the back row. A
# notebook shows figures at the same dpi, and the type is a size larger than
# matplotlib's default so that a wide figure scaled to the page keeps 11-px text.
DPI = 150
matplotlib.rcParams.update({"figure.dpi": DPI, "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12,
                            "legend.fontsize": 11, "xtick.labelsize": 11, "ytick.labelsize": 11})


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def say(markdown):
    """A conclusion or note computed from the run: rendered Markdown in a notebook,
    plain text on the command line; nothing for no text (a verdict already said)."""
    if not markdown:
        return
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown(markdown))
    else:
        print(markdown.replace("**", "") + "\n")


def table(header, rows):
    """A Markdown table (for summary.md), from a header and rows of cells (their
    * _ | written literally, not as Markdown)."""
    escape = lambda c: str(c).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
    cells = [[escape(c) for c in header]] + [[escape(c) for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)] +
                      ["| " + " | ".join(r) + " |" for r in cells[1:]])


class Shown(str):
    """Text that was already shown (a table's Markdown, a figure's file name): a
    notebook does not echo it when it is a cell's last value."""

    def _ipython_display_(self):
        pass


def show_table(header, rows, title=None):
    """Show a table: rendered in a notebook, aligned columns on the command line.
    Returns its Markdown, for summary.md."""
    markdown = table(header, rows)
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown((f"**{title}**\n\n" if title else "") + markdown))
    else:
        cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
        widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        print((title + "\n" if title else "") + "\n".join(
            [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]) + "\n")
    return Shown(markdown)


STAMP = {"text": None}    # set by settings(): what every figure of this run says in its corner


def show_figure(fig, path):
    """Save the figure (at DPI, so a projected PNG stays sharp); in a notebook also
    show it under the cell. A quick run's figures say so in their corner, so a
    saved plot is never taken for a result. Returns the file's name, for summary.md."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    if STAMP["text"]:
        fig.text(0.995, 0.005, STAMP["text"], ha="right", va="bottom", fontsize=10, color="tab:red", alpha=0.8)
    fig.savefig(path, dpi=DPI)
    for legend, line in legend_overlaps(fig):
        warnings.warn(f"{os.path.basename(path)}: the legend covers the line {line!r}; place it elsewhere "
                      "(beside the axes, or where no line runs)", stacklevel=2)
    if in_notebook():
        plt.show()
    plt.close(fig)
    return Shown(os.path.basename(path))      # a cell ending in show_figure echoes no file name


def legend_overlaps(fig):
    """(legend, line label) for every plotted line whose points (with their
    markers' size) or segments fall inside a legend's box, within the axes the
    line is drawn in, by the bounding boxes of the figure as drawn. Only lines
    (Line2D, axhline included) are checked: bars, images and filled areas are
    beyond what it can tell."""
    import numpy as np
    from matplotlib.path import Path
    from matplotlib.transforms import Bbox
    renderer = fig.canvas.get_renderer()
    legends = [(legend, fig.axes) for legend in fig.legends]
    legends += [(ax.get_legend(), [ax]) for ax in fig.axes if ax.get_legend() is not None]
    found = []
    for legend, axes in legends:
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in axes:
            inside = Bbox.intersection(box, ax.get_window_extent(renderer))
            if inside is None:
                continue
            for line in ax.get_lines():
                points = line.get_transform().transform(line.get_xydata())
                points = points[np.isfinite(points).all(axis=1)]
                if not line.get_visible() or not len(points):
                    continue
                joined = line.get_linestyle() not in ("None", "none", "", " ") and len(points) > 1
                hit = joined and Path(points).intersects_bbox(inside, filled=False)   # a segment crosses the box
                if line.get_marker() not in (None, "None", "none", "", " "):
                    r = line.get_markersize() * fig.dpi / 72 / 2              # a marker's half width, in pixels
                    hit = hit or ((points[:, 0] >= inside.x0 - r) & (points[:, 0] <= inside.x1 + r) &
                                  (points[:, 1] >= inside.y0 - r) & (points[:, 1] <= inside.y1 + r)).any()
                if hit:
                    found.append((legend, line.get_label()))
    return found


def legend_beside(ax, **kwargs):
    """The axes' legend to their right, outside them: over no curve, whatever the data do."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, **kwargs)


def legend_below(ax, ncol=2, **kwargs):
    """The axes' legend under them (below the x label), for panels side by side."""
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, **kwargs)


def integer_ticks(*axes):
    """Axes that count steps, epochs or layers get whole-number ticks only."""
    from matplotlib.ticker import MaxNLocator
    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def plain_log_ticks(axis):
    """A log axis labelled 1, 2, 5, 10 … or 0.01, 0.1 … rather than 2×10⁰, 3×10⁰."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _show_progress():
    """Progress shows in a notebook or a terminal, never in a pipe or a log;
    MINIDL_PROGRESS=0 silences it, =1 forces it in a terminal."""
    setting = os.environ.get("MINIDL_PROGRESS")
    return setting != "0" and (in_notebook() or setting == "1" or sys.stderr.isatty())


class LiveText:
    """A few lines of text rewritten in place (a notebook's display handle, or the
    terminal's last lines) and erased by ``close``, so a saved notebook or a
    scrolled terminal keeps none of it. Nothing at all where progress is not
    shown. Both a run's progress bar and the runs' status lines are drawn with it."""

    def __init__(self):
        self.show, self.handle, self.lines = _show_progress(), None, 0
        if self.show and in_notebook():
            from IPython.display import display
            self.handle = display({"text/plain": ""}, raw=True, display_id=True)

    def write(self, lines):
        if not self.show:
            return
        if self.handle is not None:
            self.handle.update({"text/plain": "\n".join(lines)}, raw=True)
        else:
            sys.stderr.write("\x1b[1A\x1b[2K" * self.lines + "".join(line + "\n" for line in lines))
            sys.stderr.flush()
            self.lines = len(lines)

    def close(self):
        self.write([])


def progress(iterable, desc=None):
    """Iterate over ``iterable`` with one progress bar that updates in place and is
    erased when the loop ends: tqdm's in a terminal, a ``Progress`` line in a
    notebook (tqdm's widgets would stay in a saved notebook), nothing in a pipe or
    a log. ``set_postfix(**values)`` adds values (the loss) to the line."""
    if in_notebook():
        return Progress(iterable, desc)
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, leave=False, disable=not _show_progress(), dynamic_ncols=True,
                file=sys.stderr)


class Progress:
    """A text progress bar drawn on a ``LiveText`` line (see ``progress``)."""

    def __init__(self, iterable, desc=None, width=30, every=0.25):
        self.iterable, self.desc, self.width, self.every = iterable, desc or "", width, every
        self.postfix = ""

    def set_postfix(self, refresh=False, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __len__(self):
        return len(self.iterable)

    def __iter__(self):
        total = len(self.iterable) if hasattr(self.iterable, "__len__") else None
        line, start, shown = LiveText(), time.time(), 0.0
        try:
            for k, item in enumerate(self.iterable):
                yield item
                now = time.time()
                if line.show and now - shown >= self.every:
                    shown = now
                    filled = int((k + 1) / total * self.width) if total else 0
                    count = f"{k + 1}/{total}" if total else f"{k + 1}"
                    line.write([f"{self.desc} {'█' * filled}{'·' * (self.width - filled)} {count} "
                                f"[{now - start:.0f}s] {self.postfix}"])
        finally:
            line.close()
