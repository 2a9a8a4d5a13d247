"""Grading a module class, the homework as the course hands it out: a class with
the skeleton's constructor ``(num_features, num_dims, momentum=0.9, eps=1e-5)``,
in minidl (a ``md.nn.Module``) or, where PyTorch is installed, in PyTorch (a
``torch.nn.Module``). :func:`grade_module` checks it line by line: its
parameters, its training forward, its moving averages (momentum weighing the
old value, as the course has it), eval mode, saving and loading, that the moving
statistics stay off the autograd graph, and its gradients. Each hint names what
is wrong: which statistic, which term of the graph."""
import sys

import numpy as np

import minidl as md
from minidl.ops import norm as N
from lessons.homework.common import FLOAT32, Report, relative as _relative, student_frames

EPS = 1e-5


MODULE_CASES = (("(N, D) = (16, 3)", (16, 3), 2), ("(N, C, H, W) = (8, 3, 4, 4)", (8, 3, 4, 4), 4))
MOMENTUM = 0.8          # passed to the constructor: the module must use the one it is given
TOLERANCE = FLOAT32     # the modules compute in float32: the graders' one scheme (common.judge)


class MinidlFramework:
    """What the grader needs to do with a minidl module, in minidl's words (an
    adapter, not a module)."""
    name = "minidl"

    def tensor(self, a, grad=False):
        return md.Tensor(np.asarray(a, np.float32), requires_grad=grad)

    def numpy(self, t):
        return md.backend.as_numpy(t.data if isinstance(t, md.Tensor) else t).astype(np.float64)

    def is_tensor(self, t):
        return isinstance(t, md.Tensor)

    def no_grad(self):
        return md.no_grad()

    def parameters(self, module):
        return dict(module.named_parameters())

    def buffers(self, module):
        return dict(module.named_buffers())

    def set_value(self, t, value):
        t.data = md.backend.to_device(np.asarray(value, t.dtype).reshape(t.shape), t.device)

    def state_dict(self, module):
        return {k: np.asarray(v) for k, v in module.state_dict().items()}

    def load_state_dict(self, module, state):
        module.load_state_dict(state)

    def on_graph(self, t):
        return t.requires_grad or t.creator is not None

    def backward(self, y, dy):
        y.backward(dy.astype(np.float32))

    def grad(self, t):
        return None if t.grad is None else md.backend.as_numpy(t.grad).astype(np.float64)


class TorchFramework(MinidlFramework):
    """The same in PyTorch's words, for the homework as the course hands it out."""
    name = "PyTorch"

    def __init__(self):
        import torch
        self.torch = torch

    def tensor(self, a, grad=False):
        return self.torch.tensor(np.asarray(a, np.float32), requires_grad=grad)

    def numpy(self, t):
        return t.detach().cpu().numpy().astype(np.float64)

    def is_tensor(self, t):
        return isinstance(t, self.torch.Tensor)

    def no_grad(self):
        return self.torch.no_grad()

    def set_value(self, t, value):
        with self.torch.no_grad():
            t.copy_(self.torch.tensor(np.asarray(value, np.float32).reshape(tuple(t.shape))))

    def state_dict(self, module):
        return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

    def load_state_dict(self, module, state):
        module.load_state_dict({k: self.torch.tensor(v) for k, v in state.items()})

    def on_graph(self, t):
        return t.requires_grad or t.grad_fn is not None

    def backward(self, y, dy):
        y.backward(self.torch.tensor(dy.astype(np.float32)))

    def grad(self, t):
        return None if t.grad is None else t.grad.detach().cpu().numpy().astype(np.float64)


def framework_of(cls):
    """The adapter for a student's module class, or SystemExit naming what it got."""
    if issubclass(cls, md.nn.Module):
        return MinidlFramework()
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(cls, torch.nn.Module):
        return TorchFramework()
    raise SystemExit(f"--check: {cls.__name__} is a class but neither a minidl md.nn.Module nor a "
                     "torch.nn.Module; the homework's BatchNorm2d subclasses one of them")


class LineFailed(Exception):
    """A check's verdict: FAIL, with the hint that says what to change."""


class Blocked(Exception):
    """A check that cannot run because an earlier line failed (SKIP, not FAIL)."""


