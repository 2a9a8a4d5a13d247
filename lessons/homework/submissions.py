"""Reading a class's submissions: every file of a folder gets an entry, and no
file can stop the reading. A submission is a ``.py`` file or a hand-out notebook
(``.ipynb``, graded from its cells tagged ``homework``).

Nothing is followed or waited on: a symbolic link is not read (it is an error
entry, and a copy of its target when that is a submission of the folder);
directories, named pipes, devices and sockets are named as what they are; a file
is opened without following links and without blocking, read up to
``MAX_BYTES``; a name that is not UTF-8, a file that is not text, a notebook of
any malformed shape: each an entry with a one-line reason. Submissions whose code
is the same once comments, blank lines and formatting are dropped share a
fingerprint, and the gradebook names them to each other."""
import ast
import hashlib
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field

MAX_BYTES = 1 << 20          # a homework is a few kilobytes; a notebook with outputs, some hundreds
SUFFIXES = (".py", ".ipynb")


@dataclass
class Submission:
    """One file of the folder: its name (``shown``: printable), and either its
    ``code`` or the ``error`` that says why it cannot be graded."""
    name: str
    shown: str
    code: str = None
    error: str = None
    sha256: str = ""
    fingerprint: str = None          # the same for the same code, whatever its comments and layout
    copies: list = field(default_factory=list)
    borrows: list = field(default_factory=list)     # a library's own batch norm the code names (borrowed())


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text):
    """``text`` safe to show in a terminal, an editor or a spreadsheet: control
    characters (terminal escapes among them), bidirectional overrides and
    undecodable bytes shown escaped (``\\x1b``); newlines and tabs kept."""
    return _UNPRINTABLE.sub(lambda m: (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else
                                       f"\\u{ord(m.group()):04x}"), text)


# what shows as nothing, or as a neighbour: control and format characters (word joiners, bidirectional
# overrides, soft hyphens), spaces other than the plain one, combining marks (e + U+0301 shows as é)
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs", "Mn", "Me"}


def shown_name(name):
    """A file name as the gradebook shows it, one to one (rows, feedback files and
    the runs are keyed by it): undecodable bytes as ``\\xNN``, every character that
    shows as nothing or as its neighbour (control and format characters, newlines,
    bidirectional overrides, word joiners, spaces but the plain one, combining
    marks) escaped, a backslash doubled, so no name can show as another's but by
    letters of other scripts that look alike."""
    def escape(c):
        if c == "\\":
            return "\\\\"
        if "\udc80" <= c <= "\udcff":            # an undecodable byte, kept by surrogateescape
            return f"\\x{ord(c) - 0xdc00:02x}"
        if c == " " or unicodedata.category(c) not in _HIDDEN:
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
    return "".join(escape(c) for c in os.fsencode(name).decode("utf-8", "surrogateescape"))


def _json_kind(value):
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), "null")


def notebook_code(data, name):
    """The source of a notebook's cells tagged ``homework`` (``data``: the file's
    bytes), read as data, never run; IPython's magics (``%``, ``!``) become
    comments. Raises ValueError with a one-line reason for anything else."""
    try:
        notebook = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"{name} is not a notebook: not JSON text") from None
    if not isinstance(notebook, dict):
        raise ValueError(f"{name} is not a notebook: its JSON is a {_json_kind(notebook)}, not an object")
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise ValueError(f"{name} is not a notebook: it has no list of cells")
    sources = []
    for k, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise ValueError(f"{name}: cell {k} is a {_json_kind(cell)}, not a cell")
        metadata = cell.get("metadata", {})
        tags = metadata.get("tags", []) if isinstance(metadata, dict) else []
        if cell.get("cell_type") != "code" or not isinstance(tags, list) or "homework" not in tags:
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise ValueError(f"{name}: the homework cell's source is a {_json_kind(source)}, not text")
        sources.append(source)
    if not sources:
        raise ValueError(f"{name} has no code cell tagged 'homework' (the hand-out's first code cell carries "
                         "the tag; keep your class in it)")
    return "\n\n".join("\n".join("# " + line if line.lstrip().startswith(("%", "!")) else line
                                 for line in source.splitlines()) for source in sources) + "\n"


# The libraries' own batch normalization, which the homework asks a student to write: minidl's layers and
# hand-derived backward, PyTorch's layers and functions
LIBRARY_BATCH_NORM = {"BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm", "backward_staged",
                      "backward_compact", "Normalize", "LazyBatchNorm1d", "LazyBatchNorm2d", "SyncBatchNorm"}


