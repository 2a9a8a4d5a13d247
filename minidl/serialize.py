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

_SCALAR = "__scalar__/"   # prefix marking values that were Python numbers


def _flatten(obj, prefix, out):
    for key, value in obj.items():
        if not isinstance(key, str) or "/" in key:
            raise ValueError(f"save: keys must be strings without '/', got {key!r}")
        name = prefix + key
        if isinstance(value, dict):
            if not value:
                raise ValueError(f"save: empty dict at {name!r} cannot be stored")
            _flatten(value, name + "/", out)
        elif isinstance(value, (bool, int, float)):
            out[_SCALAR + name] = np.asarray(value)
        else:
            out[name] = backend.as_numpy(getattr(value, "data", value))


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


def load(path):
    """The dict ``save`` wrote, nested again; arrays come back as NumPy arrays."""
    try:
        with np.load(path, allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"load: no checkpoint at {path}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"load: {path} is not a readable minidl checkpoint ({e}); it may be "
                         "truncated or corrupted") from None
    out = {}
    for name, value in flat.items():
        if name.startswith(_SCALAR):
            name, value = name[len(_SCALAR):], value.item()
        *parents, leaf = name.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