def _batch(shape, rng, small_channel=True):
    """Per-channel offsets and scales far from 0 and 1, so a wrong axis or a
    missing step shows; with ``small_channel`` one channel's variance is
    below ε, so a missing ε shows too."""
    C = shape[1]
    cs = N.channel_shape(shape)
    offset = np.array([20.0, -0.3, 0.5])[:C].reshape(cs)
    scale = np.array([5.0, 0.002 if small_channel else 0.5, 1.0])[:C].reshape(cs)
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


def _axes(shape):
    return (0,) + tuple(range(2, len(shape)))


def _normalize(x, mean, var, gamma, beta, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _attr(module, names):
    """The first of ``names`` the module has, as (name, value), or (None, None)."""
    for n in names:
        if hasattr(module, n):
            return n, getattr(module, n)
    return None, None


def _stats(module, fw):
    """(name of the moving mean, of the moving variance, their values as arrays)."""
    mean_name, mean = _attr(module, ("moving_mean", "running_mean"))
    var_name, var = _attr(module, ("moving_var", "running_var"))
    if mean is None or var is None or not (fw.is_tensor(mean) and fw.is_tensor(var)):
        raise LineFailed("no moving statistics found: keep them as self.moving_mean and self.moving_var "
                         "(tensors shaped like gamma), as the skeleton does")
    return mean_name, var_name, fw.numpy(mean), fw.numpy(var)


def _dtype_problem(module):
    """What is wrong with γ's or β's dtype, or None: one cause, named the same way
    on every line it breaks (so the report prints it once)."""
    for name in ("gamma", "beta"):
        dtype = str(getattr(getattr(module, name, None), "dtype", "float32")).split(".")[-1]
        if dtype != "float32":
            return (f"self.{name} is {dtype}: in a float32 network every op would mix dtypes; create it as "
                    "float32 (np.ones(shape, np.float32))")
    return None


def _forward(module, fw, x, grad=False):
    try:
        if grad:
            return module(x)
        with fw.no_grad():
            return module(x)
    except MemoryError:
        raise
    except Exception as e:
        cause = _dtype_problem(module)
        if cause:
            raise LineFailed(cause) from None
        where = student_frames(e, last_only=True)
        raise LineFailed(f"forward raised {type(e).__name__}: {e}" + (f"\n{where}" if where else "")) from None


def check_parameters(cls, fw, shape, dims, rng):
    module = cls(shape[1], dims, momentum=MOMENTUM, eps=EPS)
    want = N.channel_shape(shape)                # (1, C) or (1, C, 1, 1), the skeleton's shape
    params = fw.parameters(module)
    for name in ("gamma", "beta"):
        t = getattr(module, name, None)
        if t is None:
            raise LineFailed(f"no self.{name}: the skeleton creates gamma = ones(shape), beta = zeros(shape)")
        if not any(p is t for p in params.values()):
            raise LineFailed(f"self.{name} is not a registered parameter, so an optimizer never updates it: "
                             f"wrap it, self.{name} = Parameter(...)")
        if tuple(t.shape) != want:
            raise LineFailed(f"self.{name} has shape {tuple(t.shape)}; with num_dims={dims} the skeleton's "
                             f"shape is {want}")
    cause = _dtype_problem(module)
    if cause:
        raise LineFailed(cause)
    return "γ and β are float32 parameters of shape " + str(want)


def _fresh(cls, fw, shape, dims, rng):
    """A module with random γ, β (so the check sees them used), in training mode."""
    module = cls(shape[1], dims, momentum=MOMENTUM, eps=EPS)
    gamma, beta = getattr(module, "gamma", None), getattr(module, "beta", None)
    if gamma is None or beta is None:
        raise Blocked("needs self.gamma and self.beta (see the parameters line)")
    g, b = 1 + 0.5 * rng.standard_normal(tuple(gamma.shape)), rng.standard_normal(tuple(beta.shape))
    fw.set_value(gamma, g)
    fw.set_value(beta, b)
    return module, g.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)


def check_training_forward(cls, fw, shape, dims, rng):
    module, g, b = _fresh(cls, fw, shape, dims, rng)
    x = _batch(shape, rng)
    y = fw.numpy(_forward(module, fw, fw.tensor(x)))
    axes = _axes(shape)
    reference = _normalize(x, x.mean(axes, keepdims=True), x.var(axes, keepdims=True), g, b, EPS)
    if y.shape != reference.shape:
        raise LineFailed(f"output shape {y.shape}, expected {reference.shape}")
    rel = _relative(y, reference)
    if rel > TOLERANCE:
        no_eps = _normalize(x, x.mean(axes, keepdims=True), x.var(axes, keepdims=True), g, b, 0.0)
        hint = (" It matches the formula without ε: divide by √(σ² + ε)." if _relative(y, no_eps) < TOLERANCE
                else " Training mode normalizes with the batch's mean and biased variance over the axes "
                f"{axes}, then y = γ·x̂ + β.")
        raise LineFailed(f"relative error {rel:.1e} against (x − μ)/√(σ² + ε)·γ + β.{hint}")
    return f"matches the reference to {rel:.1e}"


