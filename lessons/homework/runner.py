"""What runs a submission: the only code of the grader that meets the student's.

It loads the target (the class or function a submission must define) from the
submission, runs it under a fixed protocol on the inputs the teacher's process
sends, and writes back raw results: arrays, facts (names, shapes, dtypes) and
exceptions as text. It decides nothing; the judge (``lessons.homework.judge``)
decides every line from these results, outside.

Inside the sandbox it runs as a script, ``python runner.py SUBMISSION.py
TARGET KIND``: the plan arrives as JSON on stdin, and each step's result goes out
as one JSON line on the file descriptor named by ``GRADER_RESULTS_FD``. The
student's prints go to stdout. So it imports only the standard library, NumPy
and minidl (and PyTorch when the target is a ``torch.nn.Module``), never
``lessons``. ``check`` calls :func:`run_plan` in its own process instead.

The plan is a list of steps; a step builds what it needs (a module with the
given constructor arguments) and runs a few operations in order, each recorded:

    new                         build the module; γ's and β's facts
    set GAMMA BETA              assign γ and β the given values
    forward X GRAD              y = module(x), x requiring a gradient when GRAD
    stats                       the moving statistics' names and values
    eval                        module.eval()
    save_load                   state_dict(), a new module loading it, its statistics
    graph                       which moving statistics are on the autograd graph
    backward DY                 y.backward(dy) on the last forward; dx, dγ, dβ

A backward function's step is one call on its arrays (``args``): what it
returned, as arrays, or why they are not arrays.

An exception stops its step and is recorded (type, message, the student's line);
the next step starts afresh.
"""
import importlib.util
import json
import os
import sys
import traceback

import numpy as np

STAT_NAMES = (("moving_mean", "running_mean"), ("moving_var", "running_var"))


# ---- arrays as JSON: exact for float64, readable by json.loads alone ----------------
def encode(a):
    """An array as {"shape", "dtype", "data"} (the values as float64, NaN and ∞ as JSON's words)."""
    a = np.asarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.astype(np.float64).ravel().tolist()}


def decode(d):
    return np.asarray(d["data"], np.float64).reshape(d["shape"])


# ---- the frameworks a module may be written in ---------------------------------------
class Minidl:
    """What the protocol does with a minidl module, in minidl's words."""
    name = "minidl"

    def __init__(self):
        import minidl
        self.md = minidl

    def tensor(self, a, grad=False):
        return self.md.Tensor(np.asarray(a, np.float32), requires_grad=grad)

    def numpy(self, t):
        return self.md.backend.as_numpy(t.data if isinstance(t, self.md.Tensor) else t)

    def is_tensor(self, t):
        return isinstance(t, self.md.Tensor)

    def no_grad(self):
        return self.md.no_grad()

    def parameters(self, module):
        return dict(module.named_parameters())

    def buffers(self, module):
        return dict(module.named_buffers())

    def set_value(self, t, value):
        t.data = self.md.backend.to_device(np.asarray(value, t.dtype).reshape(t.shape), t.device)

    def state_dict(self, module):
        return {k: np.asarray(v) for k, v in module.state_dict().items()}

    def load_state_dict(self, module, state):
        module.load_state_dict(state)

    def on_graph(self, t):
        return bool(t.requires_grad or t.creator is not None)

    def backward(self, y, dy):
        y.backward(np.asarray(dy, np.float32))

    def grad(self, t):
        return None if t.grad is None else self.md.backend.as_numpy(t.grad)


class Torch(Minidl):
    """The same in PyTorch's words, for the homework as the course hands it out."""
    name = "PyTorch"

    def __init__(self):
        import torch
        self.torch = torch

    def tensor(self, a, grad=False):
        return self.torch.tensor(np.asarray(a, np.float32), requires_grad=grad)

    def numpy(self, t):
        return t.detach().cpu().numpy()

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
        return bool(t.requires_grad or t.grad_fn is not None)

    def backward(self, y, dy):
        y.backward(self.torch.tensor(np.asarray(dy, np.float32)))

    def grad(self, t):
        return None if t.grad is None else t.grad.detach().cpu().numpy()


class WrongKind(Exception):
    """The target is not what the plan grades (a function where a module class is expected, or the reverse)."""


def framework_of(cls):
    """The framework of a module class, or WrongKind naming what it got."""
    import minidl
    if issubclass(cls, minidl.nn.Module):
        return Minidl()
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(cls, torch.nn.Module):
        return Torch()
    raise WrongKind(f"{cls.__name__} is a class but neither a minidl md.nn.Module nor a torch.nn.Module; the "
                    "homework's BatchNorm2d subclasses one of them")


