"""All ops, and the one table that wires them onto Tensor as operators and methods."""
from ..names import missing_tensor_attribute
from ..tensor import Tensor
from .conv import (avg_pool2d, avg_pool2d_reference, conv2d, conv2d_reference, max_pool2d,
                   max_pool2d_reference)
from .creation import (arange, eye, full, full_like, linspace, ones, ones_like, rand, randn, tensor, zeros,
                       zeros_like)
from .elementwise import (abs, add, clamp, clip, div, dropout, elu, eq, exp, ge, gelu, gt, le, leaky_relu, log,
                          lt, masked_fill, maximum, minimum, mul, ne, neg, pow, rdiv, relu, rsub, sigmoid, silu,
                          softplus, sqrt, sub, tanh, where)
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, log_softmax, mse_loss,
                   nll_loss, one_hot, softmax)
from .matmul import linear, matmul
from .norm import batch_norm, group_norm, instance_norm, layer_norm, moments, normalize
from .reduce import argmax, argmin, max, mean, min, prod, std, sum, var
from .shape import (astype, broadcast_to, cat, concatenate, expand, flatten, getitem, matrix_transpose, pad,
                    permute, repeat, reshape, squeeze, stack, swapaxes, to, to_device, transpose, unsqueeze, view)
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
# comparisons give boolean tensors outside the graph; a Tensor still hashes by identity
Tensor.__gt__, Tensor.__ge__, Tensor.__lt__, Tensor.__le__ = gt, ge, lt, le
Tensor.__eq__ = lambda a, b: NotImplemented if b is None else eq(a, b)   # x == None: Python's answer
Tensor.__ne__ = lambda a, b: NotImplemented if b is None else ne(a, b)
Tensor.__hash__ = object.__hash__
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
Tensor.std = std
Tensor.prod = prod
Tensor.argmax = argmax
Tensor.argmin = argmin
Tensor.squeeze = squeeze
Tensor.unsqueeze = unsqueeze
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.T = property(lambda x: transpose(x))
Tensor.flatten = flatten
Tensor.broadcast_to = broadcast_to
Tensor.softmax = softmax
Tensor.log_softmax = log_softmax
Tensor.astype = astype
Tensor.to = to                 # PyTorch's: a device, a dtype or both; gradients flow back to this tensor
# PyTorch's names for the same ops, with PyTorch's meaning
Tensor.view = view
Tensor.permute = permute
Tensor.expand = expand
Tensor.repeat = repeat         # PyTorch's: tiles the whole tensor (np.tile), not NumPy's repeat of each value
Tensor.swapaxes = swapaxes
Tensor.mT = property(matrix_transpose)
Tensor.clamp = clamp
Tensor.masked_fill = masked_fill
Tensor.float = lambda x: to(x, "float32")
Tensor.double = lambda x: to(x, "float64")
Tensor.long = lambda x: to(x, "int64")
Tensor.int = lambda x: to(x, "int32")
Tensor.bool = lambda x: to(x, "bool")
Tensor.__getattr__ = missing_tensor_attribute   # a PyTorch or NumPy name minidl lacks: say so, name minidl's

__all__ = ["abs", "add", "arange", "argmax", "argmin", "astype", "avg_pool2d", "avg_pool2d_reference",
           "batch_norm", "binary_cross_entropy", "binary_cross_entropy_with_logits", "broadcast_to", "cat",
           "clamp", "clip", "concatenate", "conv2d", "conv2d_reference", "cross_entropy", "div", "dropout", "elu",
           "eq", "exp", "expand", "eye", "flatten", "full", "full_like", "ge", "gelu", "getitem", "group_norm",
           "gt", "instance_norm", "layer_norm", "le", "leaky_relu", "linear", "linspace", "log", "log_softmax",
           "lt", "masked_fill", "matmul", "matrix_transpose", "max", "max_pool2d", "max_pool2d_reference",
           "maximum", "mean", "min", "minimum", "moments", "mse_loss", "mul", "ne", "neg", "nll_loss",
           "normalize", "one_hot", "ones", "ones_like", "pad", "permute", "pow", "prod", "rand", "randn",
           "relu", "repeat", "reshape", "sigmoid", "silu", "softmax", "softplus", "sparsemax", "sparsestmax",
           "sqrt", "squeeze", "stack", "std", "sub", "sum", "swapaxes", "tanh", "tensor", "to", "transpose",
           "unsqueeze", "var", "view", "where", "zeros", "zeros_like"]