def check_moving_averages(cls, fw, shape, dims, rng):
    module, _, _ = _fresh(cls, fw, shape, dims, rng)
    _, _, mean, var = _stats(module, fw)
    axes, batches = _axes(shape), [_batch(shape, rng) for _ in range(3)]
    m = MOMENTUM
    count = int(np.prod([shape[a] for a in axes]))
    candidates = {}
    for convention, (w_old, w_new) in (("course", (m, 1 - m)), ("reversed", (1 - m, m))):
        for variance in ("biased", "unbiased"):
            mu, v = mean.copy(), var.copy()
            for x in batches:
                bv = x.var(axes, keepdims=True) * (count / (count - 1) if variance == "unbiased" else 1)
                mu, v = w_old * mu + w_new * x.mean(axes, keepdims=True), w_old * v + w_new * bv
            candidates[(convention, variance)] = (mu, v)
    for x in batches:
        _forward(module, fw, fw.tensor(x))
    _, _, got_mean, got_var = _stats(module, fw)
    course = candidates[("course", "biased")]
    if got_mean.shape != course[0].shape or got_var.shape != course[1].shape:
        raise LineFailed(f"after 3 steps the moving mean has shape {got_mean.shape} and the moving variance "
                         f"{got_var.shape}, expected {course[0].shape} (the shape of gamma)")
    close = {k: (_relative(got_mean, mu) < TOLERANCE, _relative(got_var, v) < TOLERANCE)
             for k, (mu, v) in candidates.items()}
    if close[("course", "biased")] == (True, True):
        return f"momentum={m} weighs the old value; the variance is the biased one (the course's convention)"
    if close[("course", "unbiased")] == (True, True):
        return f"momentum={m} weighs the old value; the variance is the unbiased one (PyTorch's convention; the course keeps the biased one)"
    if any(both == (True, True) for (c, _), both in close.items() if c == "reversed"):
        raise LineFailed(f"momentum weighs the NEW value (PyTorch's momentum): after 3 steps the moving statistics "
                         f"match (1 − m)·old + m·batch. The course's momentum weighs the old one: "
                         f"moving = momentum·moving + (1 − momentum)·batch (constructed with momentum={m})")
    unchanged = [what for what, got, start in (("mean", got_mean, mean), ("variance", got_var, var))
                 if np.array_equal(got, start)]
    if unchanged:
        names = " and ".join(f"moving {what}" for what in unchanged)
        raise LineFailed(f"the {names} never change{'s' * (len(unchanged) == 1)} in training: computed but never "
                         "stored back. Assign the new value to the attribute (self.moving_mean = momentum·"
                         "self.moving_mean + (1 − momentum)·batch mean), not to a local variable")
    mean_right = any(mean_ok for (c, _), (mean_ok, _) in close.items() if c == "course")
    var_right = any(var_ok for (c, _), (_, var_ok) in close.items() if c == "course")
    off = {what: _relative(got, want) for what, got, want in (("mean", got_mean, course[0]), ("variance", got_var, course[1]))}
    if mean_right:
        raise LineFailed(f"the moving variance is off by {off['variance']:.1e} (relative) after 3 training steps; the "
                         "moving mean is right. Average the batch's variance over the axes "
                         f"{axes}, the same as its mean: momentum·moving_var + (1 − momentum)·σ²_B")
    if var_right:
        raise LineFailed(f"the moving mean is off by {off['mean']:.1e} (relative) after 3 training steps; the moving "
                         f"variance is right. Average the batch's mean over the axes {axes}: "
                         "momentum·moving_mean + (1 − momentum)·μ_B")
    raise LineFailed(f"after 3 training steps both moving statistics are off (mean by {off['mean']:.1e}, variance by "
                     f"{off['variance']:.1e}, relative) from momentum·moving + (1 − momentum)·batch (constructed with "
                     f"momentum={m}); update both once per training forward, under no_grad")


