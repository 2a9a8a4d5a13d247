"""The judge's lines for a module class, the homework as the course hands it out:
a class with the skeleton's constructor ``(num_features, num_dims, momentum=0.9,
eps=1e-5)``, in minidl (a ``md.nn.Module``) or PyTorch (a ``torch.nn.Module``).

Each line is a step the runner performs on fresh inputs (``draw``) and a verdict
the judge reaches from what it recorded (``mark``): γ's and β's facts; the
training forward against the formula; the moving averages after three steps
(momentum weighing the old value, as the course has it); eval mode; saving and
loading; the moving statistics off the autograd graph; the gradients by autograd
against the hand-derived backward. Each hint names what is wrong: which
statistic, which term of the graph.

A line that rests on what the module says about itself (eval's statistics,
``state_dict``, the graph) first asks that the training forwards of its step
normalize (γ·x̂ + β per channel), and that the moving statistics it reports be
the ones the judge computes itself from the batches it sent (from the
skeleton's start, 0 and 1, under any of the conventions the moving-averages
line names): only a module that computes earns it, and a runner patched to
report made-up statistics earns nothing from them."""
import numpy as np

import minidl as md
from minidl.ops import norm as N
from lessons.homework.judge import FLOAT32, NoResult, array, field, relative as _relative

EPS = 1e-5
CASES = (("(N, D) = (16, 3)", (16, 3), 2), ("(N, C, H, W) = (8, 3, 4, 4)", (8, 3, 4, 4), 4))
MOMENTUM = 0.8          # passed to the constructor: the module must use the one it is given
TOLERANCE = FLOAT32     # the modules compute in float32: the judge's one scheme


class LineFailed(Exception):
    """A line's verdict: FAIL, with the hint that says what to change."""


class Blocked(Exception):
    """A line that cannot be judged because an earlier one failed (SKIP, not FAIL)."""


def _batch(shape, rng, small_channel=True):
    """Per-channel offsets and scales far from 0 and 1, so a wrong axis or a
    missing step shows; with ``small_channel`` one channel's variance is
    below ε, so a missing ε shows too. Values float32 holds exactly."""
    C = shape[1]
    cs = N.channel_shape(shape)
    offset = np.array([20.0, -0.3, 0.5])[:C].reshape(cs)
    scale = np.array([5.0, 0.002 if small_channel else 0.5, 1.0])[:C].reshape(cs)
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


def _axes(shape):
    return (0,) + tuple(range(2, len(shape)))


