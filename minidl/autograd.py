"""An op written PyTorch's way, ``torch.autograd.Function`` with a context, run by
minidl (``md.autograd.Function`` is ``md.Function``):

    class Cube(md.autograd.Function):
        @staticmethod
        def forward(ctx, x):                  # tensors in, one tensor out, no graph recorded
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad_output):       # one gradient per input of forward (None: none)
            x, = ctx.saved_tensors
            return grad_output * 3 * x ** 2

    y = Cube.apply(x)

minidl's own way (``forward(self, x)`` on arrays, ``backward(self, gy)`` right
under it, ``Cube()(x)``; see README "Writing your own op") computes on the arrays
directly. Here each call wraps them as tensors, so both directions run through
minidl's ops with the graph off, as PyTorch runs them."""
import numpy as np

from .errors import InputError
from .ops.elementwise import sum_to
from .tensor import Function, Tensor, _is_array, no_grad

__all__ = ["Function", "Context"]


class Context:
    """PyTorch's ``ctx``: ``save_for_backward(*tensors)`` and ``saved_tensors``,
    ``needs_input_grad`` (one bool per input of forward), and any attribute you set."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"minidl's ctx has no {name!r}: it has save_for_backward, saved_tensors, "
                             "needs_input_grad and any attribute you set in forward (ctx.k = k)",
                             name=name, obj=self)


class PyTorchStyle(Function):
    """One call of an op written PyTorch's way; its tensor arguments are the inputs
    of the graph, the other arguments (numbers, flags) pass through to forward."""

    def __init__(self, op, args):
        self.op, self.args = op, args
        self.positions = [i for i, a in enumerate(args) if isinstance(a, Tensor) or _is_array(a)]

    def forward(self, *arrays):
        args = list(self.args)
        for i, x in zip(self.positions, arrays):
            args[i] = Tensor._wrap(x)
        wants = dict(zip(self.positions, self.needs_grad))
        self.ctx = Context(tuple(wants.get(i, False) for i in range(len(args))))
        self.shapes = [x.shape for x in arrays]
        with no_grad():
            y = self.op.forward(self.ctx, *args)
        if not isinstance(y, Tensor):
            raise TypeError(f"{self.op.__name__}.forward must return one tensor, got {type(y).__name__} "
                            "(minidl's ops have one output)")
        return y.data

    def backward(self, gy):
        with no_grad():
            grads = self.op.backward(self.ctx, Tensor._wrap(gy))
        grads = grads if isinstance(grads, tuple) else (grads,)
        if len(grads) != len(self.args):
            raise TypeError(f"{self.op.__name__}.backward returned {len(grads)} gradient(s) for the "
                            f"{len(self.args)} inputs of forward; return one per input (None for one "
                            "that needs none)")
        sent = []
        for i, shape in zip(self.positions, self.shapes):
            g = grads[i].data if isinstance(grads[i], Tensor) else grads[i]
            if g is not None and g.shape != shape:
                if not _broadcasts_from(g.shape, shape):
                    raise InputError(f"{self.op.__name__}.backward: the gradient of input {i} has shape "
                                     f"{g.shape}, which does not reduce to the input's {shape}")
                g = sum_to(g, shape)     # the broadcast shape, summed back as PyTorch's engine does
            sent.append(g)
        return tuple(sent)


def _broadcasts_from(big, small):
    try:
        return np.broadcast_shapes(big, small) == tuple(big)
    except ValueError:
        return False


def apply(op, *args):
    """PyTorch's spelling of a call, ``Op.apply(x)``: ``Op()(x)`` for an op written
    minidl's way; an op written PyTorch's way (static ``forward(ctx, ...)``) runs
    through ``PyTorchStyle``."""
    if not op.pytorch_style:
        return op()(*args)
    call = PyTorchStyle(op, args)
    return Function.__call__(call, *[args[i] for i in call.positions])


Function.apply = classmethod(apply)     # on every op, as PyTorch's Function has it