def check_eval(cls, fw, shape, dims, rng):
    module, g, b = _fresh(cls, fw, shape, dims, rng)
    for _ in range(2):
        _forward(module, fw, fw.tensor(_batch(shape, rng)))
    _, _, mean, var = _stats(module, fw)
    module.eval()
    x = _batch(shape, rng)
    y = fw.numpy(_forward(module, fw, fw.tensor(x)))
    _, _, mean_after, var_after = _stats(module, fw)
    if not (np.array_equal(mean, mean_after) and np.array_equal(var, var_after)):
        raise LineFailed("eval mode changed the moving statistics: update them only in training mode "
                         "(if self.training: ...)")
    uses_moving = min(_relative(y, _normalize(x, mean, var, g, b, eps)) for eps in (EPS, 0.0))
    if uses_moving < TOLERANCE:
        return "eval normalizes with the moving statistics and leaves them unchanged"
    axes = _axes(shape)
    if _relative(y, _normalize(x, x.mean(axes, keepdims=True), x.var(axes, keepdims=True), g, b, EPS)) < TOLERANCE:
        raise LineFailed("eval mode normalizes with the batch's own statistics: at test time use the moving "
                         "mean and variance (if not self.training: ...)")
    raise LineFailed(f"eval output is off by {uses_moving:.1e} (relative) from (x − moving_mean)/√(moving_var + ε)·γ + β")


def check_saved(cls, fw, shape, dims, rng):
    module, _, _ = _fresh(cls, fw, shape, dims, rng)
    for _ in range(2):
        _forward(module, fw, fw.tensor(_batch(shape, rng)))
    mean_name, var_name, mean, var = _stats(module, fw)
    state = fw.state_dict(module)
    known = set(fw.parameters(module)) | set(fw.buffers(module))
    plain = sorted(k for k, v in vars(module).items() if fw.is_tensor(v) and k not in known)
    missing = [n for n in (mean_name, var_name) if n not in state]
    if missing:
        raise LineFailed(f"state_dict() leaves out {', '.join(missing)}: "
                         + (f"{', '.join(plain)} {'is a' if len(plain) == 1 else 'are'} plain tensor attribute"
                            f"{'' if len(plain) == 1 else 's'}, neither parameter nor buffer, " if plain else "")
                         + "so a saved model loses its running statistics; register them: "
                         f"self.register_buffer('{mean_name}', ...)")
    other = cls(shape[1], dims, momentum=MOMENTUM, eps=EPS)
    try:
        fw.load_state_dict(other, state)
    except Exception as e:
        raise LineFailed(f"load_state_dict of its own state_dict raised {type(e).__name__}: {e}") from None
    _, _, mean2, var2 = _stats(other, fw)
    if not (np.array_equal(mean, mean2) and np.array_equal(var, var2)):
        raise LineFailed("load_state_dict did not restore the moving statistics")
    return f"{mean_name} and {var_name} are saved and restored" + (
        f" (note: {', '.join(plain)} are tensors that are neither parameters nor buffers)" if plain else "")


def check_off_graph(cls, fw, shape, dims, rng):
    module, _, _ = _fresh(cls, fw, shape, dims, rng)
    for _ in range(2):
        _forward(module, fw, fw.tensor(_batch(shape, rng), grad=True), grad=True)
    for name in ("moving_mean", "moving_var", "running_mean", "running_var"):
        t = getattr(module, name, None)
        if t is not None and fw.is_tensor(t) and fw.on_graph(t):
            raise LineFailed(f"self.{name} is on the autograd graph (it requires a gradient): every step's graph "
                             "stays attached to the next. Update the moving statistics under no_grad")
    return "the moving statistics carry no gradient and keep no graph"


def _autograd_reference(x, g, b, dy, axes, detach=()):
    """dx, dγ, dβ of the course's forward by minidl's autograd in float64, with the
    statistics named in ``detach`` ("mu", "var") held constant, as a student's
    ``.detach()`` would: which gradient is missing shows by which one matches."""
    X, G, B = (md.Tensor(a, requires_grad=True) for a in (x, g, b))
    mu = X.mean(axis=axes, keepdims=True)
    var = ((X - mu) ** 2).mean(axis=axes, keepdims=True)
    mu, var = (mu.detach() if "mu" in detach else mu), (var.detach() if "var" in detach else var)
    ((X - mu) / (var + EPS) ** 0.5 * G + B).backward(dy)
    return tuple(md.backend.as_numpy(t.grad) for t in (X, G, B))


