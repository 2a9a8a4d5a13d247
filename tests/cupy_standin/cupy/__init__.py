"""A CuPy stand-in for the tests: NumPy underneath, CuPy's rules on top.

Machines without a GPU cannot run CuPy, so minidl's GPU path is proven
against this module, importable as ``cupy`` when ``tests/cupy_standin`` is on
``sys.path`` (tests/conftest.py puts it there under ``MINIDL_BACKEND=cupy``
where no real GPU is visible). It is worth having only because it refuses
what CuPy refuses:

- its ``ndarray`` is not a NumPy array, and converting one implicitly
  (``np.asarray(x)``, ``__array__``) raises TypeError, as CuPy's does;
- its functions, ufuncs and operators reject NumPy-array operands; only
  ``asarray``/``array`` take host data (a host-to-device copy, counted);
- assigning a NumPy array into a device slice raises;
- reductions return 0-d device arrays, never Python or NumPy scalars;
- ``.data`` is a memory pointer, not a buffer;
- an out-of-range integer *array* index wraps around instead of raising
  (CuPy does not bounds-check on the device);
- every device-to-host synchronization (``.item()``, ``bool()``, ``float()``,
  ``int()``, ``.get()``, ``.tolist()``, ``asnumpy``, ``repr``) and every
  host-to-device copy is counted in ``cupy.counters``;
- it has only the names the real CuPy 14 has (``names.txt``, written from the
  real wheel by ``make_names.py``): any other name raises AttributeError.

Test-only: minidl never imports it directly.
"""
import os

import numpy as _np

_HERE = os.path.dirname(__file__)
__version__ = "14.stand-in"
counters = {"sync": 0, "h2d": 0}


def _load_names():
    names = {}
    with open(os.path.join(_HERE, "..", "names.txt")) as f:
        for line in f:
            if not line.startswith("#"):
                space, name = line.strip().split(": ")
                names.setdefault(space, set()).add(name)
    return names


NAMES = _load_names()


def reset_counters():
    counters["sync"] = counters["h2d"] = 0


def _refuse_host(what):
    raise TypeError(f"Unsupported type {type(what)}: a NumPy array cannot be an operand of a CuPy "
                    "operation (move it with cupy.asarray first)")


def _unwrap(x):
    """Arguments going into NumPy: device arrays lose their wrapper, host arrays are refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        _refuse_host(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x):
    """Results coming out of NumPy: arrays and scalars become device arrays."""
    if isinstance(x, _np.ndarray):
        return ndarray(x)
    if isinstance(x, _np.generic):
        return ndarray(_np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _wrap_index(index, shape):
    """Device index arrays unwrap; out-of-range integer arrays wrap around, as on the GPU."""
    single = not isinstance(index, tuple)
    parts = (index,) if single else index
    out, axis = [], 0
    for part in parts:
        if isinstance(part, ndarray):
            part = part._a
        elif isinstance(part, _np.ndarray):
            counters["h2d"] += 1
        if part is Ellipsis:
            axis = None
        if isinstance(part, _np.ndarray) and part.dtype.kind in "iu" and axis is not None \
                and axis < len(shape) and shape[axis] > 0:
            part = part % shape[axis]
        out.append(part)
        if axis is not None and part is not None:
            axis += 1 if not (isinstance(part, _np.ndarray) and part.dtype == bool) else part.ndim
    return out[0] if single else tuple(out)


class MemoryPointer:
    """What CuPy's ``ndarray.data`` is: a device pointer, not a buffer."""

    def __init__(self, array):
        self.ptr = id(array)

    def __repr__(self):
        return f"<cupy.cuda.MemoryPointer 0x{self.ptr:x}>"


def _binary(name, reflected=False):
    op = getattr(_np.ndarray, name)

    def method(self, other):
        if isinstance(other, _np.ndarray):
            _refuse_host(other)
        if not isinstance(other, (ndarray, int, float, complex, bool, _np.generic)):
            return NotImplemented        # a Tensor, say: let it handle the operation
        return _wrap(op(self._a, _unwrap(other)))
    method.__name__ = name
    return method


