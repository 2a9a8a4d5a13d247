"""The exception classes a mistake raises, so that both a NumPy user's and a
PyTorch user's ``except`` catch it.

NumPy says ``ValueError`` for a shape, an axis or a value that does not fit;
PyTorch says ``RuntimeError`` for the same shapes and values, and ``IndexError``
for an axis out of range. minidl's error is an instance of both (NumPy's own
``AxisError`` derives from ValueError and IndexError for the same reason)."""


class InputError(ValueError, RuntimeError):
    """An input whose shape or values do not fit the op: ValueError as NumPy, RuntimeError as PyTorch."""


class OutOfRangeError(ValueError, IndexError):
    """An axis (PyTorch: dim) or a class index out of range: ValueError as NumPy, IndexError as PyTorch."""
