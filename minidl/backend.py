"""Array-module choice: the only file in minidl that imports CuPy.

Two words, each with one meaning: a *backend* is the array library new tensors
are made with, "numpy" or "cupy" (``use_backend``, ``MINIDL_BACKEND``); a
*device* is where one array lives, "cpu" or "gpu" (``tensor.to``,
``device_of``, ``to_device``). ``Function.__call__`` asks
``get_array_module`` once per op for the inputs' module and hands it to
``forward`` as ``self.xp``; everything an op creates is made with it. CuPy is
imported on first use, never at import time, and the random generator that
init, shuffling and dropout draw from (``manual_seed``) is NumPy's.
"""
import os

import numpy as np

BACKENDS = ("numpy", "cupy")
DEVICES = {"numpy": "cpu", "cupy": "gpu"}

_cupy = None          # the cupy module once imported successfully
_default = "numpy"    # backend that new tensors are created on

CUPY_INSTALL_HINT = (
    "Install the CuPy wheel that matches your CUDA toolkit, e.g. "
    "`pip install cupy-cuda12x` (CUDA 12) or `pip install cupy-cuda11x` (CUDA 11), "
    "or `pip install minidl[gpu]`; `nvidia-smi` shows the CUDA version."
)


class BackendError(RuntimeError):
    """CuPy was asked for but cannot be used here."""


class DeviceMismatchError(RuntimeError):
    """An op received arrays living on different devices."""


def _load_cupy():
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as e:
        raise BackendError(f"the cupy backend needs CuPy, which is not installed ({e}). "
                           + CUPY_INSTALL_HINT) from None
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise BackendError(f"CuPy is installed but no usable GPU was found ({e}). "
                           + CUPY_INSTALL_HINT) from None
    if n_gpus == 0:
        raise BackendError("CuPy is installed but no GPU is visible. " + CUPY_INSTALL_HINT)
    _cupy = cupy
    return cupy


def cupy_available():
    """True where CuPy imports and sees a GPU (used by tests to skip)."""
    try:
        _load_cupy()
        return True
    except BackendError:
        return False


def use_backend(name):
    """Choose where new tensors live: backend "numpy" (device "cpu") or "cupy" (device "gpu")."""
    global _default
    if name not in BACKENDS:
        hint = (f" ({name!r} is a device: tensor.to({name!r}) moves one tensor)"
                if name in DEVICES.values() else "")
        raise ValueError(f"use_backend: unknown backend {name!r}; expected one of {BACKENDS}{hint}")
    if name == "cupy":
        _load_cupy()
    _default = name


def get_backend():
    return _default


def default_module():
    """The array module new tensors are created with."""
    return _load_cupy() if _default == "cupy" else np


def get_array_module(*arrays):
    """numpy or cupy, whichever holds the given arrays (numpy for plain values)."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def module_name(xp):
    """"numpy" or "cupy": the backend name of an array module."""
    return "numpy" if xp is np else "cupy"


def device_of(array):
    """"cpu" for NumPy arrays and Python values, "gpu" for CuPy arrays."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return "gpu"
    return "cpu"


def module_for(device):
    """The array module of a device: numpy for "cpu", cupy for "gpu"."""
    if device == "cpu":
        return np
    if device == "gpu":
        return _load_cupy()
    hint = (f" ({device!r} names a backend: devices are 'cpu' and 'gpu', backends 'numpy' and "
            "'cupy', chosen with md.use_backend)") if device in BACKENDS else ""
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'gpu'{hint}")


def to_device(array, device):
    """Copy ``array`` to "cpu" or "gpu" (no copy when it is already there)."""
    xp = module_for(device)
    if xp is np:
        return as_numpy(array)
    return xp.asarray(array)


def as_numpy(array):
    """A NumPy array, copied from the GPU where needed."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def check_same_device(op_name, *arrays):
    """Raise DeviceMismatchError naming the op and both devices."""
    devices = [device_of(a) for a in arrays]
    if len(set(devices)) > 1:
        raise DeviceMismatchError(
            f"{op_name}: inputs live on different devices ({', '.join(devices)}); "
            "move them together first with .to('cpu') or .to('gpu')")
    return devices[0] if devices else "cpu"


# The random generator behind init, shuffling and dropout (see manual_seed).
_rng = np.random.default_rng()


def manual_seed(seed):
    """Make init, data shuffling and dropout reproducible run to run."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng():
    return _rng


_env = os.environ.get("MINIDL_BACKEND")
if _env:
    use_backend(_env.lower())


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (np.add.at)."""
    if device_of(target) == "gpu":
        import cupyx
        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)
