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


CTK_HINT = ("CuPy is installed but cannot compile its kernels: the CUDA libraries are missing. "
            "Install the wheel that brings them: `pip install \"cupy-cuda12x[ctk]\"` (or "
            "`pip install \"minidl[gpu]\"`), or install the CUDA toolkit.")


def _load_cupy():
    """Import CuPy and prove it can run one small kernel; three failures, three fixes."""
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
        raise BackendError(f"CuPy is installed but no usable GPU or driver was found ({e}). "
                           "Check `nvidia-smi`; on a machine without an NVIDIA GPU use the numpy "
                           "backend.") from None
    if n_gpus == 0:
        raise BackendError("CuPy is installed but no GPU is visible (check `nvidia-smi` and "
                           "CUDA_VISIBLE_DEVICES).")
    try:
        (cupy.arange(3, dtype=cupy.float32) * 2).sum().item()     # compiles and runs a kernel
    except Exception as e:
        raise BackendError(f"{CTK_HINT} ({type(e).__name__}: {e})") from None
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
    """The array module new tensors are created with. With MINIDL_BACKEND=cupy
    where CuPy cannot run, this is where the error says why (import never fails)."""
    if _default not in BACKENDS:
        raise BackendError(f"MINIDL_BACKEND={_default!r}: expected one of {BACKENDS}")
    return _load_cupy() if _default == "cupy" else np


def default_device():
    """"cpu" or "gpu": where new tensors are made (the current backend's device)."""
    return "cpu" if default_module() is np else "gpu"


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


def canonical_device(device):
    """"cpu" or "gpu"; PyTorch's "cuda" (or "cuda:0") is accepted as "gpu"."""
    return "gpu" if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")) else device


def module_for(device):
    """The array module of a device: numpy for "cpu", cupy for "gpu" (alias "cuda")."""
    device = canonical_device(device)
    if device == "cpu":
        return np
    if device == "gpu":
        return _load_cupy()
    hint = (f" ({device!r} names a backend: devices are 'cpu' and 'gpu', backends 'numpy' and "
            "'cupy', chosen with md.use_backend)") if device in BACKENDS else ""
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'gpu' (or PyTorch's 'cuda'){hint}")


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


_seed = None
_device_rng = None


def manual_seed(seed):
    """Make init, data shuffling and dropout reproducible run to run. Dropout on
    the GPU draws its masks on the device from CuPy's generator seeded with the
    same seed: reproducible too, but a different stream from the CPU's."""
    global _rng, _seed, _device_rng
    _rng, _seed, _device_rng = np.random.default_rng(seed), seed, None


def rng():
    return _rng


def device_rng():
    """CuPy's generator, seeded by manual_seed (drawn on the device: no copies)."""
    global _device_rng
    if _device_rng is None:
        seed = None if _seed is None else int(np.random.SeedSequence(_seed).generate_state(1)[0])
        _device_rng = _load_cupy().random.default_rng(seed)
    return _device_rng


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (add.at on either device)."""
    get_array_module(target).add.at(target, index, values)


def synchronize():
    """Wait for the GPU to finish its queued work (a no-op on the CPU): timings need it."""
    if _cupy is not None:
        _cupy.cuda.runtime.deviceSynchronize()


# ---- checks that cost no synchronization -----------------------------------
# Reading a GPU value on the host (bool(), float(), .item()) waits for the device.
# A check that needs a value (is the loss finite? are the targets in range?) is
# made on the device and queued; check_pending() reads all of them at once, one
# synchronization per training step (the optimizer's step calls it). On the CPU
# nothing waits, so every check raises at once, where it was made.
_pending = []


def defer_check(failed, error, message):
    """Raise ``error(message)`` if ``failed`` (a 0-d boolean array) is true: now
    on the CPU, at the next ``check_pending()`` on the GPU."""
    if device_of(failed) == "cpu":
        if bool(failed):
            raise error(message)
    else:
        _pending.append((failed, error, message))
        if len(_pending) > 1024:          # nobody calls step(): do not grow without bound
            check_pending()


def check_pending():
    """Read every queued check in one synchronization; raise the first that failed."""
    if not _pending:
        return
    queued = list(_pending)
    _pending.clear()
    xp = get_array_module(queued[0][0])
    if bool(xp.stack([f for f, _, _ in queued]).any()):
        for failed, error, message in queued:
            if bool(failed):
                raise error(message)


_env = os.environ.get("MINIDL_BACKEND", "").lower()
if _env:
    _default = _env      # checked, and CuPy loaded, on first use: importing minidl never fails
