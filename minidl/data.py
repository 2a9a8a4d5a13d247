"""Datasets in their official on-disk formats, batch transforms, DataLoader.

Images are kept as uint8 (N, C, H, W) and turned into float32 in [0, 1] a
batch at a time; transforms work on whole batches (no per-image Python loop).
"""
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request

import numpy as np

from . import backend
from .tensor import Tensor


class DataError(RuntimeError):
    """A dataset file is missing, truncated or corrupted."""


# ---- datasets -------------------------------------------------------------
class ArrayDataset:
    """Images (N, C, H, W) (uint8 or float) and integer targets (N,)."""

    def __init__(self, images, targets, transform=None):
        images, targets = np.asarray(images), np.asarray(targets)
        if images.ndim != 4 or len(images) != len(targets):
            raise ValueError(f"ArrayDataset: expected images (N, C, H, W) and targets (N,), "
                             f"got {images.shape} and {targets.shape}")
        self.images, self.targets, self.transform = images, targets.astype(np.int64), transform

    def __len__(self):
        return len(self.targets)

    def get_batch(self, index):
        """(x float32 (n, C, H, W), y int64 (n,)) as NumPy arrays, transformed."""
        x = self.images[index]
        x = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)
        return (self.transform(x) if self.transform else x), self.targets[index]

    def __getitem__(self, i):
        x, y = self.get_batch(np.array([i]))
        return x[0], y[0]

    def split(self, n_holdout, seed=0):
        """Two datasets: the rest and ``n_holdout`` samples held out (for validation),
        chosen at random with ``seed``. The held-out part gets no transform: set
        its own (normalization without augmentation, typically)."""
        if not 0 < n_holdout < len(self):
            raise ValueError(f"split: cannot hold out {n_holdout} of {len(self)} samples")
        order = np.random.default_rng(seed).permutation(len(self))
        keep, held = np.sort(order[n_holdout:]), np.sort(order[:n_holdout])
        return (ArrayDataset(self.images[keep], self.targets[keep], self.transform),
                ArrayDataset(self.images[held], self.targets[held]))

    def subset(self, n, seed=0):
        """The first ``n`` samples of a seeded permutation (a quick, smaller run)."""
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return ArrayDataset(self.images[idx], self.targets[idx], self.transform)


def _read(path, opener=open):
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); the file is corrupted or truncated: "
                        "delete it and get it again") from None


def read_idx(path):
    """An array from an idx file (MNIST's format), raw or gzip-compressed."""
    raw = _read(path, gzip.open if str(path).endswith(".gz") else open)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()}, "
                        "expected 000008xx)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: holds {len(raw)} bytes, expected {expected} for shape {shape}; "
                        "the file is truncated or corrupted: get it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            return path
    return None


class MNIST(ArrayDataset):
    """MNIST from its official idx files (``.gz`` or raw) in ``root``."""
    default_roots = ()
    how_to_get = "download the four idx files from http://yann.lecun.com/exdb/mnist/ into root"

    def __init__(self, root=None, train=True, transform=None):
        roots = [root] if root else list(self.default_roots)
        prefix = "train" if train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        for r in roots:
            paths = [_find(r, n) for n in names]
            if all(paths):
                break
        else:
            raise DataError(f"{type(self).__name__}: no {names[0]}[.gz] and {names[1]}[.gz] in "
                            f"{roots or 'root (none given)'}; {self.how_to_get}")
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.shape != (len(images),):
            raise DataError(f"{paths[0]}: images {images.shape} and labels {labels.shape} do not "
                            "match (expected (N, 28, 28) and (N,))")
        super().__init__(images[:, None], labels, transform)


