"""cupy.random in the stand-in: default_rng draws on the "device" (its own stream,
not NumPy's, as on a real GPU)."""
import numpy as _np


class Generator:
    def __init__(self, seed=None):
        # a different stream from NumPy's generator with the same seed, as CuPy's is
        self._g = _np.random.Generator(_np.random.Philox(seed))

    def _wrap(self, a):
        from . import ndarray
        return ndarray(_np.asarray(a))

    def random(self, size=None, dtype=_np.float64, out=None):
        return self._wrap(self._g.random(size, dtype=dtype))

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        return self._wrap(self._g.standard_normal(size, dtype=dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        return self._wrap(self._g.uniform(low, high, size).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        return self._wrap(self._g.integers(low, high, size, dtype=dtype, endpoint=endpoint))


def default_rng(seed=None):
    return Generator(seed)