def borrowed(code):
    """The library batch norms ``code`` names (``md.nn.BatchNorm2d``, ``from
    minidl.ops.norm import backward_staged``, ``F.batch_norm``), sorted: a note
    for the teacher, not a verdict (a name built at run time is not seen); the
    student's own class, named BatchNorm2d, is not one."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in LIBRARY_BATCH_NORM:
            found.add(ast.unparse(node) if len(ast.unparse(node)) < 80 else node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("minidl", "torch"):
            found |= {f"{node.module}.{a.name}" for a in node.names if a.name in LIBRARY_BATCH_NORM}
    return sorted(found)


def fingerprint(code):
    """The same for the same program, whatever its comments, blank lines and
    formatting: the parsed module's dump (the text without comments and blank
    lines where it does not parse)."""
    try:
        normal = ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        normal = "\n".join(line.split("#")[0].rstrip() for line in code.splitlines() if line.split("#")[0].strip())
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).hexdigest()


KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _read(path, shown):
    """The bytes of the regular file ``path``, or ValueError saying why not (never
    follows a link, never blocks on a pipe, never reads past MAX_BYTES)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ValueError(f"{shown} cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{shown} is not a regular file")
        if st.st_size > MAX_BYTES:
            raise ValueError(f"{shown} is {st.st_size} bytes, more than a homework's {MAX_BYTES} (1 MB)")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            raise ValueError(f"{shown} grew past {MAX_BYTES} bytes while it was read")
        return b"".join(chunks)
    except OSError as e:
        raise ValueError(f"{shown} cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)


def read(folder, name):
    """The Submission of ``folder``/``name``."""
    path, shown = os.path.join(folder, name), shown_name(name)
    entry = Submission(name, shown)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        entry.error = f"{shown}: its file name is not UTF-8 text; rename it"
        return entry
    try:
        st = os.lstat(path)
    except OSError as e:
        entry.error = f"{shown} cannot be read ({e.strerror})"
        return entry
    if stat.S_ISLNK(st.st_mode):
        entry.error = f"{shown} is a symbolic link, not a file: not followed"
        return entry
    kind = next((what for test, what in KINDS if test(st.st_mode)), None)
    if kind or not stat.S_ISREG(st.st_mode):
        entry.error = f"{shown} is {kind or 'not a regular file'}, not a file to grade"
        return entry
    try:
        data = _read(path, shown)
        entry.sha256 = hashlib.sha256(data).hexdigest()[:16]
        if name.endswith(".ipynb"):
            entry.code = notebook_code(data, shown)
        else:
            try:
                entry.code = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{shown} is not UTF-8 text (byte {e.start})") from None
    except ValueError as e:
        entry.error = str(e)
        return entry
    entry.fingerprint = fingerprint(entry.code)
    entry.borrows = borrowed(entry.code)
    return entry


def link_target(folder, name, names):
    """The submission of the folder that the link ``name`` points to, or None."""
    try:
        target = os.path.realpath(os.path.join(folder, name))
    except (OSError, ValueError, RuntimeError):
        return None
    if os.path.dirname(target) == os.path.realpath(folder) and os.path.basename(target) in names:
        return os.path.basename(target)
    return None


def others(folder):
    """The names of the folder's entries that are not submissions (nor hidden), as shown."""
    return sorted(shown_name(n) for n in os.listdir(folder) if not n.endswith(SUFFIXES) and not n.startswith("."))


def find(folder):
    """The submissions in ``folder`` (its .py and .ipynb entries, hidden ones left
    out, by name), read, with their copies named: a list of Submission."""
    if not os.path.isdir(folder):
        raise SystemExit(f"grade: no folder {folder}")
    names = sorted(n for n in os.listdir(folder) if n.endswith(SUFFIXES) and not n.startswith("."))
    entries = {n: read(folder, n) for n in names}
    groups = {}
    for n, e in entries.items():
        if e.fingerprint:
            groups.setdefault(e.fingerprint, []).append(n)
    for n, e in entries.items():
        if e.fingerprint:
            e.copies = [other for other in groups[e.fingerprint] if other != n]
        elif os.path.islink(os.path.join(folder, n)):
            target = link_target(folder, n, entries)
            if target and target != n:
                e.copies.append(target)
                entries[target].copies.append(n)
                e.error += f"; it points to {entries[target].shown}, a copy"
    return list(entries.values())
