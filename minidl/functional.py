"""The functional namespace, ``import minidl.functional as F``: every op that is
not (only) a Tensor method, and the functional forms of the layers."""
from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all

__all__ = list(_ops_all)
