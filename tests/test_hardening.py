"""Every input a student might give: PyTorch's result, or an error that names
the op or layer, what it got and what it expected."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from conftest import randn, host


# ---- scalars take the tensor's dtype, in every op and both orders -----------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scalar", [0.5, 2, np.float64(2.0), np.float32(2.0), np.int64(3)])
def test_scalars_take_the_tensors_dtype_in_both_orders(dtype, scalar):
    x = md.Tensor(randn(3).astype(dtype))
    for y in (x + scalar, scalar + x, x - scalar, scalar - x, x * scalar, scalar * x,
              x / scalar, scalar / x, F.sub(x, scalar), F.add(scalar, x), F.maximum(x, scalar)):
        assert y.dtype == dtype
    np.testing.assert_allclose((x - scalar).numpy(), x.numpy() - dtype_of(scalar, dtype), rtol=1e-6)


def dtype_of(scalar, dtype):
    return np.asarray(scalar).astype(dtype)


def test_mixing_float_tensors_still_refuses():
    with pytest.raises(TypeError, match="different float dtypes"):
        md.Tensor(randn(3)) - md.Tensor(randn(3).astype(np.float32))


# ---- numerics ---------------------------------------------------------------
def test_sigmoid_is_exact_in_both_tails():
    x = np.array([-800.0, -40.0, -30.0, -21.0, 0.0, 21.0, 40.0, 800.0])
    exact = np.array([0.0] + [np.exp(v) / (1 + np.exp(v)) for v in x[1:4]] + [0.5]
                     + [1 / (1 + np.exp(-v)) for v in x[5:7]] + [1.0])
    y = F.sigmoid(md.Tensor(x)).numpy()
    np.testing.assert_allclose(y, exact, rtol=1e-15, atol=0)
    assert y[1] > 0                                   # 4.2e-18, not 0
    t = md.Tensor(np.array([-40.0, -30.0]), requires_grad=True)
    F.sigmoid(t).sum().backward()
    np.testing.assert_allclose(host(t.grad), exact[1:3] * (1 - exact[1:3]), rtol=1e-15)


def test_power_zero_has_zero_gradient_at_zero():
    x = md.Tensor(np.array([0.0, 2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 0.0])


# ---- empty tensors, flatten -------------------------------------------------
def test_empty_reductions_follow_one_rule():
    # a sum of no values is 0, a product 1; a statistic of no values is an error naming op and shape
    assert md.Tensor(np.zeros(0)).sum().item() == 0 and md.Tensor(np.zeros(0)).prod().item() == 1
    assert md.Tensor(np.zeros((0, 1))).max(axis=1).shape == (0,)   # well defined: nothing reduced empty
    assert md.Tensor(np.zeros((0, 1))).mean(axis=1).shape == (0,)
    for op, call in (("max", lambda t: t.max(axis=0)), ("mean", lambda t: t.mean(axis=0)),
                     ("argmax", lambda t: t.argmax(axis=0)), ("var", lambda t: t.var(axis=0)),
                     ("min", lambda t: t.min())):
        with pytest.raises(ValueError, match=rf"{op}: 0 value\(s\) over axes \(0,( 1)?\) of a tensor of shape \(0, 1\)"):
            call(md.Tensor(np.zeros((0, 1))))
    with pytest.raises(ValueError, match=r"var: 1 value\(s\) over axes \(0,\) .* needs at least 2"):
        md.Tensor(np.ones(1)).var(ddof=1)


def test_flatten_is_numpys_and_the_layer_keeps_the_batch():
    assert md.Tensor(randn(3)).flatten().shape == (3,)
    assert md.Tensor(randn(2, 3, 4)).flatten().shape == (24,)
    assert md.nn.Flatten()(md.Tensor(randn(2, 3, 4))).shape == (2, 12)


# ---- layers refuse what PyTorch refuses --------------------------------------
@pytest.mark.parametrize("pool", [md.nn.MaxPool2d, md.nn.AvgPool2d])
def test_pool_padding_at_most_half_the_kernel(pool):
    with pytest.raises(ValueError, match=r"padding \(2, 2\) is more than half the kernel \(2, 2\)"):
        pool(2, padding=2)(md.Tensor(randn(1, 1, 4, 4)))
    assert pool(3, stride=1, padding=1)(md.Tensor(randn(1, 1, 4, 4))).shape == (1, 1, 4, 4)


def test_pools_share_a_base_not_each_other():
    assert not isinstance(md.nn.AvgPool2d(2), md.nn.MaxPool2d)
    assert isinstance(md.nn.BatchNorm(3, 2), md.nn.BatchNorm)


def test_functional_norms_refuse_one_value_per_statistic():
    with pytest.raises(ValueError, match=r"instance_norm: expected more than 1 value per statistic.*\(2, 3, 1, 1\)"):
        F.instance_norm(md.Tensor(randn(2, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"group_norm: expected more than 1 value per statistic"):
        F.group_norm(md.Tensor(randn(1, 4)), 4)


def test_layers_name_themselves_for_wrong_inputs():
    lin = md.nn.Linear(4, 2)
    with pytest.raises(TypeError, match=r"Linear: expected a Tensor, got list"):
        lin([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match=r"Linear: input is float64 but the layer's parameters are float32"):
        lin(md.Tensor(randn(3, 4)))
    with pytest.raises(TypeError, match=r"Conv2d: input is float64"):
        md.nn.Conv2d(1, 2, 3)(md.Tensor(randn(1, 1, 5, 5)))
    with pytest.raises(TypeError, match=r"BatchNorm2d: input is float64 but the layer's parameters are float32"):
        md.nn.BatchNorm2d(3)(md.Tensor(randn(4, 3, 2, 2)))
    with pytest.raises(TypeError, match=r"LayerNorm: expected a Tensor, got list"):
        md.nn.LayerNorm(2)([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"RadiusSchedule: Linear has no Sparse Switchable Norm layer"):
        md.nn.RadiusSchedule(lin, 10)


def test_tensor_from_bad_python_values():
    with pytest.raises(ValueError, match="Tensor: the nested lists have different lengths"):
        md.Tensor([[1, 2], [3]])
    with pytest.raises(TypeError, match="Tensor: expected numbers, got str"):
        md.Tensor("0.5")


# ---- optimizers, DataLoader ---------------------------------------------------
def test_optimizers_validate_their_arguments_with_pytorchs_words():
    params = md.nn.Linear(2, 2).parameters()
    with pytest.raises(TypeError, match=r"Adam: got the model \(LeNet5\) itself; pass model.parameters\(\)"):
        md.optim.Adam(md.models.LeNet5())
    with pytest.raises(ValueError, match=r"SGD: Invalid learning rate: '0.01'"):
        md.optim.SGD(params, lr="0.01")
    with pytest.raises(ValueError, match=r"SGD: Invalid momentum value: -0.9"):
        md.optim.SGD(params, lr=0.1, momentum=-0.9)
    with pytest.raises(ValueError, match=r"Adam: Invalid beta parameter at index 1: 1.0"):
        md.optim.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"RMSprop: Invalid weight_decay value: -1"):
        md.optim.RMSprop(params, weight_decay=-1)
    with pytest.raises(TypeError, match="got a single Tensor"):
        md.optim.SGD(params[0], lr=0.1)
    opt = md.optim.SGD((p for p in params), lr=0.1)           # any iterable
    assert len(opt.params) == 2


def test_dataloader_batch_size_must_be_a_positive_integer():
    ds = md.data.ArrayDataset(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4))
    for bad in (32.0, 0, True, "8"):
        with pytest.raises(ValueError, match=f"batch_size should be a positive integer value, but got batch_size={bad!r}"):
            md.data.DataLoader(ds, batch_size=bad)


# ---- checkpoints ----------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: md.optim.SGD(ps, lr=0.1), lambda ps: md.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: md.optim.Adagrad(ps), lambda ps: md.optim.RMSprop(ps), lambda ps: md.optim.Adam(ps)])
def test_any_optimizer_state_round_trips_before_and_after_a_step(tmp_path, make):
    model = md.nn.Linear(3, 2)
    opt = make(model.parameters())
    md.save({"optimizer": opt.state_dict()}, tmp_path / "before.npz")      # no state yet: empty dicts
    assert md.load(tmp_path / "before.npz")["optimizer"]["state"] == {"0": {}, "1": {}}
    F.mse_loss(model(md.Tensor(randn(4, 3).astype(np.float32))), np.zeros((4, 2), np.float32)).backward()
    opt.step()
    md.save({"optimizer": opt.state_dict()}, tmp_path / "after.npz")
    again = make(model.parameters())
    again.load_state_dict(md.load(tmp_path / "after.npz")["optimizer"])
    for a, b in zip(opt.state, again.state):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(host(a[k]), host(b[k]))


def test_load_says_what_a_file_is_and_never_unpickles(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "t.txt").write_text("hello\n")
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:               # torch.save's layout
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    (tmp_path / "p.pkl").write_bytes(b"\x80\x04\x95")
    for name, what in (("a.npy", "a single NumPy array"), ("t.txt", "a text file"),
                       ("model.pt", "a PyTorch checkpoint"), ("p.pkl", "a Python pickle")):
        with pytest.raises(ValueError, match=f"is not a minidl checkpoint: it is {what}"):
            md.load(tmp_path / name)
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="never unpickles"):
        md.load(tmp_path / "objects.npz")


def test_load_state_dict_given_a_path_or_a_whole_checkpoint(tmp_path):
    model = md.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"got str; load the file first: model.load_state_dict\(md.load\('file.npz'\)\)"):
        model.load_state_dict("file.npz")
    md.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "c.npz")
    with pytest.raises(ValueError, match=r"pass its model part: load_state_dict\(state\['model'\]\)"):
        model.load_state_dict(md.load(tmp_path / "c.npz"))


def test_device_and_backend_words_are_not_interchangeable():
    with pytest.raises(ValueError, match="'cupy' names a backend"):
        md.Tensor([1.0]).to("cupy")
    with pytest.raises(ValueError, match=r"'gpu' is a device"):
        md.use_backend("gpu")


LAYERS = {  # a module may import only from these parts of minidl (STYLE.md's one-way flow)
    "backend": set(), "errors": set(), "names": set(), "tensor": {"backend", "errors"},
    "ops": {"backend", "errors", "names", "tensor", "ops"}, "autograd": {"errors", "tensor", "ops"},
    "nn": {"backend", "errors", "names", "tensor", "ops", "functional", "nn"}, "optim": {"backend", "tensor"},
    "data": {"backend", "tensor"}, "gradcheck": {"backend", "tensor"},
    "graph": {"backend", "tensor", "ops", "graph"},   # it names the ops it draws (a / b from a Pow of −1)
    "serialize": {"backend", "tensor"},
}
# An import above a layer is allowed only inside a function, only where listed, and says why.
DEFERRED = {("tensor", "graph"): "BackwardStep prints itself (where it is defined) with graph's labels, "
                                 "which read the ops; imported when a step is printed, not when tensor.py loads"}


def test_imports_flow_one_way_with_no_cycle():
    """Relative and absolute imports alike: each part of minidl imports only the
    parts below it, and no file of the library imports the lessons (or tests)."""
    import ast
    import pathlib
    root = pathlib.Path(md.__file__).parent
    for path in root.rglob("*.py"):
        part = path.relative_to(root).parts[0].removesuffix(".py")
        package = path.relative_to(root).parts[:-1]
        tree = ast.parse(path.read_text())
        deferred = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f)}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(package[:len(package) - node.level + 1])
                target = (base + (node.module or "").split("."))[0] if (base or node.module) else ""
                targets = [target] if node.module or base else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) or isinstance(node, ast.Import):
                modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for m in modules:
                    top, _, rest = m.partition(".")
                    assert top not in ("lessons", "tests"), f"{path.name} imports {m}: the library depends on its teaching scripts"
                    if top == "minidl":
                        targets.append(rest.partition(".")[0])
            if part in LAYERS:
                for t in targets:
                    allowed = LAYERS[part] | {""} | ({t} if id(node) in deferred and (part, t) in DEFERRED else set())
                    assert t in allowed, f"{path.name} imports minidl.{t} (a layer above it)"


def test_functional_norms_never_promote_gamma_silently():
    x = md.Tensor(randn(4, 3))
    gamma = md.Tensor(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="Normalize: inputs have different float dtypes"):
        F.batch_norm(x, gamma=gamma)
    bn = md.nn.BatchNorm1d(3).astype("float64")     # float32 running statistics are cast: they are not parameters
    bn.running_mean.data = bn.running_mean.data.astype(np.float32)
    assert bn.eval()(x).dtype == np.float64


# ---- the dtype rule, kept for integers ----------------------------------------------------
def test_integers_meeting_floats_take_the_floats_dtype_float32_for_a_python_number(backend):
    i = md.Tensor(np.array([1, 2], np.int32))
    f32 = md.Tensor(np.array([0.5, 4.0], np.float32))
    for result, value in ((i + 0.5, [1.5, 2.5]), (i.exp(), np.exp([1, 2])), (i ** 0.5, np.sqrt([1, 2])),
                          (F.maximum(i, f32), [1, 4]), (i / i, [1, 1]), (f32 / i, [0.5, 2]),
                          (2.0 * i, [2, 4]), (i.mean(), 1.5), (i.sigmoid(), 1 / (1 + np.exp([-1, -2])))):
        assert result.dtype == np.float32, result
        np.testing.assert_allclose(md.backend.as_numpy(result.data), value, rtol=1e-6)
    for result in (i + 1, i * 2, i ** 2, -i):                # integers among integers stay integers
        assert result.dtype == np.int32
    f64 = md.Tensor(np.array([0.5, 4.0]))
    assert (i + f64).dtype == np.float64                      # the float tensor's dtype


def test_max_pool_with_padding_on_integers(backend):
    x = md.Tensor(np.arange(16, dtype=np.int32).reshape(1, 1, 4, 4) - 20)     # all negative
    for pool in (F.max_pool2d, F.max_pool2d_reference):
        np.testing.assert_array_equal(md.backend.as_numpy(pool(x, 3, 2, padding=1).data),
                                      [[[[-15, -13], [-7, -5]]]])


def test_astype_to_an_integer_leaves_the_graph(backend):
    t = md.Tensor([1.5, -2.7], requires_grad=True).astype("int32")
    assert t.dtype == np.int32 and not t.requires_grad and t.creator is None
    assert md.backend.as_numpy(t.data).tolist() == [1, -2]


def test_batch_norm_refuses_arrays_as_running_statistics_by_name():
    with pytest.raises(TypeError, match="batch_norm: running_mean must be a Tensor.*got ndarray"):
        F.batch_norm(md.Tensor(np.ones((4, 3))), np.zeros(3), np.ones(3), training=True, decay=0.0)


def test_flatten_of_an_empty_batch_keeps_its_shape():
    assert md.Tensor(np.zeros((0, 0))).flatten(1).shape == (0, 0)
    assert md.nn.Flatten()(md.Tensor(np.zeros((0, 3, 2)))).shape == (0, 6)
    assert md.Tensor(np.zeros((0, 0))).flatten().shape == (0,)


def test_max_pool_layer_refuses_stride_0_as_the_op_does():
    x = md.Tensor(np.zeros((1, 1, 4, 4), np.float32))
    for pool in (lambda: md.nn.MaxPool2d(2, stride=0)(x), lambda: F.max_pool2d(x, 2, stride=0)):
        with pytest.raises(ValueError, match="max_pool2d: stride must be >= 1"):
            pool()
    assert md.nn.MaxPool2d(2).stride == 2                      # None: the window


def test_cuda_is_pytorchs_name_for_the_gpu():
    from minidl import backend
    assert backend.canonical_device("cuda") == "gpu" and backend.canonical_device("cuda:0") == "gpu"
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; expected 'cpu' or 'gpu' \(or PyTorch's 'cuda'\)"):
        md.Tensor([1.0]).to("tpu")


def test_an_unknown_backend_is_refused_at_first_use_naming_the_choices():
    r = subprocess.run([sys.executable, "-c", "import minidl as md; md.Tensor([1.0])"], capture_output=True,
                       text=True, env={**os.environ, "MINIDL_BACKEND": "foo"})
    assert r.returncode != 0 and "MINIDL_BACKEND='foo': expected one of ('numpy', 'cupy')" in r.stderr