class FashionMNIST(MNIST):
    """Fashion-MNIST; without ``root`` it looks where Debian's dataset-fashion-mnist
    package puts it."""
    default_roots = ("/usr/share/datasets/fashion-mnist",)
    how_to_get = ("install it with `apt-get install dataset-fashion-mnist` or download the idx "
                  "files from https://github.com/zalandoresearch/fashion-mnist into root")
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's pickles hold only dicts, lists, bytes and NumPy arrays: refuse
    anything else, so a tampered file cannot run code."""
    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


class CIFAR10(ArrayDataset):
    """CIFAR-10 from the official ``cifar-10-batches-py`` pickles under ``root``.
    ``download=True`` fetches the official archive, checks its MD5 and extracts it."""
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    folder = "cifar-10-batches-py"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")

    def __init__(self, root, train=True, transform=None, download=False):
        base = os.path.join(root, self.folder)
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        if download and not all(os.path.exists(os.path.join(base, f)) for f in files):
            self.download(root)
        images, labels = [], []
        for f in files:
            x, y = self._read_batch(os.path.join(base, f))
            images.append(x)
            labels.append(y)
        super().__init__(np.concatenate(images), np.concatenate(labels), transform)

    def _read_batch(self, path):
        if not os.path.exists(path):
            raise DataError(f"CIFAR10: {path} is missing; pass download=True where you have "
                            f"internet, or extract {self.url} into the root folder")
        raw = _read(path)
        try:
            batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
            data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
        except Exception as e:  # any unpickling failure means a broken file
            raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(e).__name__}: {e}); "
                            "the file is corrupted or truncated: get it again") from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                or labels.shape != (len(data),):
            raise DataError(f"{path}: data {data.shape} {data.dtype} and labels {labels.shape}; "
                            "expected uint8 (N, 3072) and (N,)")
        return data.reshape(-1, 3, 32, 32), labels

    @classmethod
    def download(cls, root):
        """Fetch the archive into ``root``, check its MD5, extract it. Where the
        download fails nothing is left behind, and the error says where to put
        the files by hand."""
        made_root = not os.path.exists(root)
        os.makedirs(root, exist_ok=True)
        archive = os.path.join(root, os.path.basename(cls.url))
        if not os.path.exists(archive) or _md5(archive) != cls.md5:
            print(f"downloading {cls.url} ...")
            fd, tmp = tempfile.mkstemp(dir=root)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(cls.url, timeout=30) as response:
                    shutil.copyfileobj(response, out)
            except (OSError, ValueError) as e:        # URLError, timeouts and refused connections are OSErrors
                os.remove(tmp)
                if made_root and not os.listdir(root):
                    os.rmdir(root)
                reason = getattr(e, "reason", e)
                raise DataError(
                    f"CIFAR10: could not download {cls.url} ({reason}); this machine seems to have no "
                    "network.\n"
                    f"  Where you have internet, download and extract it so that "
                    f"{os.path.join(root, cls.folder)}/ holds data_batch_1 ... data_batch_5 and test_batch.\n"
                    "  Or use another dataset (the LeNet-5 lesson: --dataset fashion-mnist).") from None
            digest = _md5(tmp)
            if digest != cls.md5:
                os.remove(tmp)
                raise DataError(f"CIFAR10: the download from {cls.url} has MD5 {digest}, expected "
                                f"{cls.md5}; it is corrupted, try again")
            os.replace(tmp, archive)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data") if hasattr(tarfile, "data_filter") \
                else tar.extractall(root)


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def channel_stats(dataset):
    """Per-channel mean and std over a dataset's images, in [0, 1] units."""
    x = dataset.images.astype(np.float64) / (255 if dataset.images.dtype == np.uint8 else 1)
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


# ---- transforms on batches (n, C, H, W) float32 ----------------------------
class Compose:
    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Normalize:
    """(x − mean[c]) / std[c] per channel."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)

    def __call__(self, x):
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"Normalize: {self.mean.shape[1]} channel statistics for images of "
                             f"shape {x.shape}")
        return (x - self.mean) / self.std


class RandomCrop:
    """Pad by ``padding`` zeros, then cut a random size×size window per image."""

    def __init__(self, size, padding=4):
        self.size, self.padding = size, padding

    def __call__(self, x):
        n, _, h, w = x.shape
        p = self.padding
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        rng = backend.rng()
        top = rng.integers(0, h + 2 * p - self.size + 1, n)
        left = rng.integers(0, w + 2 * p - self.size + 1, n)
        rows = top[:, None] + np.arange(self.size)                   # (n, size)
        cols = left[:, None] + np.arange(self.size)
        return padded[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, x):
        flip = backend.rng().random(len(x)) < self.p
        x = x.copy()
        x[flip] = x[flip, :, :, ::-1]
        return x


# ---- loading --------------------------------------------------------------
class DataLoader:
    """Batches of (x, y) Tensors on the current backend. With ``shuffle`` each
    epoch draws a new order from ``seed`` (or from md.manual_seed's generator)."""

    def __init__(self, dataset, batch_size=64, shuffle=False, drop_last=False, seed=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size!r}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = (self.rng or backend.rng()).permutation(n) if self.shuffle else np.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if hasattr(self.dataset, "get_batch"):
                x, y = self.dataset.get_batch(idx)
            else:
                items = [self.dataset[j] for j in idx]
                x, y = np.stack([a for a, _ in items]), np.asarray([b for _, b in items])
            yield Tensor(x), Tensor(y)
