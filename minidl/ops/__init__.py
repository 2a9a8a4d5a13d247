"""All ops, and the one table that wires them onto Tensor as operators and methods."""
from ..tensor import Tensor
from .conv import (avg_pool2d, avg_pool2d_reference, conv2d, conv2d_reference, max_pool2d,
                   max_pool2d_reference)
from .elementwise import (abs, add, clip, div, dropout, exp, log, maximum, mul, neg, pow, rdiv, relu,
                          rsub, sigmoid, sqrt, sub, tanh, where)
from .loss import cross_entropy, log_softmax, mse_loss, softmax
from .matmul import linear, matmul
from .norm import batch_norm, group_norm, instance_norm, layer_norm, normalize
from .reduce import max, mean, min, sum, var
from .shape import (astype, broadcast_to, concatenate, flatten, getitem, pad, reshape, stack,
                    to_device, transpose)
from .sparsemax import sparsemax, sparsestmax


# The operator table: every operator and method of Tensor, in one place.
Tensor.__add__ = add
Tensor.__radd__ = lambda a, b: add(b, a)
Tensor.__sub__ = sub
Tensor.__rsub__ = rsub
Tensor.__mul__ = mul
Tensor.__rmul__ = lambda a, b: mul(b, a)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = rdiv
Tensor.__pow__ = pow
Tensor.__neg__ = neg
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda a, b: matmul(b, a)
Tensor.__getitem__ = getitem
Tensor.exp = exp
Tensor.log = log
Tensor.sqrt = sqrt
Tensor.abs = abs
Tensor.clip = clip
Tensor.relu = relu
Tensor.sigmoid = sigmoid
Tensor.tanh = tanh
Tensor.sum = sum
Tensor.mean = mean
Tensor.var = var
Tensor.max = max
Tensor.min = min
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.T = property(lambda x: transpose(x))
Tensor.flatten = flatten
Tensor.broadcast_to = broadcast_to
Tensor.softmax = softmax
Tensor.log_softmax = log_softmax
Tensor.astype = astype
Tensor.to = to_device          # a copy on "cpu" or "gpu"; gradients flow back to this tensor

__all__ = ["abs", "add", "astype", "avg_pool2d", "avg_pool2d_reference", "conv2d",
           "conv2d_reference", "dropout", "linear", "batch_norm", "group_norm", "instance_norm",
           "layer_norm", "normalize", "max_pool2d", "max_pool2d_reference", "broadcast_to", "clip", "concatenate", "cross_entropy", "div", "exp",
           "flatten", "getitem", "log", "log_softmax", "matmul", "max", "maximum", "mean", "min",
           "mse_loss", "mul", "neg", "pad", "pow", "relu", "reshape", "sigmoid", "softmax",
           "sparsemax", "sparsestmax", "sqrt", "stack", "sub", "sum", "tanh", "transpose", "var", "where"]
