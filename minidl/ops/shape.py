"""Ops that move values around without arithmetic: their backward moves the
gradient back the same way."""
import numpy as np

from .. import backend
from ..errors import InputError
from ..tensor import Function, Tensor
from .elementwise import sum_to
from .reduce import normalize_axis


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise InputError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} values) into {self.shape}") from None

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = axes                     # a permutation of the input's axes, non-negative

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(tuple(int(a) for a in np.argsort(self.axes)))


class GetItem(Function):
    """x[index]; entries an integer array repeats accumulate their gradients."""

    def __init__(self, index):
        self.index = _array_index(index)

    def forward(self, x):
        self.x_shape, self.dtype = x.shape, x.dtype
        if backend.device_of(x) == "gpu":
            self.index = self._on_device(x)
        try:
            return x[self.index]
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor shape {x.shape})") from None

    def _on_device(self, x):
        """The index for a GPU tensor: host index arrays copied over, and integer
        arrays bounds-checked. NumPy raises on an out-of-range index; CuPy wraps it
        around silently, so check (on the device: no synchronization) for NumPy's error."""
        single = not isinstance(self.index, tuple)
        parts = (self.index,) if single else self.index
        axes_known = not any(p is Ellipsis or p is None for p in parts)
        moved = []
        for axis, p in enumerate(parts):
            if isinstance(p, np.ndarray):
                p = backend.to_device(p, "gpu")
            if axes_known and backend.device_of(p) == "gpu" and p.dtype.kind in "iu" and p.size \
                    and axis < x.ndim:
                n = x.shape[axis]
                backend.defer_check(((p < -n) | (p >= n)).any(), IndexError,
                                    f"getitem: an index array holds values outside [-{n}, {n}) "
                                    f"for axis {axis} of a tensor of shape {x.shape}")
            moved.append(p)
        return moved[0] if single else tuple(moved)

    def backward(self, gy):
        gx = self.xp.zeros(self.x_shape, dtype=gy.dtype)
        backend.scatter_add(gx, self.index, gy)
        return gx


def _array_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(_array_index(i) if isinstance(i, (Tensor, list)) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


class Concatenate(Function):
    def __init__(self, axis):
        self.axis = axis                     # non-negative

    def forward(self, *xs):
        for x in xs:
            rest = [n for i, n in enumerate(x.shape) if i != self.axis]
            ref = [n for i, n in enumerate(xs[0].shape) if i != self.axis]
            if x.ndim != xs[0].ndim or rest != ref:
                raise InputError(f"concatenate: shapes {[x.shape for x in xs]} differ outside "
                                 f"axis {self.axis}")
        self.sizes = [x.shape[self.axis] for x in xs]
        return self.xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        cuts = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(self.xp.split(gy, cuts, axis=self.axis))


class Pad(Function):
    """Constant padding by ``width``, one (before, after) pair per axis; a negative
    width crops that many values instead, as PyTorch's constant pad does."""

    def __init__(self, width, value=0.0):
        self.width, self.value = width, value

    def forward(self, x):
        # crop where a width is negative, then pad where it is positive
        self.crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(self.width, x.shape))
        self.grow = [(max(lo, 0), max(hi, 0)) for lo, hi in self.width]
        self.x_shape = x.shape
        return self.xp.pad(x[self.crop], self.grow, constant_values=self.value)

    def backward(self, gy):
        g = gy[tuple(slice(lo, n - hi) for (lo, hi), n in zip(self.grow, gy.shape))]   # unpad
        gx = self.xp.zeros(self.x_shape, dtype=gy.dtype)                            # uncrop
        gx[self.crop] = g
        return gx


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return self.xp.broadcast_to(x, self.shape)
        except ValueError:
            raise InputError(f"broadcast_to: cannot broadcast shape {x.shape} "
                             f"to {self.shape}") from None

    def backward(self, gy):
        return sum_to(gy, self.x_shape)


class AsType(Function):
    """A copy in another floating dtype; the gradient goes back in the original dtype."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.source = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.source)


class ToDevice(Function):
    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return backend.to_device(gy, self.source)


def reshape(x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape(tuple(shape))(x)


def transpose(x, *axes):
    """The axes permuted, as NumPy's: reversed by default, or in the order of a
    tuple or of three or more axes. Two axes, ``transpose(0, 1)``, are swapped,
    as PyTorch's ``transpose(dim0, dim1)`` (NumPy would read them as a whole
    permutation, the identity of a matrix's two axes)."""
    if len(axes) == 2 and all(isinstance(a, (int, np.integer)) for a in axes):
        return swapaxes(x, *axes)
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    axes = tuple(axes) if axes else tuple(reversed(range(x.ndim)))
    if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise InputError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Transpose(tuple(a % x.ndim for a in axes))(x)


