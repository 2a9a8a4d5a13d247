"""What minidl says when code asks for a name it lacks: a PyTorch or NumPy name
(``x.cumsum``, ``md.from_numpy``, ``nn.LazyLinear``) gets an AttributeError that
says minidl has no such op and, where minidl does the job under another
spelling, names it. Python's own suggestion of a near name ("Did you mean")
still follows, since the error carries the name and the object."""

# PyTorch's and NumPy's names -> minidl's spelling, for a Tensor x
TENSOR = {
    "grad_fn": "x.creator (the op that made x; None for a leaf)",
    "clone": "x + 0 (a copy in the graph) or md.tensor(x) (a new leaf)",
    "copy": "md.tensor(x) (a copy) or x.detach() (the same values, outside the graph)",
    "contiguous": "nothing: every minidl tensor can be reshaped and viewed; drop the call",
    "cpu": "x.to('cpu')",
    "cuda": "x.to('gpu')",
    "is_cuda": "x.device == 'gpu'",
    "get_device": "x.device ('cpu' or 'gpu')",
    "tolist": "x.numpy().tolist()",
    "ravel": "x.flatten()",
    "ndimension": "x.ndim or x.dim()",
    "nelement": "x.numel() or x.size",
    "type": "x.dtype to read it, x.to(dtype) to cast",
    "type_as": "x.to(other) (other's dtype and device)",
    "half": "x.to('float16')",
    "square": "x ** 2",
    "rsqrt": "x ** -0.5",
    "reciprocal": "1 / x",
    "neg": "-x",
    "add": "x + y",
    "sub": "x - y",
    "mul": "x * y",
    "div": "x / y",
    "pow": "x ** c",
    "mm": "x @ y",
    "bmm": "x @ y",
    "dot": "x @ y",
    "matmul": "x @ y",
    "eq": "x == y", "ne": "x != y", "gt": "x > y", "ge": "x >= y", "lt": "x < y", "le": "x <= y",
    "norm": "((x ** 2).sum()) ** 0.5",
    "clamp_min": "x.clamp(min=v)",
    "clamp_max": "x.clamp(max=v)",
    "maximum": "md.maximum(x, y)",
    "minimum": "md.minimum(x, y)",
    "where": "md.where(condition, x, y)",
    "flip": "x[::-1] (one axis) with slices",
    "narrow": "a slice, x[:, start:start + length]",
    "index_select": "x[indices] (an integer index array)",
    "unflatten": "x.reshape(...)",
    "swapdims": "x.swapaxes(a, b) or x.transpose(a, b)",
    "movedim": "x.permute(...)",
    "tile": "x.repeat(...) (PyTorch's repeat tiles)",
    "repeat_interleave": "x[:, None].expand(-1, n).flatten() (each value of a vector n times)",
    "new_zeros": "md.zeros(size, dtype=x.dtype, device=x.device)",
    "new_ones": "md.ones(size, dtype=x.dtype, device=x.device)",
    "new_tensor": "md.tensor(data, dtype=x.dtype, device=x.device)",
    "softplus": "md.functional.softplus(x)",
    "gelu": "md.functional.gelu(x)",
    "silu": "md.functional.silu(x)",
    "elu": "md.functional.elu(x)",
    "leaky_relu": "md.functional.leaky_relu(x)",
    "all": "(x != 0).numpy().all() (an array, outside the graph)",
    "any": "(x != 0).numpy().any() (an array, outside the graph)",
    "element_size": "x.dtype.itemsize",
    "itemsize": "x.dtype.itemsize",
    "nbytes": "x.data.nbytes",
}