def _normalize(x, mean, var, gamma, beta, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _float32(a):
    return a.astype(np.float32).astype(np.float64)


# ---- the plan: each line's operations and inputs -------------------------------------------
# (name, the operations after "new" and "set", the batches it forwards)
LINES = (
    ("parameters", None),
    ("training forward", [("forward", "x", False)]),
    ("moving averages", [("stats",), ("forward", "b0", False), ("forward", "b1", False), ("forward", "b2", False),
                         ("stats",)]),
    ("eval mode", [("forward", "b0", False), ("forward", "b1", False), ("stats",), ("eval",), ("forward", "x", False),
                   ("stats",)]),
    ("saved by state_dict", [("forward", "b0", False), ("forward", "b1", False), ("stats",), ("save_load",)]),
    ("off the graph", [("forward", "b0", True), ("forward", "b1", True), ("stats",), ("graph",)]),
    ("gradients", [("forward", "x", True), ("backward", "dy")]),
)
LINE_NAMES = tuple(name for name, _ in LINES)


def draw(seed):
    """The steps (two cases × seven lines), their inputs ({key: array}) and what the judge keeps."""
    steps, inputs = [], {}
    for k, (label, shape, dims) in enumerate(CASES):
        cs = N.channel_shape(shape)
        for j, (line, ops) in enumerate(LINES):
            rng = np.random.default_rng([seed, k, j])
            key = f"{k}/{line}"
            step = {"key": key, "line": line, "case": label, "shape": shape, "points": 1,
                    "constructor": {"num_features": shape[1], "num_dims": dims, "momentum": MOMENTUM, "eps": EPS},
                    "ops": [["new"]], "inputs": []}
            if ops is not None:
                mine = {"gamma": 1 + 0.5 * rng.standard_normal(cs), "beta": rng.standard_normal(cs)}
                for op in ops:
                    if op[0] == "forward":
                        mine.setdefault(op[1], _batch(shape, rng, small_channel=line != "gradients"))
                mine["dy"] = rng.standard_normal(shape)
                mine = {name: _float32(a) for name, a in mine.items()}
                step["ops"].append(["set", f"{key}/gamma", f"{key}/beta"])
                step["ops"] += [[op[0], f"{key}/{op[1]}", op[2]] if op[0] == "forward" else
                                [op[0], f"{key}/{op[1]}"] if op[0] == "backward" else list(op) for op in ops]
                for name, a in mine.items():
                    inputs[f"{key}/{name}"] = a
                step["inputs"] = [f"{key}/{name}" for name in mine]
            steps.append(step)
    return steps, inputs, None


# ---- reading a step's record ----------------------------------------------------------------
def _dtype_problem(facts):
    """What is wrong with γ's or β's dtype (from the "new" facts), or None: one
    cause, named the same way on every line it breaks (so the report prints it once)."""
    for name in ("gamma", "beta"):
        dtype = (facts.get(name) or {}).get("dtype", "float32") if isinstance(facts, dict) else "float32"
        if isinstance(dtype, str) and dtype not in ("float32", ""):
            return (f"self.{name} is {dtype[:20]}: in a float32 network every op would mix dtypes; create it as "
                    "float32 (np.ones(shape, np.float32))")
    return None


class Recorded:
    """A step's record, each operation's result fetched by index: a missing one is
    the exception that stopped the step (the student's), what the module lacked,
    or no result."""

    def __init__(self, record, step, exam):
        if not isinstance(record, dict) or not isinstance(record.get("ops"), list):
            raise NoResult("no record")
        self.record, self.step, self.exam = record, step, exam
        self.ops = record["ops"]
        self.shape = step["shape"]

    def input(self, name):
        return self.exam.inputs[f"{self.step['key']}/{name}"]

    def op(self, i):
        if i < len(self.ops):
            return self.ops[i] if isinstance(self.ops[i], dict) else {}
        if i == len(self.ops):
            kind = self.step["ops"][i][0]
            if "missing" in self.record:
                raise Blocked("needs self.gamma and self.beta (see the parameters line)")
            if isinstance(self.record.get("raised"), str):
                raised = self.record["raised"][:3000]
                cause = _dtype_problem(self.ops[0] if self.ops and isinstance(self.ops[0], dict) else
                                       {n: {"dtype": d} for n, d in (self.record.get("dtypes") or {}).items()}
                                       if isinstance(self.record.get("dtypes"), dict) else {})
                if kind == "forward":
                    if cause:
                        raise LineFailed(cause)
                    raise LineFailed(f"forward raised {raised}")
                if kind == "new":
                    raise LineFailed(f"the constructor raised {raised}")
                what = {"stats": "reading the moving statistics", "eval": "eval()", "save_load": "state_dict()",
                        "graph": "reading the moving statistics", "backward": "backward()", "set": "setting γ and β"}
                raise LineFailed(f"{what.get(kind, kind)} raised {raised}")
        raise NoResult("the step's record ends early")

    def y(self, i):
        return array(field(self.op(i), "y", dict), self.shape).reshape(self.shape)

    def stats(self, i):
        """(mean name, var name, mean, var), or LineFailed when the module keeps none."""
        s = self.op(i)
        return _stats(s, self.step["shape"])

    def normalizing(self, forwards):
        """Blocked unless the training forwards at ``forwards`` (op indices) gave γ·x̂ + β,
        loosely: per channel, a mean near β and a spread at most |γ|."""
        for i in forwards:
            op_x = self.step["ops"][i][1].rsplit("/", 1)[1]
            x, y = self.input(op_x), self.y(i)
            g, b = self.input("gamma"), self.input("beta")
            axes = _axes(self.shape)
            mean, std, x_std = y.mean(axes, keepdims=True), y.std(axes, keepdims=True), x.std(axes, keepdims=True)
            ok = (np.all(np.isfinite(y)) and np.all(np.abs(mean - b) <= 0.1 * np.abs(g) + 1e-3)
                  and np.all(std <= 1.05 * np.abs(g) + 1e-3)
                  and np.all(std >= 0.2 * np.abs(g) * np.minimum(1, x_std / 1e-2))
                  and _follows(x, y, axes))
            if not ok:
                raise Blocked("needs a training forward that normalizes (γ·x̂ + β per channel), which this "
                              "step's forwards did not give (see the training forward line)")


def _follows(x, y, axes):
    """Whether y follows x in every channel where x varies: |correlation| ≥ 0.5. A
    forward that ignores x (standardized noise has γ·x̂ + β's mean and spread)
    correlates with it by chance alone, about ±1/√m; every normalization with
    one mistake (ε, the variance's divisor, the axes, the statistics used) stays
    near ±1."""
    channel = 1 if x.ndim > 1 else 0
    xs, ys = (np.moveaxis(a, channel, 0).reshape(a.shape[channel], -1).astype(np.float64) for a in (x, y))
    xs, ys = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    spread = np.sqrt((xs ** 2).sum(1) * (ys ** 2).sum(1))
    varies = np.sqrt((xs ** 2).mean(1)) > 1e-2
    corr = np.abs((xs * ys).sum(1)) / np.where(spread > 0, spread, 1)
    return bool(np.all(corr[varies & (spread > 0)] >= 0.5) and not np.any(varies & (spread == 0)))


def _stats(s, shape):
    if not field(s, "found", bool):
        raise LineFailed("no moving statistics found: keep them as self.moving_mean and self.moving_var "
                         "(tensors shaped like gamma), as the skeleton does")
    cs = N.channel_shape(shape)
    names = field(s, "mean_name", str), field(s, "var_name", str)
    if not all(n in ("moving_mean", "running_mean", "moving_var", "running_var") for n in names):
        raise NoResult("unknown statistics")
    mean, var = array(field(s, "mean", dict)), array(field(s, "var", dict))
    if mean.size != shape[1] or var.size != shape[1]:
        raise LineFailed(f"the moving mean has shape {mean.shape} and the moving variance {var.shape}, expected "
                         f"{cs} (the shape of gamma)")
    return names[0], names[1], mean.reshape(cs), var.reshape(cs)


START = {"mean": 0.0, "var": 1.0}       # the skeleton's moving statistics before any batch (d2l's and PyTorch's too)
CONVENTIONS = {("course", "biased"): (MOMENTUM, False), ("course", "unbiased"): (MOMENTUM, True),
               ("reversed", "biased"): (1 - MOMENTUM, False), ("reversed", "unbiased"): (1 - MOMENTUM, True)}


def moving_statistics(batches, shape):
    """{(convention, variance): (mean, var)} after training forwards on ``batches``
    from the skeleton's start: the judge's own, from the inputs it sent."""
    axes = _axes(shape)
    count = int(np.prod([shape[a] for a in axes]))
    cs = N.channel_shape(shape)
    out = {}
    for key, (w_old, unbiased) in CONVENTIONS.items():
        mu, v = np.full(cs, START["mean"]), np.full(cs, START["var"])
        for x in batches:
            bv = x.var(axes, keepdims=True) * (count / (count - 1) if unbiased else 1)
            mu, v = w_old * mu + (1 - w_old) * x.mean(axes, keepdims=True), w_old * v + (1 - w_old) * bv
        out[key] = (mu, v)
    return out


def _recomputed(r, i, batches):
    """The statistics reported at op ``i``, Blocked unless they are a moving
    average of ``batches`` the judge computes itself (any convention)."""
    names = r.stats(i)
    mean, var = names[2], names[3]
    for mu, v in moving_statistics([r.input(b) for b in batches], r.shape).values():
        if _relative(mean, mu) < TOLERANCE and _relative(var, v) < TOLERANCE:
            return names
    raise Blocked("needs moving statistics that are a moving average of the batches from the skeleton's start "
                  "(0 and 1), which this step's were not (see the moving averages line)")


# ---- the lines --------------------------------------------------------------------------------
def check_parameters(r):
    facts = r.op(0)
    want = N.channel_shape(r.shape)               # (1, C) or (1, C, 1, 1), the skeleton's shape
    for name in ("gamma", "beta"):
        t = field(facts, name, (dict, None))
        if t is None:
            raise LineFailed(f"no self.{name}: the skeleton creates gamma = ones(shape), beta = zeros(shape)")
        if not field(t, "registered", bool):
            raise LineFailed(f"self.{name} is not a registered parameter, so an optimizer never updates it: "
                             f"wrap it, self.{name} = Parameter(...)")
        shape = t.get("shape")
        if not (isinstance(shape, list) and all(type(n) is int for n in shape[:8])):
            raise NoResult("a malformed shape")
        if tuple(shape) != want:
            raise LineFailed(f"self.{name} has shape {tuple(shape[:8])}; with num_dims={len(r.shape)} the skeleton's "
                             f"shape is {want}")
    cause = _dtype_problem(facts)
    if cause:
        raise LineFailed(cause)
    return "γ and β are float32 parameters of shape " + str(want)


def check_training_forward(r):
    r.op(1)
    y = r.y(2)
    x, g, b, axes = r.input("x"), r.input("gamma"), r.input("beta"), _axes(r.shape)
    reference = _normalize(x, x.mean(axes, keepdims=True), x.var(axes, keepdims=True), g, b, EPS)
    rel = _relative(y, reference)
    if rel > TOLERANCE:
        no_eps = _normalize(x, x.mean(axes, keepdims=True), x.var(axes, keepdims=True), g, b, 0.0)
        hint = (" It matches the formula without ε: divide by √(σ² + ε)." if _relative(y, no_eps) < TOLERANCE
                else " Training mode normalizes with the batch's mean and biased variance over the axes "
                f"{axes}, then y = γ·x̂ + β.")
        raise LineFailed(f"relative error {rel:.1e} against (x − μ)/√(σ² + ε)·γ + β.{hint}")
    return f"matches the reference to {rel:.1e}"


def check_moving_averages(r):
    r.op(1)
    _, _, mean, var = r.stats(2)
    axes, m = _axes(r.shape), MOMENTUM
    if not (np.all(mean == START["mean"]) and np.all(var == START["var"])):
        # the judge's averages start where the skeleton's do: a start of its own (1e30 hides any batch's
        # share within the tolerance) is not the homework's module
        raise LineFailed(f"the moving statistics start at mean {np.ravel(mean)[:3]}, variance {np.ravel(var)[:3]}: "
                         "start them at 0 and 1 (zeros and ones shaped like gamma), as the skeleton does")
    candidates = moving_statistics([r.input(f"b{i}") for i in range(3)], r.shape)
    for i in (3, 4, 5):
        r.op(i)
    _, _, got_mean, got_var = r.stats(6)
    course = candidates[("course", "biased")]
    close = {k: (_relative(got_mean, mu) < TOLERANCE, _relative(got_var, v) < TOLERANCE)
             for k, (mu, v) in candidates.items()}
    if close[("course", "biased")] == (True, True):
        return f"momentum={m} weighs the old value; the variance is the biased one (the course's convention)"
    if close[("course", "unbiased")] == (True, True):
        return (f"momentum={m} weighs the old value; the variance is the unbiased one (PyTorch's convention; the "
                "course keeps the biased one)")
    if any(both == (True, True) for (c, _), both in close.items() if c == "reversed"):
        raise LineFailed(f"momentum weighs the NEW value (PyTorch's momentum): after 3 steps the moving statistics "
                         f"match (1 − m)·old + m·batch. The course's momentum weighs the old one: "
                         f"moving = momentum·moving + (1 − momentum)·batch (constructed with momentum={m})")
    unchanged = [what for what, got, start in (("mean", got_mean, mean), ("variance", got_var, var))
                 if got.shape == start.shape and np.array_equal(got, start)]
    if unchanged:
        names = " and ".join(f"moving {what}" for what in unchanged)
        raise LineFailed(f"the {names} never change{'s' * (len(unchanged) == 1)} in training: computed but never "
                         "stored back. Assign the new value to the attribute (self.moving_mean = momentum·"
                         "self.moving_mean + (1 − momentum)·batch mean), not to a local variable")
    mean_right = any(mean_ok for (c, _), (mean_ok, _) in close.items() if c == "course")
    var_right = any(var_ok for (c, _), (_, var_ok) in close.items() if c == "course")
    off = {what: _relative(got, want) for what, got, want in (("mean", got_mean, course[0]),
                                                               ("variance", got_var, course[1]))}
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


def check_eval(r):
    r.op(1)
    r.normalizing((2, 3))
    _, _, mean, var = _recomputed(r, 4, ("b0", "b1"))
    r.op(5)
    y = r.y(6)
    _, _, mean_after, var_after = r.stats(7)
    if not (mean.shape == mean_after.shape and var.shape == var_after.shape and np.array_equal(mean, mean_after)
            and np.array_equal(var, var_after)):
        raise LineFailed("eval mode changed the moving statistics: update them only in training mode "
                         "(if self.training: ...)")
    x, g, b, axes = r.input("x"), r.input("gamma"), r.input("beta"), _axes(r.shape)
    try:
        uses_moving = min(_relative(y, _normalize(x, mean, var, g, b, eps)) for eps in (EPS, 0.0))
    except ValueError:                      # statistics of another shape
        uses_moving = np.inf
    if uses_moving < TOLERANCE:
        return "eval normalizes with the moving statistics and leaves them unchanged"
    if _relative(y, _normalize(x, x.mean(axes, keepdims=True), x.var(axes, keepdims=True), g, b, EPS)) < TOLERANCE:
        raise LineFailed("eval mode normalizes with the batch's own statistics: at test time use the moving "
                         "mean and variance (if not self.training: ...)")
    raise LineFailed(f"eval output is off by {uses_moving:.1e} (relative) from (x − moving_mean)/√(moving_var + ε)·γ + β")


def check_saved(r):
    r.op(1)
    r.normalizing((2, 3))
    mean_name, var_name, mean, var = _recomputed(r, 4, ("b0", "b1"))
    saved = r.op(5)
    state, plain = field(saved, "state_keys", list), field(saved, "plain", list)
    missing = [n for n in (mean_name, var_name) if n not in state]
    if missing:
        raise LineFailed(f"state_dict() leaves out {', '.join(missing)}: "
                         + (f"{', '.join(plain)} {'is a' if len(plain) == 1 else 'are'} plain tensor attribute"
                            f"{'' if len(plain) == 1 else 's'}, neither parameter nor buffer, " if plain else "")
                         + "so a saved model loses its running statistics; register them: "
                         f"self.register_buffer('{mean_name}', ...)")
    error = field(saved, "load_error", (str, None))
    if error:
        raise LineFailed(f"load_state_dict of its own state_dict raised {error}")
    try:
        _, _, mean2, var2 = _stats(field(saved, "restored", dict), r.shape)
    except LineFailed:
        raise LineFailed("the module loaded from the state_dict has no moving statistics") from None
    if not (mean.shape == mean2.shape and var.shape == var2.shape and np.array_equal(mean, mean2)
            and np.array_equal(var, var2)):
        raise LineFailed("load_state_dict did not restore the moving statistics")
    return f"{mean_name} and {var_name} are saved and restored" + (
        f" (note: {', '.join(plain)} are tensors that are neither parameters nor buffers)" if plain else "")


def check_off_graph(r):
    r.op(1)
    r.normalizing((2, 3))
    _recomputed(r, 4, ("b0", "b1"))
    on = field(r.op(5), "on_graph", list)
    if on:
        raise LineFailed(f"self.{on[0]} is on the autograd graph (it requires a gradient): every step's graph "
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


def check_gradients(r):
    r.op(1)
    try:
        r.op(2)
    except LineFailed as e:
        if str(e) == _dtype_problem(r.op(0)):       # one cause, reported as such on every line it breaks
            raise
        raise Blocked(f"the forward with gradients raised {str(e).split(': ')[0][len('forward raised '):]} "
                      "(see the lines above)") from None
    grads = r.op(3)
    x, g, b, dy = r.input("x"), r.input("gamma"), r.input("beta"), r.input("dy")
    t = N.backward_staged(dy, x, g, EPS, _axes(r.shape))
    worst = []
    for name, ref in (("dx", t.g_x), ("dgamma", t.g_gamma), ("dbeta", t.g_beta)):
        got = field(grads, name, (dict, None))
        if got is None:
            raise LineFailed(f"{name} is None after backward(): is self.{name[1:] or 'x'} used through tensor ops?")
        got = array(got, ref.shape).reshape(ref.shape)
        rel = _relative(got, ref)
        if rel > TOLERANCE:
            for detach, (says, held) in (DETACHED.items() if name == "dx" else ()):
                other = _autograd_reference(x, g, b, dy, _axes(r.shape), detach)[0]
                if _relative(got, other) < TOLERANCE:
                    raise LineFailed(f"{says} detached from the graph: the gradient through the batch statistics is "
                                     f"missing (dx matches the backward with {held} held constant). "
                                     "Compute them from X with tensor ops and keep them on the graph; only the "
                                     "moving statistics go under no_grad")
            raise LineFailed(f"{name} by autograd through your forward is off by {rel:.1e} (relative) from the "
                             "hand-derived backward: the forward's graph computes something else")
        worst.append(rel)
    return f"dx, dγ, dβ by autograd match the hand-derived backward to {max(worst):.1e}"


CHECKS = {"parameters": check_parameters, "training forward": check_training_forward,
          "moving averages": check_moving_averages, "eval mode": check_eval, "saved by state_dict": check_saved,
          "off the graph": check_off_graph, "gradients": check_gradients}


def judge_step(step, record, exam):
    """(status, message) of one step's line."""
    try:
        return "PASS", CHECKS[step["line"]](Recorded(record, step, exam))
    except Blocked as e:
        return "SKIP", str(e)
    except LineFailed as e:
        return "FAIL", str(e)
    except NoResult as e:
        return "FAIL", f"no result came back for this line ({e}): the run stopped before it, or sent something else"
    except Exception as e:     # results of any shape no line foresaw (untrusted data): never a crash
        return "FAIL", f"the results of this line could not be read ({type(e).__name__}): no result"


def mark(exam, steps, records, report, framework, per_line=False):
    """Judge every step into ``report``, with the text ``check`` prints."""
    if not per_line:
        report.say(f"Grading {exam.target} ({framework or 'unknown'} module), constructed as "
                   f"{exam.target}(num_features, num_dims, momentum={MOMENTUM}, eps={EPS}), in float32, "
                   f"to a relative tolerance of {TOLERANCE:g}.\n")
    case = None
    for step in steps:
        if not per_line and step["case"] != case:
            if case is not None:
                report.say()
            case = step["case"]
            report.say(f"{case}, num_dims={step['constructor']['num_dims']}:")
        status, message = judge_step(step, records.get(step["key"]), exam)
        shown = report.add(step["case"], step["line"], status, message)
        report.say(f"{status}  {step['line']} on {step['case']}: {shown}" if per_line else
                   f"  {status}  {step['line']}: {shown}")
    if not per_line:
        report.say()
        report.say(report.verdict)
