"""Modules and layers: ``md.nn.Linear``, ``md.nn.Conv2d``, ``md.nn.BatchNorm2d``, ..."""
from .. import functional  # noqa: F401  (PyTorch's torch.nn.functional: md.nn.functional is md.functional)
from . import init
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU,
                     Sigmoid, Tanh)
from .module import Module, Parameter, Sequential
from .split import SplitBatch
from .norm import (BatchNorm, BatchNorm1d, BatchNorm2d, GroupNorm, Identity, InstanceNorm2d,
                   LayerNorm, RadiusSchedule, SparseSwitchNorm1d, SparseSwitchNorm2d, SwitchNorm1d,
                   SwitchNorm2d, norm_factory)
from ..names import module_getattr

__getattr__ = module_getattr("minidl.nn")    # a PyTorch layer minidl lacks: say so, name minidl's
