"""minidl: a from-scratch tensor and autograd engine for learning how deep
networks train, with Batch Normalization derived by hand and proven."""
from . import data, functional, models, nn, ops, optim
from .backend import (BackendError, DeviceMismatchError, cupy_available, get_backend, get_num_threads,
                      manual_seed, set_num_threads, use_backend)
from .serialize import load, save
from .gradcheck import GradcheckError, gradcheck, numerical_grad
from .graph import draw_graph, step_through, steps_table
from .tensor import BackwardStep, Function, Tensor, backward_steps, detect_anomaly, enable_grad, frozen_state, no_grad

__version__ = "0.1.0"
