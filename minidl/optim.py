"""Optimizers with PyTorch's update rules (so a user's numbers match), and
learning-rate schedules. Every update runs on arrays, outside the graph."""
import math
import numbers

from . import backend
from .tensor import Tensor


def _check(name, what, value, low=0.0, high=None, low_open=False):
    """A hyperparameter is a real number in its range, else PyTorch's "Invalid …" error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or \
            (value <= low if low_open else value < low) or (high is not None and value >= high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name}: Invalid {what}: {value!r} (expected a number {bound})")


class Optimizer:
    """Holds the parameters (any iterable of Tensors, in order) and their
    per-parameter state; each subclass gives ``update``, the step for one
    parameter. Hyperparameters live in ``hyper``, set from the subclass's
    ``__init__`` arguments (the one place their defaults are written)."""

    def __init__(self, params, lr, **hyper):
        name = type(self).__name__
        if hasattr(params, "parameters") and callable(params.parameters):
            raise TypeError(f"{name}: got the model ({type(params).__name__}) itself; "
                            "pass model.parameters()")
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors, got a single Tensor; "
                            "pass a list, e.g. [w]")
        try:
            self.params = list(params)
        except TypeError:
            raise TypeError(f"{name}: params must be an iterable of Tensors (model.parameters()), "
                            f"got {type(params).__name__}") from None
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{name}: every parameter must be a Tensor with "
                                f"requires_grad=True, got {type(p).__name__}")
        _check(name, "learning rate", lr, low_open=True)
        _check(name, "weight_decay value", hyper.get("weight_decay", 0.0))
        self.lr = float(lr)
        self.hyper = hyper
        self.state = [{} for _ in self.params]   # per parameter, in order
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p in self.params:
            if p.grad is None:
                continue
            if backend.device_of(p.grad) != p.device:
                raise backend.DeviceMismatchError(
                    f"{type(self).__name__}.step: a parameter of shape {p.shape} lives on "
                    f"{p.device} but its gradient on {backend.device_of(p.grad)}")
            backend.defer_check(~backend.get_array_module(p.grad).isfinite(p.grad).all(),
                                FloatingPointError, f"{type(self).__name__}.step: a gradient of "
                                f"shape {p.shape} holds NaN or inf; lower the learning rate")
        backend.check_pending()     # the step's one synchronization on a GPU: every check at once
        self.steps += 1
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = p.grad
            for k, v in state.items():   # the model moved (model.to("gpu")): its state follows
                if backend.device_of(v) != p.device:
                    state[k] = backend.to_device(v, p.device)
            if self.hyper.get("weight_decay"):
                g = g + self.hyper["weight_decay"] * p.data    # L2 penalty, as PyTorch adds it
            p.data -= self.update(g, p, state)

    def update(self, g, p, state):
        """The step to subtract from p.data."""
        raise NotImplementedError

    def state_dict(self):
        return {"lr": self.lr, "steps": self.steps,
                "state": {str(i): {k: backend.as_numpy(v) for k, v in s.items()}
                          for i, s in enumerate(self.state)}}

    def load_state_dict(self, state):
        saved = state["state"]
        if len(saved) != len(self.params):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the checkpoint holds state "
                             f"for {len(saved)} parameters, this optimizer has {len(self.params)}")
        self.lr, self.steps = float(state["lr"]), int(state["steps"])
        for i, p in enumerate(self.params):
            for k, v in saved[str(i)].items():
                if v.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state {k!r} of "
                                     f"parameter {i} has shape {v.shape}, the parameter {p.shape}")
            self.state[i] = {k: backend.to_device(v.astype(p.dtype), p.device)
                             for k, v in saved[str(i)].items()}


class SGD(Optimizer):
    """p ← p − lr·d, with d = g (plain), the momentum buffer b = μ·b + g, or for
    Nesterov d = g + μ·b. The first step sets b = g, as PyTorch does."""
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        _check("SGD", "momentum value", momentum)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)

    def update(self, g, p, state):
        mu = self.hyper["momentum"]
        if mu == 0:
            return self.lr * g
        b = state["momentum_buffer"] = g.copy() if "momentum_buffer" not in state \
            else mu * state["momentum_buffer"] + g
        return self.lr * (g + mu * b if self.hyper["nesterov"] else b)


class Adagrad(Optimizer):
    """s ← s + g²;  p ← p − lr·g / (√s + eps)."""
    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0):
        _check("Adagrad", "epsilon value", eps)
        super().__init__(params, lr, eps=eps, weight_decay=weight_decay)

    def update(self, g, p, state):
        s = state["sum"] = state.get("sum", 0) + g * g
        return self.lr * g / (s ** 0.5 + self.hyper["eps"])


class RMSprop(Optimizer):
    """v ← α·v + (1−α)·g²;  p ← p − lr·g / (√v + eps)."""
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0):
        _check("RMSprop", "alpha value", alpha)
        _check("RMSprop", "epsilon value", eps)
        super().__init__(params, lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    def update(self, g, p, state):
        a = self.hyper["alpha"]
        v = state["square_avg"] = a * state.get("square_avg", 0) + (1 - a) * g * g
        return self.lr * g / (v ** 0.5 + self.hyper["eps"])


class Adam(Optimizer):
    """m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    p ← p − lr·m̂ / (√v̂ + eps) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)."""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        for i, beta in enumerate(betas):
            _check("Adam", f"beta parameter at index {i}", beta, high=1.0)
        _check("Adam", "epsilon value", eps)
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def update(self, g, p, state):
        b1, b2 = self.hyper["betas"]
        t = self.steps
        m = state["exp_avg"] = b1 * state.get("exp_avg", 0) + (1 - b1) * g
        v = state["exp_avg_sq"] = b2 * state.get("exp_avg_sq", 0) + (1 - b2) * g * g
        # PyTorch's arrangement of the bias corrections, so float32 results match it
        denom = v ** 0.5 / math.sqrt(1 - b2 ** t) + self.hyper["eps"]
        return (self.lr / (1 - b1 ** t)) * m / denom


class LRScheduler:
    """Sets the optimizer's lr from the epoch count; call step() once per epoch.
    Subclasses give the formula, ``lr_at(epoch)``."""

    def __init__(self, optimizer):
        self.optimizer, self.base_lr, self.epoch = optimizer, optimizer.lr, 0

    def step(self):
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def lr_at(self, epoch):
        raise NotImplementedError


class StepLR(LRScheduler):
    """lr = base_lr · gamma^(epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr − eta_min)·(1 + cos(π·epoch/T_max))/2."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, epoch):
        cos = (1 + math.cos(math.pi * min(epoch, self.T_max) / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos
