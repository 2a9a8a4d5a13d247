"""cupyx in the stand-in: only what minidl might touch."""
import warnings


def scatter_add(a, slices, value):
    warnings.warn("cupyx.scatter_add is deprecated. Please use cupy.add.at instead.", DeprecationWarning,
                  stacklevel=2)
    import cupy
    cupy.add.at(a, slices, value)
