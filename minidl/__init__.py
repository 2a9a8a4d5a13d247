"""minidl: a from-scratch tensor and autograd engine for learning how deep
networks train, with Batch Normalization derived by hand and proven.

PyTorch's everyday names work with PyTorch's meaning (``import minidl as
torch`` runs d2l's from-scratch code): ``md.tensor``, ``md.zeros``, ``md.cat``,
``md.sqrt``, ``md.float64``, ...; README "Differences from PyTorch" lists the rest."""
from . import autograd, data, functional, models, nn, ops, optim
from .backend import (BackendError, DeviceMismatchError, cupy_available, get_backend, get_num_threads,
                      manual_seed, set_num_threads, use_backend)
from .errors import InputError, OutOfRangeError
from .serialize import load, save
from .gradcheck import GradcheckError, gradcheck, numerical_grad
from .graph import draw_graph, step_through, steps_table
from .tensor import (BackwardStep, Function, Tensor, backward_steps, detect_anomaly, enable_grad, frozen_state,
                     is_grad_enabled, no_grad)
from .names import module_getattr as _module_getattr
# PyTorch's names at module level: dtypes, making tensors, and the functions of tensors.
# `tensor` is PyTorch's function from here on: the module minidl/tensor.py stays importable
# by its full name (from minidl.tensor import Tensor), as every import in minidl spells it.
from .ops.dtypes import (bool, double, float, float16, float32, float64, half, int, int8, int16, int32,  # noqa: A004
                         int64, long, short, uint8)
from .ops.creation import (arange, eye, full, full_like, linspace, ones, ones_like, rand, randn, tensor, zeros,
                           zeros_like)
from .ops.elementwise import (abs, add, clamp, clip, div, eq, exp, ge, gt, le, log, lt, masked_fill,  # noqa: A004
                              maximum, minimum, mul, ne, neg, pow, relu, sigmoid, sqrt, sub, tanh, where)
from .ops.loss import log_softmax, softmax
from .ops.matmul import matmul
from .ops.reduce import argmax, argmin, max, mean, min, prod, std, sum, var  # noqa: A004
from .ops.shape import (broadcast_to, cat, expand, flatten, permute, repeat, reshape, squeeze, stack, swapaxes,
                        transpose, unsqueeze, view)

__getattr__ = _module_getattr("minidl")    # a PyTorch or NumPy name minidl lacks: say so, name minidl's

__version__ = "0.1.0"