def permute(x, *dims):
    """PyTorch's name for a permutation of every axis: ``x.permute(0, 2, 3, 1)``."""
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    if len(dims) != x.ndim:
        raise InputError(f"permute: {len(dims)} dims {dims} for a tensor of shape {x.shape}; it needs a "
                         f"permutation of all {x.ndim}")
    return transpose(x, dims)


def swapaxes(x, axis0, axis1):
    """The two axes exchanged (PyTorch's ``transpose(dim0, dim1)``)."""
    a, b = (normalize_axis("transpose", axis, x.ndim)[0] for axis in (axis0, axis1))
    order = list(range(x.ndim))
    order[a], order[b] = b, a
    return Transpose(tuple(order))(x)


def matrix_transpose(x):
    """The last two axes exchanged, PyTorch's ``x.mT``: a batch of matrices transposed."""
    if x.ndim < 2:
        raise InputError(f"mT: needs a tensor of at least 2 dims (a batch of matrices), got shape {x.shape}")
    return swapaxes(x, -2, -1)


def view(x, *shape):
    """PyTorch's view is reshape here: minidl never writes into a tensor an op has
    read, so a copy and a view behave alike (``view(dtype)``, reinterpreting bits,
    is not in minidl)."""
    if len(shape) == 1 and not isinstance(shape[0], (tuple, list, int, np.integer)):
        raise TypeError(f"view: minidl has no view(dtype), which reinterprets the bits; for a cast of "
                        f"the values write x.to({shape[0]!r}) or x.astype({str(shape[0])!r})")
    return reshape(x, *shape)


def expand(x, *sizes):
    """PyTorch's expand: ``x`` broadcast to ``sizes``, where −1 keeps an axis's length
    and new axes may go in front."""
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    lead = len(sizes) - x.ndim
    if lead < 0 or any(n == -1 for n in sizes[:lead]):
        raise InputError(f"expand: sizes {sizes} for a tensor of shape {x.shape}: give at least its "
                         f"{x.ndim} axes, and −1 only for an existing axis")
    return broadcast_to(x, tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes)))


def repeat(x, *repeats, **numpy_args):
    """PyTorch's repeat: the whole tensor tiled ``repeats`` times along each axis
    (np.tile's meaning; new axes go in front). NumPy's repeat of each value
    (PyTorch's repeat_interleave) is another op, which minidl does not have."""
    repeats = tuple(repeats[0]) if len(repeats) == 1 and isinstance(repeats[0], (tuple, list)) else repeats
    if numpy_args or len(repeats) < x.ndim:
        raise TypeError(f"repeat: minidl's repeat is PyTorch's: x.repeat(2, 3) tiles the whole tensor, "
                        f"as np.tile, with one count per axis of shape {x.shape}; got {repeats}"
                        f"{' ' + str(numpy_args) if numpy_args else ''}. NumPy's repeat of each value "
                        "(PyTorch's repeat_interleave) is not in minidl")
    shape = (1,) * (len(repeats) - x.ndim) + x.shape
    # repeat  ==  an axis of length r before each axis, broadcast, then merged with it
    spread = reshape(x, tuple(n for d in shape for n in (1, d)))
    tiled = broadcast_to(spread, tuple(n for r, d in zip(repeats, shape) for n in (r, d)))
    return reshape(tiled, tuple(r * d for r, d in zip(repeats, shape)))


def flatten(x, start_axis=0):
    """Keep the axes before ``start_axis``, merge the rest into one: all of them
    by default, as NumPy's and PyTorch's flatten; ``nn.Flatten`` keeps the batch
    axis (start_axis=1)."""
    start = normalize_axis("flatten", start_axis, max(x.ndim, 1))[0]
    merged = 1
    for n in x.shape[start:]:
        merged *= n
    return reshape(x, x.shape[:start] + (merged,))      # not −1: it cannot be inferred when size is 0


def squeeze(x, axis=None):
    """Drop axes of length 1: all of them, or those in ``axis`` (an int or a tuple;
    one of another length is an error, where PyTorch ignores it silently)."""
    axes = tuple(a for a in range(x.ndim) if x.shape[a] == 1) if axis is None else \
        normalize_axis("squeeze", axis, x.ndim)
    longer = [a for a in axes if x.shape[a] != 1]
    if longer:
        raise ValueError(f"squeeze: axis {longer[0]} of shape {x.shape} has length {x.shape[longer[0]]}, not 1")
    return reshape(x, tuple(n for a, n in enumerate(x.shape) if a not in axes))


def unsqueeze(x, axis):
    """A new axis of length 1 at position ``axis`` (−1: last)."""
    a = normalize_axis("unsqueeze", axis, x.ndim + 1)[0]
    return reshape(x, x.shape[:a] + (1,) + x.shape[a:])


def getitem(x, index):
    return GetItem(index)(x)


