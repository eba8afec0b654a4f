"""Image data: IDX round trips, errors that name the package, the real loaders when installed."""

import gzip

import numpy as np
import pytest
import torch

from core.data import (
    DatasetNotFoundError,
    atomic_write,
    data_root,
    image_folder_classes,
    load_fashion_mnist,
    load_idx_dataset,
    load_image_folder,
    load_opencv_digits,
    read_idx,
    write_idx,
)
from core.data.images import FASHION_MNIST_DIR, OPENCV_DIGITS_PATH


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(arr, path)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_idx_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic number 12340801"):
        read_idx(bad)
    bad.write_bytes(gzip.compress(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(ValueError, match="2 data bytes, expected 5"):
        read_idx(short)


def _fake_mnist_folder(root, n=6, gz=True, dotted=False):
    rng = np.random.default_rng(0)
    for split, m in (("train", n), ("t10k", n // 2)):
        for kind, arr in (
            ("images-idx3-ubyte", rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)),
            ("labels-idx1-ubyte", rng.integers(0, 10, m).astype(np.uint8)),
        ):
            name = f"{split}-{kind}".replace("-idx", ".idx") if dotted else f"{split}-{kind}"
            write_idx(arr, root / (name + (".gz" if gz else "")))


@pytest.mark.parametrize("gz,dotted", [(True, False), (False, False), (False, True)])
def test_idx_dataset_folder(tmp_path, gz, dotted):
    _fake_mnist_folder(tmp_path, gz=gz, dotted=dotted)
    x, y = load_idx_dataset(tmp_path, "train")
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    raw = read_idx(next(tmp_path.glob("train-images*")))
    torch.testing.assert_close(x[:, 0], torch.from_numpy(raw).float() / 127.5 - 1)
    xt, _ = load_idx_dataset(tmp_path, "test", size=32)
    assert xt.shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match="split must be one of"):
        load_idx_dataset(tmp_path, "val")


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        load_fashion_mnist(tmp_path)
    assert isinstance(e.value, FileNotFoundError) and "train-images-idx3-ubyte" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="apt-get install opencv-doc"):
        load_opencv_digits(tmp_path / "digits.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="one subfolder of PNG/JPEG images per class"):
        load_image_folder(tmp_path / "empty", 8)


def test_data_root_and_atomic_write(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNEAL_DATA", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache"
    target = tmp_path / "cache" / "sub" / "f.bin"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".bin"
        tmp.write_bytes(b"ok")
        assert not target.exists()
    assert target.read_bytes() == b"ok"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"ok"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40 + 10 * i, 30), colour).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dogs" / "notes.txt").write_text("ignored")
    assert image_folder_classes(tmp_path) == ["cats", "dogs"]
    x, y = load_image_folder(tmp_path, 16)
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(x[0, :, 8, 8], torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(x[3, :, 8, 8], torch.tensor([-1.0, -1.0, 1.0]))
    g, _ = load_image_folder(tmp_path, 8, channels=1)
    assert g.shape == (4, 1, 8, 8)


needs_fmnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
needs_digits = pytest.mark.skipif(
    not OPENCV_DIGITS_PATH.is_file(),
    reason="Debian package opencv-doc is not installed (apt-get install opencv-doc)",
)


@needs_fmnist
def test_real_fashion_mnist_test_split():
    x, y = load_fashion_mnist(split="test")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert torch.equal(y.bincount(), torch.full((10,), 1000))
    assert x.min() == -1 and x.max() == 1


@needs_digits
def test_real_opencv_digits():
    train, ytr = load_opencv_digits(split="train")
    test, yte = load_opencv_digits(split="test")
    full, yall = load_opencv_digits(split="all")
    assert train.shape == (4000, 1, 20, 20) and test.shape == (1000, 1, 20, 20) and full.shape[0] == 5000
    assert torch.equal(ytr.bincount(), torch.full((10,), 400)) and torch.equal(
        yte.bincount(), torch.full((10,), 100)
    )
    assert torch.equal(yall[:500], torch.zeros(500, dtype=torch.long)) and int(yall[-1]) == 9
    # disjoint, deterministic split
    train2, _ = load_opencv_digits(split="train")
    assert torch.equal(train, train2)
    flat = lambda a: {tuple(r) for r in a.flatten(1).mul(127.5).round().int().tolist()}
    assert len(flat(train) & flat(test)) <= 5  # only coincidental duplicates in the sheet
    # white digits on black: the border is background
    assert float(full[:, :, 0, :].mean()) < -0.95
    assert load_opencv_digits(split="test", size=28)[0].shape == (1000, 1, 28, 28)
