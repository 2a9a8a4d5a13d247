"""PyTorch's dtype names, as NumPy dtypes, so ``x.to(torch.float64)`` and
``torch.zeros(3, dtype=torch.long)`` run with ``import minidl as torch``. They
are ``md.float32``, ``md.long``, ...; a NumPy dtype or its name works wherever
one of these does. (A module of its own: the names hide Python's float, int
and bool.)"""
import numpy as np

float32 = float = np.dtype(np.float32)          # noqa: A001  (PyTorch's names)
float64 = double = np.dtype(np.float64)
float16 = half = np.dtype(np.float16)
int64 = long = np.dtype(np.int64)
int32 = int = np.dtype(np.int32)                # noqa: A001
int16 = short = np.dtype(np.int16)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
bool = np.dtype(np.bool_)                       # noqa: A001

__all__ = ["bool", "double", "float", "float16", "float32", "float64", "half", "int", "int16", "int32",
           "int64", "int8", "long", "short", "uint8"]
