"""The BatchNorm homework grader behind ``python -m lessons.batchnorm_backward --check``.

It grades either of the two things the course asks a student to write.

**A module** (the homework as seed 002 hands it out): a class with the
skeleton's constructor ``(num_features, num_dims, momentum=0.9, eps=1e-5)``,
in minidl (a ``md.nn.Module``) or, where PyTorch is installed, in PyTorch (a
``torch.nn.Module``). :func:`grade_module` checks it line by line: its
parameters, its training forward, its moving averages (momentum weighing the
old value, as the course has it), eval mode, saving and loading, that the moving
statistics stay off the autograd graph, and its gradients.

**A backward function**, a NumPy function

    def batchnorm_backward(dy, x, gamma, beta, eps):
        return dx, dgamma, dbeta

called on an (N, D) batch (BatchNorm after a Linear layer; gamma, beta: (D,))
and on an (N, C, H, W) batch (after a convolution; gamma, beta: (C,), one per
channel). Each gradient is compared, element by element, with finite
differences of the forward and with minidl's hand-derived backward, by
CS231n's relative error |a − b| / max(1e-8, |a| + |b|).
"""
import importlib
import importlib.util
import os
import sys
import traceback

import numpy as np

import minidl as md
from minidl.gradcheck import FINE, WRONG, band, relative_error
from minidl.ops import norm as N

BANDS = """The bands (relative error of the worst element):
  fine   < 1e-7   what float64 arithmetic gives a correct backward
  check  1e-7 .. 1e-2   a correct backward computed in float32 lands here (float32 keeps
         about 7 digits, and BN's backward subtracts nearly equal sums); so do small
         slips such as a missing ε in one term. A float64 answer here is a FAIL,
         a float32 answer a PASS.
  wrong  > 1e-2   a term is missing, has the wrong sign, or the wrong count m"""

CASES = (("(N, D) = (4, 3)", (4, 3)), ("(N, C, H, W) = (4, 3, 2, 2)", (4, 3, 2, 2)))
EPS = 1e-5
NAMES = ("dx", "dgamma", "dbeta")


def load_function(spec):
    """``path/to/file.py:NAME`` or ``module:NAME``: the student's function or
    class (NAME defaults to batchnorm_backward, else BatchNorm2d). Raises
    SystemExit with a message when it cannot."""
    target, _, name = spec.partition(":")
    try:
        if target.endswith(".py") or os.sep in target:
            if not os.path.exists(target):
                raise SystemExit(f"--check: no file {target}")
            loader = importlib.util.spec_from_file_location("student_homework", target)
            module = importlib.util.module_from_spec(loader)
            sys.modules[loader.name] = module       # so its classes know their source file
            loader.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())    # the student's module sits where they run from
            module = importlib.import_module(target)
    except SystemExit:
        raise
    except Exception as e:
        raise SystemExit(f"--check: importing {target} failed: {type(e).__name__}: {e}") from None
    name = name or next((n for n in ("batchnorm_backward", "BatchNorm2d") if hasattr(module, n)),
                        "batchnorm_backward")
    if not callable(getattr(module, name, None)):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise SystemExit(f"--check: {target} has no function {name!r} (it has: {', '.join(found) or 'none'})")
    return getattr(module, name)


def grade_any(obj):
    """Grade a backward function or a module class, whichever ``obj`` is."""
    if isinstance(obj, type):
        return grade_module(obj)
    return grade(obj)