DETACHED = {("mu",): ("your μ is", "μ"), ("var",): ("your σ² is", "σ²"), ("mu", "var"): ("your μ and σ² are", "μ and σ²")}


def check_gradients(cls, fw, shape, dims, rng):
    module, g, b = _fresh(cls, fw, shape, dims, rng)
    x_np = _batch(shape, rng, small_channel=False)
    x = fw.tensor(x_np, grad=True)
    try:
        y = _forward(module, fw, x, grad=True)
    except LineFailed as e:
        if str(e) == _dtype_problem(module):      # one cause, reported as such on every line it breaks
            raise
        raise Blocked(f"the forward with gradients raised {str(e).split(': ')[0][len('forward raised '):]} "
                      "(see the lines above)") from None
    dy = rng.standard_normal(shape)
    fw.backward(y, dy)
    t = N.backward_staged(dy, x_np, g, EPS, _axes(shape))
    worst = []
    for name, tensor, ref in (("dx", x, t.g_x), ("dgamma", module.gamma, t.g_gamma), ("dbeta", module.beta, t.g_beta)):
        got = fw.grad(tensor)
        if got is None:
            raise LineFailed(f"{name} is None after backward(): is self.{name[1:] or 'x'} used through tensor ops?")
        rel = _relative(got.reshape(ref.shape), ref)
        if rel > TOLERANCE:
            for detach, (says, held) in (DETACHED.items() if name == "dx" else ()):
                other = _autograd_reference(x_np, g, b, dy, _axes(shape), detach)[0]
                if _relative(got.reshape(ref.shape), other) < TOLERANCE:
                    raise LineFailed(f"{says} detached from the graph: the gradient through the batch statistics is "
                                     f"missing (dx matches the backward with {held} held constant). "
                                     "Compute them from X with tensor ops and keep them on the graph; only the "
                                     "moving statistics go under no_grad")
            raise LineFailed(f"{name} by autograd through your forward is off by {rel:.1e} (relative) from the "
                             "hand-derived backward: the forward's graph computes something else")
        worst.append(rel)
    return f"dx, dγ, dβ by autograd match the hand-derived backward to {max(worst):.1e}"


MODULE_CHECKS = (("parameters", check_parameters), ("training forward", check_training_forward),
                 ("moving averages", check_moving_averages), ("eval mode", check_eval),
                 ("saved by state_dict", check_saved), ("off the graph", check_off_graph),
                 ("gradients", check_gradients))


def _run_line(cls, fw, label, shape, dims, k, check, seed):
    """One check on one shape: (status, message)."""
    rng = np.random.default_rng([seed, k, dims])
    try:
        return "PASS", check(cls, fw, shape, dims, rng)
    except Blocked as e:
        return "SKIP", str(e)
    except LineFailed as e:
        return "FAIL", str(e)
    except MemoryError:
        raise
    except Exception as e:       # the student's code broke in a way no line foresaw
        return "FAIL", f"raised {type(e).__name__}: {e}\n{student_frames(e)}"


def grade_module(cls, seed=0):
    """Grade a BatchNorm module class line by line; print each line and return
    the Report (``.passed``, ``.verdict``, ``.score``)."""
    fw = framework_of(cls)
    print(f"Grading {cls.__name__} ({fw.name} module), constructed as "
          f"{cls.__name__}(num_features, num_dims, momentum={MOMENTUM}, eps={EPS}), in float32, "
          f"to a relative tolerance of {TOLERANCE:g}.\n")
    report = Report()
    for label, shape, dims in MODULE_CASES:
        print(f"{label}, num_dims={dims}:")
        for k, (name, check) in enumerate(MODULE_CHECKS):
            status, message = _run_line(cls, fw, label, shape, dims, k, check, seed)
            print(f"  {status}  {name}: {report.add(label, name, status, message)}")
        print()
    print(report.verdict)
    return report


def grade_lines(cls, names, seed=0):
    """Only the lines ``names`` (e.g. ["moving averages"]), each on both shapes,
    printed one per shape; the Report. The hand-out notebook's check cells."""
    fw = framework_of(cls)
    report = Report()
    for k, (name, check) in enumerate(MODULE_CHECKS):
        if name in names:
            for label, shape, dims in MODULE_CASES:
                status, message = _run_line(cls, fw, label, shape, dims, k, check, seed)
                print(f"{status}  {name} on {label}: {report.add(label, name, status, message)}")
    return report