# torch.* and numpy.* -> minidl's spelling, for md.NAME
MODULE = {
    "from_numpy": "md.tensor(array) (a copy: minidl never shares a caller's array)",
    "as_tensor": "md.tensor(data)",
    "array": "md.tensor(data)",
    "asarray": "md.tensor(data)",
    "empty": "md.zeros(...) (minidl has no uninitialized memory)",
    "empty_like": "md.zeros_like(x)",
    "rand_like": "md.rand(*x.shape, dtype=x.dtype)",
    "randn_like": "md.randn(*x.shape, dtype=x.dtype)",
    "randint": "md.tensor(np.random.default_rng(seed).integers(low, high, size))",
    "concatenate": "md.cat(tensors, dim)",
    "concat": "md.cat(tensors, dim)",
    "mm": "a @ b", "bmm": "a @ b", "dot": "a @ b",
    "square": "x ** 2",
    "rsqrt": "x ** -0.5",
    "is_tensor": "isinstance(x, md.Tensor)",
    "numel": "x.numel()",
    "set_grad_enabled": "with md.no_grad(): ... (off) or with md.enable_grad(): ... (on)",
    "inference_mode": "md.no_grad()",
    "device": "a string: devices are 'cpu' and 'gpu' (PyTorch's 'cuda' is accepted as 'gpu')",
    "cuda": "md.cupy_available() to ask, md.use_backend('cupy') or x.to('gpu') to use the GPU",
    "Size": "a tuple: x.shape, x.size()",
    "tile": "x.repeat(...) (PyTorch's repeat tiles)",
    "newaxis": "None, as in x[:, None]",
    "softplus": "md.functional.softplus(x)",
    "linear": "md.functional.linear(x, weight, bias)",
    "conv2d": "md.functional.conv2d(x, weight, bias, stride, padding)",
    "dropout": "md.functional.dropout(x, p, training)",
    "utils": "md.data (Dataset, DataLoader)",
}

# torch.nn.* -> minidl's spelling, for md.nn.NAME
NN = {
    "LazyLinear": "nn.Linear(in_features, out_features): minidl makes a layer's weights when it is built, "
                  "so it needs the input's size",
    "LazyConv2d": "nn.Conv2d(in_channels, out_channels, kernel_size): minidl makes a layer's weights when "
                  "it is built, so it needs the input's channels",
    "CrossEntropyLoss": "md.functional.cross_entropy(logits, targets), a function",
    "MSELoss": "md.functional.mse_loss(pred, target), a function",
    "NLLLoss": "md.functional.nll_loss(log_probs, targets), a function",
    "BCELoss": "md.functional.binary_cross_entropy(p, target), a function",
    "BCEWithLogitsLoss": "md.functional.binary_cross_entropy_with_logits(logits, target), a function",
    "Softmax": "x.softmax(axis) (a function, no layer)",
    "LogSoftmax": "x.log_softmax(axis) (a function, no layer)",
    "AdaptiveAvgPool2d": "nn.GlobalAvgPool2d() for output size 1",
    "Parameter": "md.nn.Parameter",
    "DataParallel": "nn.SplitBatch(model, pieces): the batch's pieces in threads, BatchNorm over the "
                    "whole batch (PyTorch's DataParallel normalizes each piece by itself)",
    "SyncBatchNorm": "nn.BatchNorm2d inside nn.SplitBatch(model, pieces), which sums its statistics "
                     "over the pieces",
}

# torch.nn.functional.* -> minidl's spelling, for md.functional.NAME
FUNCTIONAL = {
    "adaptive_avg_pool2d": "x.mean(axis=(2, 3), keepdims=True) for output size 1",
    "softmin": "(-x).softmax(axis)",
    "cat": "md.cat(tensors, dim)",
}

TABLES = {"Tensor": TENSOR, "minidl": MODULE, "minidl.nn": NN, "minidl.functional": FUNCTIONAL}


def missing(where, name, obj=None):
    """The AttributeError for ``name``, missing from ``where`` ("Tensor", "minidl",
    "minidl.nn", "minidl.functional")."""
    spelling = TABLES[where].get(name)
    owner = "minidl's Tensor" if where == "Tensor" else f"module {where!r}"
    if spelling is not None:
        text = f"{owner} has no attribute {name!r}: minidl has no such op; minidl's spelling: {spelling}"
    elif name.endswith("_") and where == "Tensor":
        text = (f"{owner} has no attribute {name!r}: minidl has no such op. Its in-place methods are "
                "zero_() and requires_grad_(); compute a new tensor instead (x = x + y), or change "
                "x.data under md.no_grad()")
    else:
        text = (f"{owner} has no attribute {name!r}: minidl has no such op (dir() lists what it has: "
                f"{'dir(md.Tensor)' if where == 'Tensor' else f'dir({where})'})")
    return AttributeError(text, name=name, obj=obj)


def missing_tensor_attribute(x, name):
    """Tensor.__getattr__: Python asks it only for a name the tensor lacks."""
    if name.startswith("_"):        # Python's and NumPy's protocols probe these: their usual answer
        raise AttributeError(f"'Tensor' object has no attribute {name!r}", name=name, obj=x)
    raise missing("Tensor", name, x)


def module_getattr(where):
    """A module's ``__getattr__`` (PEP 562) that answers in minidl's words."""
    def __getattr__(name):
        if name.startswith("_"):
            raise AttributeError(f"module {where!r} has no attribute {name!r}", name=name)
        raise missing(where, name)
    return __getattr__
