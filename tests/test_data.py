"""Loaders on small files written in the official on-disk formats; checkpoints."""
import gzip
import hashlib
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

import minidl as md
from minidl.data import CIFAR10, DataError, DataLoader, FashionMNIST, MNIST


def write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, compress in (("train", 12, True), ("t10k", 5, False)):
        ext = ".gz" if compress else ""
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n), compress)
    return tmp_path


def test_idx_loader_reads_gz_and_raw(mnist_dir):
    train, test = FashionMNIST(str(mnist_dir)), MNIST(str(mnist_dir), train=False)
    assert train.images.shape == (12, 1, 28, 28) and len(test) == 5
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == np.int64


def test_truncated_idx_names_the_file(mnist_dir):
    path = mnist_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: holds \d+ bytes, expected"):
        MNIST(str(mnist_dir), train=False)


def test_corrupted_gzip_names_the_file(mnist_dir):
    (mnist_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: cannot be read"):
        MNIST(str(mnist_dir))


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(str(tmp_path))


def write_cifar(root, n=6):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"filenames": [b"x.png"] * n}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return base


def test_cifar10_reads_official_pickles(tmp_path):
    write_cifar(tmp_path)
    train, test = CIFAR10(str(tmp_path)), CIFAR10(str(tmp_path), train=False)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)


def test_cifar10_corrupted_or_missing_batch(tmp_path):
    base = write_cifar(tmp_path)
    (base / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR-10 batch"):
        CIFAR10(str(tmp_path))
    os.remove(base / "test_batch")
    with pytest.raises(DataError, match="test_batch is missing; pass download=True"):
        CIFAR10(str(tmp_path), train=False)


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    base = write_cifar(tmp_path)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({b"data": os.system}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to load"):
        CIFAR10(str(tmp_path), train=False)


def test_cifar10_download_checks_md5(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(CIFAR10, "url", archive.as_uri())      # a local file: no network
    monkeypatch.setattr(CIFAR10, "md5", "0" * 32)
    with pytest.raises(DataError, match="has MD5 .* expected 0000"):
        CIFAR10(str(tmp_path / "root"), download=True)
    monkeypatch.setattr(CIFAR10, "md5", digest)
    assert len(CIFAR10(str(tmp_path / "root"), train=False, download=True)) == 6


def test_cifar10_offline_fails_in_a_few_lines_and_leaves_nothing(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        CIFAR10(str(root), download=True)
    message = str(e.value)
    assert len(message.splitlines()) <= 4 and "no network" in message
    assert "cifar-10-batches-py" in message and "--dataset fashion-mnist" in message
    assert not root.exists()                     # nothing partial left behind
    root.mkdir()
    (root / "mine.txt").write_text("a user's file")
    with pytest.raises(DataError):
        CIFAR10(str(root), download=True)
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]


def test_dataloader_batches_shuffle_and_seed():
    images = np.arange(10 * 1 * 2 * 2, dtype=np.uint8).reshape(10, 1, 2, 2)
    ds = md.data.ArrayDataset(images, np.arange(10))
    assert [len(y) for _, y in DataLoader(ds, 4)] == [4, 4, 2]
    assert [len(y) for _, y in DataLoader(ds, 4, drop_last=True)] == [4, 4]
    order = lambda seed: np.concatenate([y.numpy() for _, y in DataLoader(ds, 3, shuffle=True, seed=seed)])
    assert sorted(order(1)) == list(range(10)) and (order(1) == order(1)).all()
    assert not (order(1) == order(2)).all()
    train, held = ds.split(3)
    assert len(train) == 7 and len(held) == 3
    assert not set(train.targets) & set(held.targets)


def test_transforms():
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    norm = md.data.Normalize([0.5] * 3, [0.25] * 3)
    np.testing.assert_allclose(norm(x), (x - 0.5) / 0.25, rtol=1e-6)
    crop = md.data.RandomCrop(8, padding=2)(x)
    assert crop.shape == x.shape
    flip = md.data.RandomHorizontalFlip(p=1.0)(x)
    np.testing.assert_array_equal(flip, x[..., ::-1])


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    md.manual_seed(0)
    model = md.models.LeNet5(norm="batch")
    opt = md.optim.Adam(model.parameters())
    x = md.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    md.functional.cross_entropy(model(x), np.array([1, 2, 3, 4])).backward()
    opt.step()
    path = tmp_path / "ckpt.npz"
    md.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)
    loaded = md.load(path)
    assert loaded["epoch"] == 3
    for k, v in model.state_dict().items():
        assert loaded["model"][k].dtype == v.dtype and (loaded["model"][k] == v).all()
    assert set(np.load(path).files) >= {"model/features.0.weight"}   # plain NumPy opens it
    other = md.models.LeNet5(norm="batch")
    other.load_state_dict(loaded["model"])
    opt2 = md.optim.Adam(other.parameters())
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.steps == 1
    with pytest.raises(ValueError, match="does not fit LeNet5: missing keys"):
        md.models.LeNet5(norm=None).load_state_dict(loaded["model"])


def test_checkpoint_write_is_atomic_and_corruption_is_reported(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    md.save({"w": np.ones(3)}, path)

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut mid-write")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        md.save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    assert (md.load(path)["w"] == 1).all() and os.listdir(tmp_path) == ["ckpt.npz"]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="ckpt.npz is not a readable minidl checkpoint"):
        md.load(path)