def _student_frames(exc):
    """The lines of the student's own code in a traceback (not the grader's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return "".join(traceback.format_list(frames)).rstrip()


def grade_case(fn, label, shape, seed):
    """One input shape: a list of (gradient, problem or None, relative error, band)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    C = shape[1]
    gamma, beta = 1 + 0.5 * rng.standard_normal(C), rng.standard_normal(C)
    dy = rng.standard_normal(shape)
    axes = (0,) + tuple(range(2, len(shape)))
    cs = N.channel_shape(shape)
    t = N.backward_staged(dy, x, gamma.reshape(cs), EPS, axes)
    reference = (t.g_x, t.g_gamma.reshape(C), t.g_beta.reshape(C))

    def forward(xx, g, b):
        return N.batch_norm_reference(xx, g.reshape(cs), b.reshape(cs), EPS, axes)
    numeric = (md.numerical_grad(lambda v: forward(v, md.Tensor(gamma), md.Tensor(beta)), x, dy),
               md.numerical_grad(lambda v: forward(md.Tensor(x), v, md.Tensor(beta)), gamma, dy),
               md.numerical_grad(lambda v: forward(md.Tensor(x), md.Tensor(gamma), v), beta, dy))
    try:
        theirs = fn(dy.copy(), x.copy(), gamma.copy(), beta.copy(), EPS)
    except Exception as e:
        return [("your function", f"raised {type(e).__name__}: {e}\n{_student_frames(e)}", None, None)]
    if not isinstance(theirs, (tuple, list)) or len(theirs) != 3:
        n = len(theirs) if isinstance(theirs, (tuple, list)) else f"one {type(theirs).__name__}"
        return [("your function", f"returned {n} value(s); expected three: (dx, dgamma, dbeta)",
                 None, None)]
    rows = []
    for name, mine, ref, num in zip(NAMES, theirs, reference, numeric):
        try:
            mine = np.asarray(mine)
            values = mine.astype(np.float64)
        except (TypeError, ValueError) as e:
            rows.append((name, f"is not an array of numbers ({e})", None, None))
            continue
        # dgamma, dbeta may keep gamma's broadcast shape, (1, C) or (1, C, 1, 1)
        if values.shape != ref.shape and not (name != "dx" and values.size == C
                                              and values.squeeze().shape == (C,)):
            rows.append((name, f"has shape {values.shape}, expected {ref.shape}", None, None))
            continue
        values = values.reshape(ref.shape)
        rel = max(relative_error(values, num), relative_error(values, ref))
        verdict_band = band(rel)
        low_precision = mine.dtype.kind == "f" and mine.dtype.itemsize < 8
        problem = None
        if verdict_band == "wrong":
            problem = f"relative error {rel:.1e} (wrong > {WRONG:g})"
        elif verdict_band == "check" and not low_precision:
            problem = (f"relative error {rel:.1e} in float64 (fine < {FINE:g}): close, but not "
                       "float64 rounding; look for a missing or extra ε or a slightly wrong term")
        rows.append((name, problem, rel, verdict_band + (" (float32)" if low_precision else "")))
    return rows


def grade(fn, seed=0):
    """Grade ``fn`` on every case; print a table and return (passed, verdict line)."""
    print(BANDS + "\n")
    print(f"{'input':<28} {'gradient':<9} {'rel. error':>10}  band")
    failures = []
    for k, (label, shape) in enumerate(CASES):
        for name, problem, rel, shown in grade_case(fn, label, shape, seed + k):
            if rel is None:
                print(f"{label:<28} {name}: {problem}")
            else:
                print(f"{label:<28} {name:<9} {rel:>10.2e}  {shown}" + (f"   <- {problem}" if problem else ""))
            if problem:
                failures.append(f"{name} on {label}: {problem.splitlines()[0]}")
    verdict = "PASS" if not failures else "FAIL: " + failures[0] + (
        f" (and {len(failures) - 1} more above)" if len(failures) > 1 else "")
    print(verdict)
    return not failures, verdict


# ---- grading a module: the homework as the course hands it out -----------------
MODULE_CASES = (("(N, D) = (16, 3)", (16, 3), 2), ("(N, C, H, W) = (8, 3, 4, 4)", (8, 3, 4, 4), 4))
MOMENTUM = 0.8          # passed to the constructor: the module must use the one it is given
TOLERANCE = 1e-3        # float32 arithmetic: relative to the largest value compared


class MinidlModule:
    """What the grader needs from a minidl module, in minidl's words."""
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


class TorchModule(MinidlModule):
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
        return MinidlModule()
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(cls, torch.nn.Module):
        return TorchModule()
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


def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-8))


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


