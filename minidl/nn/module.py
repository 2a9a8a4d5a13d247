"""Module: the base of every layer. Parameters, buffers and sub-modules are
registered in assignment order (plain dicts keep it), so ``parameters()``,
``state_dict()`` and optimizer state always line up the same way."""
import numpy as np

from .. import backend
from ..tensor import Config, Tensor


def check_input(layer, x, dtype=None):
    """A layer's input is a Tensor of its parameters' float dtype: say so by the layer's name."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer}: expected a Tensor, got {type(x).__name__}; wrap it: md.Tensor(x)")
    if x.dtype.kind != "f":
        hint = " and scale 0-255 pixels to 0-1 with / 255" if x.dtype == np.uint8 else ""
        raise TypeError(f"{layer}: expected a floating-point input, got {x.dtype} of shape {tuple(x.shape)}; "
                        f"cast it: x.astype('{dtype or 'float32'}'){hint}")
    if dtype is not None and x.dtype.kind == "f" and x.dtype != dtype and not Config.promote_float64:
        raise TypeError(f"{layer}: input is {x.dtype} but the layer's parameters are {dtype}; "
                        f"cast one: x.astype('{dtype}') or layer.astype('{x.dtype}')")


class Parameter(Tensor):
    """A Tensor that a Module trains: requires a gradient by default."""

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes (while setting {name!r})")
        if name in self._buffers and isinstance(value, Tensor) and not isinstance(value, Parameter):
            # as in PyTorch, a registered buffer assigned a new tensor stays a buffer
            self._check_buffer(name, value)
            self._buffers[name] = value
            object.__setattr__(self, name, value)
            return
        own = self._parameters if isinstance(value, Parameter) else self._modules if isinstance(value, Module) else None
        for table in (self._parameters, self._buffers, self._modules):
            if table is not own:
                table.pop(name, None)
        if own is not None:
            own[name] = value          # a name reassigned keeps its place in the order, as PyTorch's
        object.__setattr__(self, name, value)

    def register_buffer(self, name, value):
        """State that is saved and moved with the module but not trained
        (BatchNorm's running statistics). Assigning the attribute a new tensor
        later keeps it a buffer."""
        t = value if isinstance(value, Tensor) else Tensor(value)
        self._check_buffer(name, t)
        self.__setattr__(name, t)
        self._buffers[name] = t

    def _check_buffer(self, name, t):
        """A buffer on the autograd graph would drag every step's graph into the next."""
        if t.requires_grad:
            raise ValueError(f"{type(self).__name__}: buffer {name!r} was assigned a tensor that requires a "
                             "gradient (it was computed from the graph); update it under md.no_grad(), or "
                             "from .detach(), so the running statistics stay off the autograd graph")

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        try:
            return self.forward(*args, **kwargs)
        except TypeError as e:
            raise self._name_the_dtype_mismatch(e, args) from None

    def _name_the_dtype_mismatch(self, error, args):
        """An op deep in forward() mixed float dtypes: name this module and the
        parameter or buffer whose dtype differs from the input's (a float64
        ``Parameter(np.ones(shape))`` in a float32 net, say)."""
        inputs = [a for a in args if isinstance(a, Tensor) and a.dtype.kind == "f"]
        if "different float dtypes" not in str(error) or not inputs or hasattr(error, "named_by_module"):
            return error
        own = [(n, t) for n, t in list(self._parameters.items()) + list(self._buffers.items())
               if t.dtype != inputs[0].dtype]
        if not own:
            return error
        names = ", ".join(f"{n} is {t.dtype}" for n, t in own)
        named = TypeError(f"{type(self).__name__}: its input is {inputs[0].dtype} but {names} ({error}). "
                          f"Create it as float32 (np.ones(shape, np.float32)), or cast the module with "
                          f".astype('{inputs[0].dtype}')")
        named.named_by_module = True
        return named

    # ---- traversal --------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def _named(self, table):
        """Every (name, tensor) of ``table`` in the module tree, a shared one under each of its names."""
        for prefix, m in self.named_modules():
            for name, t in getattr(m, table).items():
                yield (f"{prefix}.{name}" if prefix else name), t

    def named_parameters(self):
        """(name, parameter) pairs, each parameter once, under its first name, as PyTorch's: a
        weight two layers share (tied), or a layer used twice, is trained once per step."""
        return _each_once(self._named("_parameters"))

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        return _each_once(self._named("_buffers"))

    # ---- modes ------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout on, BN uses batch statistics). Returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode (dropout off, BN uses running statistics). Returns self."""
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- state ------------------------------------------------------------
    def state_dict(self):
        """Parameters then buffers, name -> NumPy array (a copy)."""
        # every name, a shared tensor's included, as PyTorch's state_dict
        state = {name: p.numpy().copy() for name, p in self._named("_parameters")}
        state.update({name: b.numpy().copy() for name, b in self._named("_buffers")})
        return state

    def load_state_dict(self, state, strict=True):
        """Copy ``state`` into this module. Missing or unexpected keys (with
        strict) and every shape mismatch are reported together, by name."""
        if not isinstance(state, dict):
            hint = (f"; load the file first: model.load_state_dict(md.load({state!r}))"
                    if isinstance(state, (str, bytes)) or hasattr(state, "__fspath__") else "")
            raise TypeError(f"load_state_dict: expected a dict of arrays (model.state_dict() or "
                            f"md.load(path)), got {type(state).__name__}{hint}")
        if "model" in state and isinstance(state["model"], dict) and "model" not in dict(self.named_parameters()):
            raise ValueError("load_state_dict: this is a whole checkpoint (its keys: "
                             f"{sorted(state)}); pass its model part: load_state_dict(state['model'])")
        own = dict(list(self._named("_parameters")) + list(self._named("_buffers")))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {own[k].shape}"
                 for k in own if k in state and tuple(np.shape(state[k])) != own[k].shape]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            raise ValueError(f"load_state_dict: the checkpoint does not fit {type(self).__name__}: "
                             + " | ".join(problems))
        for k, t in own.items():
            if k in state:
                t.data = backend.to_device(np.asarray(state[k]).astype(t.dtype), t.device)
        return self

    def to(self, device):
        """Move every parameter and buffer to "cpu" or "gpu" ("cuda" too), in place."""
        device = backend.canonical_device(device)
        for t in self.parameters() + [b for _, b in self.named_buffers()]:
            t.data = backend.to_device(t.data, device)
            t.grad = None if t.grad is None else backend.to_device(t.grad, device)
        return self

    def astype(self, dtype):
        """Cast every floating parameter and buffer, in place (e.g. "float64" for gradcheck)."""
        for t in self.parameters() + [b for _, b in self.named_buffers()]:
            if t.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                t.grad = None
        return self

    # ---- printing ---------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


def _each_once(named):
    """The (name, tensor) pairs whose tensor has not come before."""
    seen, once = set(), []
    for name, t in named:
        if id(t) not in seen:
            seen.add(id(t))
            once.append((name, t))
    return once


class Sequential(Module):
    """Layers applied in order; ``Sequential(a, b)[0] is a``."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, "
                                "expected a Module")
            setattr(self, str(i), layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)
