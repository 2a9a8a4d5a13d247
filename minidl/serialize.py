"""Checkpoints: ``md.save(obj, path)`` / ``md.load(path)`` in NumPy's ``.npz``.

``obj`` is a (nested) dict of arrays and numbers: a model's state_dict, an
optimizer's, an epoch counter. Nested keys are joined with "/" in the file, so
``np.load(path)`` opens it without minidl. Writes are atomic: the file is
written beside the target and renamed over it, so a crash mid-write leaves the
old checkpoint intact. Round trips are bit-exact.
"""
import os
import tempfile
import zipfile

import numpy as np

from . import backend
from .tensor import Tensor

_SCALAR = "__scalar__/"   # prefix marking values that were Python numbers
_EMPTY = "__empty__/"     # prefix marking empty dicts (an optimizer's state before its first step)


def _flatten(obj, prefix, out):
    for key, value in obj.items():
        if not isinstance(key, str) or "/" in key:
            raise ValueError(f"save: keys must be strings without '/', got {key!r}")
        name = prefix + key
        if isinstance(value, dict):
            if not value:
                out[_EMPTY + name] = np.zeros(0)
            _flatten(value, name + "/", out)
        elif isinstance(value, (bool, int, float)):
            out[_SCALAR + name] = np.asarray(value)
        else:
            # a Tensor's array, or an array itself (a CuPy array's .data is a device pointer)
            out[name] = backend.as_numpy(value.data if isinstance(value, Tensor) else value)


def save(obj, path):
    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a dict (e.g. model.state_dict()), got {type(obj).__name__}")
    arrays = {}
    _flatten(obj, "", arrays)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def _what_it_is(path, head):
    """A sentence naming what a file that is not a minidl checkpoint seems to be."""
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy); read it with np.load"
    if head[:1] == b"\x80":
        return "a Python pickle (a PyTorch file of the old format, perhaps); minidl never unpickles"
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("data.pkl") for n in names):
            return "a PyTorch checkpoint (torch.save); read it with torch.load"
        return f"a zip archive of other files ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file"
    return "not a NumPy .npz archive"


def load(path):
    """The dict ``save`` wrote, nested again; arrays come back as NumPy arrays.
    A file that is not a minidl checkpoint is refused with what it seems to be;
    nothing is ever unpickled."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        raise FileNotFoundError(f"load: no checkpoint at {path}") from None
    if not head.startswith(b"PK"):
        raise ValueError(f"load: {path} is not a minidl checkpoint: it is {_what_it_is(path, head)}")
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
        if not all(n.endswith(".npy") for n in members):
            raise ValueError(f"load: {path} is not a minidl checkpoint: it is {_what_it_is(path, head)}")
        with np.load(path, allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"load: {path} is not a readable minidl checkpoint ({e}); it may be "
                         "truncated or corrupted") from None
    except ValueError as e:
        if str(e).startswith("load:"):
            raise
        raise ValueError(f"load: {path} holds something other than plain arrays ({e}); it is not "
                         "a minidl checkpoint, and minidl never unpickles") from None
    out = {}
    for name, value in flat.items():
        if name.startswith(_EMPTY):
            name, value = name[len(_EMPTY):], {}
        elif name.startswith(_SCALAR):
            name, value = name[len(_SCALAR):], value.item()
        *parents, leaf = name.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict):
            node.setdefault(leaf, {})      # an empty dict; its keys, if any, arrive on their own
        else:
            node[leaf] = value
    return out