def check_kind(target, name, kind):
    """Refuse a target of the other kind, saying what it is and what the grader expects."""
    is_class = isinstance(target, type)
    if kind == "module" and not is_class:
        raise WrongKind(f"{name} is a {type(target).__name__}, not a class: the module grader builds "
                        f"{name}(num_features, num_dims, momentum, eps), a subclass of md.nn.Module or "
                        "torch.nn.Module (a backward function is graded with --name batchnorm_backward)")
    if kind == "backward" and (is_class or not callable(target)):
        what = "a class" if is_class else f"a {type(target).__name__}"
        raise WrongKind(f"{name} is {what}, not a function: the backward grader calls "
                        f"{name}(dy, x, gamma, beta, eps) -> (dx, dgamma, dbeta) (a module class is graded "
                        "with --name BatchNorm2d)")


# ---- the student's lines in a traceback ---------------------------------------------------
def student_frames(exc, files, last_only=False):
    """The lines of a traceback inside ``files`` (the student's), as text; with
    ``last_only`` the innermost one."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) in files]
    return "".join(traceback.format_list(frames[-1:] if last_only else frames)).rstrip()


def error_text(exc, files):
    """``Type: message`` and where in the student's code (a few lines, never the grader's)."""
    where = student_frames(exc, files, last_only=True)
    return f"{type(exc).__name__}: {str(exc)[:2000]}" + (f"\n{where}" if where else "")


# ---- one step: build, operate, record --------------------------------------------------------
def _stats(module, fw):
    found = []
    for names in STAT_NAMES:
        name = next((n for n in names if hasattr(module, n)), None)
        value = getattr(module, name) if name else None
        found.append((name, value if value is not None and fw.is_tensor(value) else None))
    if any(v is None for _, v in found):
        return {"found": False}
    (mean_name, mean), (var_name, var) = found
    return {"found": True, "mean_name": mean_name, "var_name": var_name,
            "mean": encode(fw.numpy(mean)), "var": encode(fw.numpy(var))}


def _param_facts(module, fw):
    params = fw.parameters(module)
    facts = {}
    for name in ("gamma", "beta"):
        t = getattr(module, name, None)
        facts[name] = None if t is None else {
            "registered": any(p is t for p in params.values()), "shape": [int(n) for n in getattr(t, "shape", ())],
            "dtype": str(getattr(t, "dtype", "")).split(".")[-1]}
    return facts


class Missing(Exception):
    """An operation needs something the module lacks (γ or β): the step stops, not as the student's error."""


class Step:
    """One step's module and what its operations recorded."""

    def __init__(self, cls, fw, plan, inputs):
        self.cls, self.fw, self.plan, self.inputs = cls, fw, plan, inputs
        self.module = self.x = self.y = None

    def construct(self):
        c = self.plan["constructor"]
        return self.cls(c["num_features"], c["num_dims"], momentum=c["momentum"], eps=c["eps"])

    def new(self):
        self.module = self.construct()
        return _param_facts(self.module, self.fw)

    def set(self, gamma, beta):
        for name, key in (("gamma", gamma), ("beta", beta)):
            t = getattr(self.module, name, None)
            if t is None:
                raise Missing(name)
            self.fw.set_value(t, self.inputs[key])
        return {}

    def forward(self, x, grad):
        self.x = self.fw.tensor(self.inputs[x], grad=grad)
        if grad:
            self.y = self.module(self.x)
        else:
            with self.fw.no_grad():
                self.y = self.module(self.x)
        return {"y": encode(self.fw.numpy(self.y))}

    def stats(self):
        return _stats(self.module, self.fw)

    def eval(self):
        self.module.eval()
        return {}

    def save_load(self):
        fw, module = self.fw, self.module
        state = fw.state_dict(module)
        known = set(fw.parameters(module)) | set(fw.buffers(module))
        plain = sorted(k for k, v in vars(module).items() if fw.is_tensor(v) and k not in known)
        other = self.construct()
        try:
            fw.load_state_dict(other, state)
            loaded = None
        except Exception as e:
            loaded = f"{type(e).__name__}: {str(e)[:500]}"
        return {"state_keys": sorted(str(k) for k in state)[:100], "plain": plain[:100], "load_error": loaded,
                "restored": _stats(other, self.fw)}

    def graph(self):
        on = [n for names in STAT_NAMES for n in names
              if self.fw.is_tensor(getattr(self.module, n, None)) and self.fw.on_graph(getattr(self.module, n))]
        return {"on_graph": on}

    def backward(self, dy):
        self.fw.backward(self.y, self.inputs[dy])
        grads = {"dx": self.fw.grad(self.x), "dgamma": self.fw.grad(self.module.gamma),
                 "dbeta": self.fw.grad(self.module.beta)}
        return {k: None if g is None else encode(g) for k, g in grads.items()}