def concatenate(xs, axis=0):
    if not xs:
        raise InputError("concatenate: expected at least one tensor")
    return Concatenate(normalize_axis("concatenate", axis, xs[0].ndim)[0])(*xs)


def cat(tensors, dim=0, *, axis=None):
    """PyTorch's name for concatenate: ``md.cat([a, b], dim=1)`` (``axis=``, as PyTorch allows)."""
    return concatenate(list(tensors), dim if axis is None else axis)


def stack(xs, axis=0, *, dim=None):
    """The tensors along a new axis ``axis`` (PyTorch's ``dim``)."""
    axis, xs = axis if dim is None else dim, list(xs)
    if not xs:
        raise InputError("stack: expected at least one tensor")
    # stack  ==  concatenate of each x with a new axis of length 1
    ndim = xs[0].ndim + 1
    axis = normalize_axis("stack", axis, ndim)[0]
    for x in xs:
        if x.shape != xs[0].shape:
            raise InputError(f"stack: all tensors need the same shape, got {[x.shape for x in xs]}")
    return concatenate([reshape(x, x.shape[:axis] + (1,) + x.shape[axis:]) for x in xs], axis)


def pad(x, pad, value=0.0, mode="constant"):
    """Constant padding; a negative width crops, as in PyTorch. ``pad`` is either
    PyTorch's flat tuple, pairs from the *last* axis backwards,
    ``(left, right)`` or ``(left, right, top, bottom)``, ..., or np.pad's
    ``pad_width``: ``(before, after)`` pairs, one per axis from the first (or
    one pair ``((before, after),)``, or one int, for every axis)."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is implemented, got {mode!r}")
    if isinstance(pad, (tuple, list)) and pad and all(isinstance(p, (int, np.integer)) for p in pad):
        if len(pad) % 2 or len(pad) // 2 > x.ndim:
            raise InputError(f"pad: PyTorch's flat pad needs (before, after) pairs for at most {x.ndim} "
                             f"axes of shape {x.shape}, got {tuple(pad)}")
        pairs = [tuple(pad[i:i + 2]) for i in range(0, len(pad), 2)][::-1]    # last axis first
        width = [(0, 0)] * (x.ndim - len(pairs)) + pairs
    else:
        try:
            width = np.broadcast_to(np.asarray(pad, dtype=int), (x.ndim, 2)).tolist()
        except ValueError:
            raise InputError(f"pad: pad_width {pad!r} does not give a (before, after) pair for each of the "
                             f"{x.ndim} axes of shape {x.shape}") from None
    for (lo, hi), n in zip(width, x.shape):
        if n + min(lo, 0) + min(hi, 0) < 0:
            raise InputError(f"pad: widths {tuple(map(tuple, width))} crop more than the {n} values of an "
                             f"axis of shape {x.shape}")
    return Pad(tuple(map(tuple, width)), value)(x)


def broadcast_to(x, shape):
    return BroadcastTo(shape)(x)


def astype(x, dtype):
    """A copy in ``dtype``. To an integer (or bool) dtype it is outside the graph,
    as in PyTorch: an integer carries no gradient."""
    if np.dtype(dtype).kind in "biu":
        return Tensor._wrap(x.data.astype(dtype))
    return AsType(dtype)(x)


def to(x, *args, dtype=None, device=None):
    """PyTorch's ``to``: ``x.to("gpu")``, ``x.to(md.float64)``, ``x.to("cpu", md.float32)``,
    ``x.to(other)`` (other's dtype and device), or the keywords. A device is "cpu",
    "gpu" or PyTorch's "cuda"; a dtype a NumPy dtype, its name or ``md.float64``.
    As PyTorch's, it returns ``x`` itself where nothing changes, else a copy through
    which gradients flow back."""
    for arg in args:
        if isinstance(arg, Tensor):
            dtype, device = arg.dtype, arg.device
        elif isinstance(arg, str) and (backend.canonical_device(arg) in ("cpu", "gpu") or not _is_dtype(arg)):
            device = arg                 # an unknown one is refused below, naming the devices
        elif _is_dtype(arg):
            dtype = arg
        else:
            raise TypeError(f"to: expected a device ('cpu', 'gpu', 'cuda'), a dtype (md.float32, "
                            f"'float64') or a tensor, got {arg!r}")
    if dtype is not None and np.dtype(dtype) != x.dtype:
        x = astype(x, dtype)
    if device is not None and backend.canonical_device(device) != x.device:
        x = to_device(x, device)
    return x


def _is_dtype(value):
    try:
        np.dtype(value)
        return value is not None
    except TypeError:
        return False


def to_device(x, device):
    """A copy on "cpu" or "gpu" (PyTorch's "cuda" is "gpu"); gradients flow back."""
    device = backend.canonical_device(device)
    backend.module_for(device)  # unknown device or missing CuPy raises here
    return ToDevice(device)(x)