def _forward(module, fw, x, grad=False):
    try:
        if grad:
            return module(x)
        with fw.no_grad():
            return module(x)
    except Exception as e:
        raise LineFailed(f"forward raised {type(e).__name__}: {e}") from None


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
        if str(t.dtype).split(".")[-1] != "float32":
            raise LineFailed(f"self.{name} is {str(t.dtype).split('.')[-1]}: in a float32 network every op "
                             "would mix dtypes; create it as float32 (np.ones(shape, np.float32))")
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
    found = [k for k, (mu, v) in candidates.items()
             if got_mean.shape == mu.shape and _relative(got_mean, mu) < TOLERANCE and _relative(got_var, v) < TOLERANCE]
    if ("course", "biased") in found:
        return f"momentum={m} weighs the old value; the variance is the biased one (the course's convention)"
    if ("course", "unbiased") in found:
        return f"momentum={m} weighs the old value; the variance is the unbiased one (PyTorch's convention; the course keeps the biased one)"
    if any(c == "reversed" for c, _ in found):
        raise LineFailed(f"momentum weighs the NEW value (PyTorch's momentum): after 3 steps the moving statistics "
                         f"match (1 − m)·old + m·batch. The course's momentum weighs the old one: "
                         f"moving = momentum·moving + (1 − momentum)·batch (constructed with momentum={m})")
    if got_mean.shape != candidates[("course", "biased")][0].shape:
        raise LineFailed(f"the moving mean has shape {got_mean.shape} after 3 steps, expected "
                         f"{candidates[('course', 'biased')][0].shape} (the shape of gamma)")
    raise LineFailed(f"after 3 training steps the moving mean is off by {_relative(got_mean, candidates[('course', 'biased')][0]):.1e} "
                     f"(relative) from momentum·moving + (1 − momentum)·batch mean (constructed with momentum={m}); "
                     "update both moving statistics once per training forward, under no_grad")


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


def check_gradients(cls, fw, shape, dims, rng):
    module, g, b = _fresh(cls, fw, shape, dims, rng)
    x_np = _batch(shape, rng, small_channel=False)
    x = fw.tensor(x_np, grad=True)
    try:
        y = module(x)
    except Exception as e:
        raise Blocked(f"the forward with gradients raised {type(e).__name__} (see the line above)") from None
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
            raise LineFailed(f"{name} by autograd through your forward is off by {rel:.1e} (relative) from the "
                             "hand-derived backward: the forward's graph computes something else")
        worst.append(rel)
    return f"dx, dγ, dβ by autograd match the hand-derived backward to {max(worst):.1e}"


MODULE_CHECKS = (("parameters", check_parameters), ("training forward", check_training_forward),
                 ("moving averages", check_moving_averages), ("eval mode", check_eval),
                 ("saved by state_dict", check_saved), ("off the graph", check_off_graph),
                 ("gradients", check_gradients))


def grade_module(cls, seed=0):
    """Grade a BatchNorm module class line by line; print each line and return
    (passed, verdict line)."""
    fw = framework_of(cls)
    print(f"Grading {cls.__name__} ({fw.name} module), constructed as "
          f"{cls.__name__}(num_features, num_dims, momentum={MOMENTUM}, eps={EPS}), in float32, "
          f"to a relative tolerance of {TOLERANCE:g}.\n")
    failures = []
    for label, shape, dims in MODULE_CASES:
        print(f"{label}, num_dims={dims}:")
        for k, (name, check) in enumerate(MODULE_CHECKS):
            rng = np.random.default_rng([seed, k, dims])
            try:
                print(f"  PASS  {name}: {check(cls, fw, shape, dims, rng)}")
            except Blocked as e:
                print(f"  SKIP  {name}: {e}")
            except LineFailed as e:
                print(f"  FAIL  {name}: {e}")
                failures.append(f"{name} on {label}: {e}")
            except Exception as e:       # the student's code broke in a way no line foresaw
                message = f"raised {type(e).__name__}: {e}"
                print(f"  FAIL  {name}: {message}\n{_student_frames(e)}")
                failures.append(f"{name} on {label}: {message}")
        print()
    verdict = "PASS" if not failures else "FAIL: " + failures[0] + (
        f" (and {len(failures) - 1} more above)" if len(failures) > 1 else "")
    print(verdict)
    return not failures, verdict