# the plan's operations, by name (the docstring's table)
OPS = {"new": Step.new, "set": Step.set, "forward": Step.forward, "stats": Step.stats, "eval": Step.eval,
       "save_load": Step.save_load, "graph": Step.graph, "backward": Step.backward}


def call_backward(fn, dy, x, gamma, beta, eps):
    """The backward function on copies of the inputs: what it returned, as data."""
    returned = fn(dy.copy(), x.copy(), gamma.copy(), beta.copy(), eps)
    if not isinstance(returned, (tuple, list)):
        return {"count": None, "type": type(returned).__name__}
    values = []
    for v in list(returned)[:3]:
        try:
            a = np.asarray(v)
            if a.dtype.kind not in "biuf" or a.size > 10 ** 6:
                raise TypeError(f"an array of {a.dtype} with {a.size} elements")
            values.append(encode(a))
        except Exception as e:
            values.append({"error": f"{type(e).__name__}: {str(e)[:300]}"})
    return {"count": len(returned), "values": values}


def run_step(target, fw, step, inputs, files):
    """One step of the plan: {"step": key, "ops": [recorded, ...]} and, if it
    stopped early, "raised" (the student's exception) or "missing" (what it lacked)."""
    record = {"step": step["key"], "ops": []}
    if fw is None:                                       # a backward function
        a = step["args"]
        try:
            record["ops"].append(call_backward(target, *(inputs[k] for k in a["arrays"]), a["eps"]))
        except Exception as e:
            record["raised"] = error_text(e, files)
        return record
    s = Step(target, fw, step, inputs)
    for op in step["ops"]:
        try:
            record["ops"].append(OPS[op[0]](s, *op[1:]))
        except Missing as e:
            record["missing"] = str(e)
            break
        except Exception as e:
            record["raised"] = error_text(e, files)
            record["dtypes"] = {n: str(getattr(getattr(s.module, n, None), "dtype", "")).split(".")[-1]
                                for n in ("gamma", "beta")}
            break
    return record


def run_plan(target, plan, write, files=()):
    """Every step of ``plan`` on ``target``, each result passed to ``write`` as it
    finishes; ``files``: the student's source files (for the lines of a traceback)."""
    inputs = {k: decode(v).astype(np.float32 if plan["kind"] == "module" else np.float64)
              for k, v in plan["inputs"].items()}
    files = {os.path.abspath(f) for f in files}
    try:
        check_kind(target, plan["target"], plan["kind"])
        fw = framework_of(target) if plan["kind"] == "module" else None
    except WrongKind as e:
        write({"step": "load", "wrong_kind": str(e)})
        return
    write({"step": "load", "framework": fw.name if fw else "function"})
    for step in plan["steps"]:
        write(run_step(target, fw, step, inputs, files))
    write({"step": "done"})


def load(path, name):
    """The target ``name`` from the Python file ``path`` (run as the module ``submission``)."""
    spec = importlib.util.spec_from_file_location("submission", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module             # so its classes know their source file
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))[:20]
        raise LookupError(f"{os.path.basename(path)} defines no {name!r} (it defines: {', '.join(found) or 'nothing'})")
    return getattr(module, name)


def main():
    path, name = sys.argv[1], sys.argv[2]
    results = os.fdopen(int(os.environ["GRADER_RESULTS_FD"]), "w")

    def write(record):
        results.write(json.dumps(record) + "\n")
        results.flush()

    plan = json.loads(sys.stdin.read())
    try:
        target = load(path, name)
    except LookupError as e:
        write({"step": "load", "missing_target": str(e)})
        return 0
    except Exception as e:       # SyntaxError, ImportError, its own exception at import
        if isinstance(e, SyntaxError):
            shown = traceback.format_exception_only(e)
            text = f"{type(e).__name__}: {e.msg} (line {e.lineno})\n" + "".join(shown[1:-1]).rstrip("\n")
        else:
            text = error_text(e, {os.path.abspath(path)})
        write({"step": "load", "raised": text})
        return 0
    run_plan(target, plan, write, files=[path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
