"""The functional namespace, ``import minidl.functional as F``: every op that is
not (only) a Tensor method, and the functional forms of the layers. Each name is
imported from the file that defines it, so ``F.conv2d`` leads to ``ops/conv.py``."""
from .names import module_getattr
from .ops.conv import avg_pool2d, avg_pool2d_reference, conv2d, conv2d_reference, max_pool2d, max_pool2d_reference
from .ops.elementwise import (abs, add, clamp, clip, div, dropout, elu, eq, exp, ge, gelu, gt, le,  # noqa: A004
                              leaky_relu, log, lt, masked_fill, maximum, minimum, mul, ne, neg, pow, rdiv, relu,
                              rsub, sigmoid, silu, softplus, sqrt, sub, tanh, where)
from .ops.loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, log_softmax,
                       mse_loss, nll_loss, one_hot, softmax)
from .ops.matmul import linear, matmul
from .ops.norm import batch_norm, group_norm, instance_norm, layer_norm, moments, normalize
from .ops.reduce import argmax, argmin, max, mean, min, prod, std, sum, var  # noqa: A004
from .ops.shape import (astype, broadcast_to, concatenate, expand, flatten, getitem, matrix_transpose, pad,
                        permute, repeat, reshape, squeeze, stack, swapaxes, to, transpose, unsqueeze, view)
from .ops.sparsemax import sparsemax, sparsestmax

__all__ = ["abs", "add", "argmax", "argmin", "astype", "avg_pool2d", "avg_pool2d_reference", "batch_norm",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "broadcast_to", "clamp", "clip",
           "concatenate", "conv2d", "conv2d_reference", "cross_entropy", "div", "dropout", "elu", "eq", "exp",
           "expand", "flatten", "ge", "gelu", "getitem", "group_norm", "gt", "instance_norm", "layer_norm", "le",
           "leaky_relu", "linear", "log", "log_softmax", "lt", "masked_fill", "matmul", "matrix_transpose", "max",
           "max_pool2d", "max_pool2d_reference", "maximum", "mean", "min", "minimum", "moments", "mse_loss",
           "mul", "ne", "neg", "nll_loss", "normalize", "one_hot", "pad", "permute", "pow", "prod", "rdiv",
           "relu", "repeat", "reshape", "rsub", "sigmoid", "silu", "softmax", "softplus", "sparsemax",
           "sparsestmax", "sqrt", "squeeze", "stack", "std", "sub", "sum", "swapaxes", "tanh", "to",
           "transpose", "unsqueeze", "var", "view", "where"]

__getattr__ = module_getattr("minidl.functional")   # a PyTorch name minidl lacks: say so, name minidl's