def _inplace(name):
    op = getattr(_np.ndarray, name)

    def method(self, other):
        if isinstance(other, _np.ndarray):
            _refuse_host(other)
        if not isinstance(other, (ndarray, int, float, complex, bool, _np.generic)):
            return NotImplemented
        op(self._a, _unwrap(other))
        return self
    method.__name__ = name
    return method


def _sync(self):
    counters["sync"] += 1
    return self._a


class ndarray:  # noqa: N801  (CuPy's name)
    __array_priority__ = 100

    def __init__(self, a):
        # NumPy turns 0-d results into scalars (-np.array(1.0) is a float64); CuPy keeps arrays
        self._a = a if isinstance(a, _np.ndarray) else _np.asarray(a)

    # ---- what CuPy refuses --------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for x in list(inputs) + list(kwargs.get("out", ()) or ()):
            if isinstance(x, _np.ndarray):
                _refuse_host(x)
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*[_unwrap(x) for x in inputs], **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if name not in NAMES["cupy"]:
            return NotImplemented
        return globals()["__getattr__"](name)(*args, **kwargs)

    @property
    def data(self):
        return MemoryPointer(self._a)

    # ---- synchronizations ---------------------------------------------------
    def item(self):
        return _sync(self).item()

    def tolist(self):
        return _sync(self).tolist()

    def get(self, stream=None, order="C", out=None):
        return _sync(self).copy()

    def __bool__(self):
        return bool(_sync(self))

    def __float__(self):
        return float(_sync(self))

    def __int__(self):
        return int(_sync(self))

    def __repr__(self):
        return repr(_sync(self)).replace("array(", "cupy_standin_array(", 1)

    __str__ = __repr__

    # ---- plain metadata and views ------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: None if self._a.base is None else ndarray(self._a.base))
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: "cuda:0 (stand-in)")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __getitem__(self, index):
        return _wrap(self._a[_wrap_index(index, self._a.shape)])

    def __setitem__(self, index, value):
        if isinstance(value, _np.ndarray):
            _refuse_host(value)
        self._a[_wrap_index(index, self._a.shape)] = _unwrap(value)

    def __getattr__(self, name):
        if name.startswith("__") or name not in NAMES["cupy.ndarray"]:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    def __neg__(self):
        return ndarray(-self._a)

    def __pos__(self):
        return ndarray(+self._a)

    def __abs__(self):
        return ndarray(abs(self._a))

    def __invert__(self):
        return ndarray(~self._a)

    __hash__ = None


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))


class ufunc:  # noqa: N801
    """A CuPy ufunc: NumPy's, refusing host operands, with ``at`` and ``reduce``."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__

    def __call__(self, *args, **kwargs):
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        return _wrap(self._u(*_unwrap(args), **kwargs))

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"{self.__name__}.at: the target must be a cupy.ndarray, got {type(a)}")
        index = _wrap_index(indices, a.shape)
        self._u.at(a._a, index, *([] if b is None else [_unwrap(b)]))

    def reduce(self, a, *args, **kwargs):
        return _wrap(self._u.reduce(_unwrap(a), *args, **kwargs))

    def __getattr__(self, name):
        if name not in NAMES["cupy.ufunc"]:
            raise AttributeError(f"'cupy.ufunc' object has no attribute {name!r}")
        return getattr(self._u, name)


def asarray(a, dtype=None, order=None, *, blocking=False):
    """Host data becomes a device array (a counted copy); device arrays pass through."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    counters["h2d"] += 1
    return ndarray(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        return ndarray(_np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    counters["h2d"] += 1
    return ndarray(_np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return _sync(a).copy()
    return _np.asarray(a)


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def __getattr__(name):
    if name in ("cuda", "lib", "random"):            # our own submodules, not NumPy's
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    if name not in NAMES["cupy"]:
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (real CuPy 14 has none either)")
    value = getattr(_np, name)
    if isinstance(value, _np.ufunc):
        wrapped = ufunc(value)
    elif callable(value) and not isinstance(value, type):
        def wrapped(*args, **kwargs):
            return _wrap(value(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        wrapped.__name__ = name
    else:
        wrapped = value              # dtypes, constants (float32, inf, newaxis)
    globals()[name] = wrapped
    return wrapped


import importlib as _importlib  # noqa: E402

for _sub in ("cuda", "lib", "random"):
    _importlib.import_module(f"{__name__}.{_sub}")