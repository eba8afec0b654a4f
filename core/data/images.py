"""Image datasets as float tensors in [-1, 1], shape (N, C, H, W), with int64 labels (N,).

- IDX files, as the owners of MNIST and Fashion-MNIST ship them (gzip or plain), from any
  folder holding the standard names (``train-images-idx3-ubyte[.gz]`` etc.);
- the 5,000 handwritten 20x20 digits of OpenCV's ``digits.png`` (Debian ``opencv-doc``);
- image folders: one subfolder of PNG/JPEG files per class.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..files import atomic_write
from .paths import DatasetNotFoundError, data_root

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "OPENCV_DIGITS_PATH",
    "image_folder_classes",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_image_files",
    "load_image_folder",
    "load_mnist",
    "load_opencv_digits",
    "load_sklearn_digits",
    "read_idx",
    "to_unit_range",
    "write_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
OPENCV_DIGITS_PATH = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _IDX_DTYPES.items()}
_IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


# --- IDX ---------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or plain, detected from its bytes) into an array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an IDX file: magic number {raw[:4].hex()} (expected 0000TTNN with type "
            f"code TT in {sorted(f'{c:02x}' for c in _IDX_DTYPES)})"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: {len(raw) - header} data bytes, expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz`` (atomic)."""
    arr = np.asarray(array)
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if dt not in _IDX_CODES:
        raise ValueError(
            f"IDX cannot store dtype {arr.dtype}; use uint8, int8, int16, int32, float32 or float64"
        )
    if arr.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {arr.ndim}")
    header = bytes([0, 0, _IDX_CODES[dt], arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(arr, dtype=dt).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def _find_idx(root: Path, name: str) -> Path | None:
    dotted = name.replace("-idx", ".idx")  # some unpacked MNIST copies use train-images.idx3-ubyte
    for stem in (name, dotted):
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def to_unit_range(images: np.ndarray | Tensor, size: int | None = None) -> Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [-1, 1], optionally
    resized to ``size`` x ``size`` (bilinear, antialiased)."""
    x = torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    x = x.float().div_(127.5).sub_(1.0)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(-1.0, 1.0)
    return x.contiguous()


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def load_idx_dataset(
    root: str | os.PathLike, split: str = "train", *, size: int | None = None, package: str | None = None
) -> tuple[Tensor, Tensor]:
    """Images and labels from a folder with the standard (Fashion-)MNIST IDX names.

    Returns images (N, 1, H, W) float32 in [-1, 1] (H = W = 28, or ``size``) and labels (N,)
    int64. ``package`` names the Debian package that provides the folder, for the error.
    """
    _check_split(split, ("train", "test"))
    root = Path(root)
    how = f"install the Debian package {package} (apt-get install {package})" if package else ""
    how = (how + " or " if how else "") + "put the IDX files (gzip or plain) in that folder"
    found = {}
    for kind in ("images", "labels"):
        name = _IDX_NAMES[(split, kind)]
        path = _find_idx(root, name)
        if path is None:
            raise DatasetNotFoundError(f"{name}[.gz]", root / name, how)
        found[kind] = read_idx(path)
    images, labels = found["images"], found["labels"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{root}: images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{root}: {labels.shape} labels for {images.shape[0]} images")
    return to_unit_range(images, size), torch.from_numpy(labels.astype(np.int64))


def _first_existing(candidates: list[Path], split: str) -> Path | None:
    for c in candidates:
        if _find_idx(c, _IDX_NAMES[(split, "images")]) is not None:
            return c
    return None


def load_fashion_mnist(
    root: str | os.PathLike | None = None, split: str = "train", *, size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes.

    ``root`` defaults to ``$ANNEAL_DATA/fashion-mnist`` if it holds the files, else
    ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
    Returns images (N, 1, 28, 28) float32 in [-1, 1] and labels (N,) int64.
    """
    _check_split(split, ("train", "test"))
    if root is None:
        root = _first_existing([data_root() / "fashion-mnist", FASHION_MNIST_DIR], split) or FASHION_MNIST_DIR
    return load_idx_dataset(root, split, size=size, package="dataset-fashion-mnist")


def load_mnist(
    root: str | os.PathLike | None = None, split: str = "train", *, size: int | None = None
) -> tuple[Tensor, Tensor]:
    """MNIST from its IDX files; ``root`` defaults to ``$ANNEAL_DATA/mnist`` (no package ships it)."""
    return load_idx_dataset(root if root is not None else data_root() / "mnist", split, size=size)


# --- OpenCV digits -------------------------------------------------------------------------
def load_opencv_digits(
    path: str | os.PathLike | None = None,
    split: str = "train",
    *,
    size: int | None = None,
    test_per_class: int = 100,
) -> tuple[Tensor, Tensor]:
    """The 5,000 handwritten 20x20 digits of OpenCV's ``digits.png`` (500 per class, 0-9).

    The sheet holds 50 rows x 100 columns of digits; class k fills rows 5k..5k+4. The split is
    deterministic and stratified: a fixed permutation of each class (seed 0) gives
    ``test_per_class`` test digits and the rest for training; ``split="all"`` returns all
    5,000 in sheet order. Returns images (N, 1, 20, 20) float32 in [-1, 1] (white digits on
    black, or ``size`` x ``size``) and labels (N,) int64.
    """
    _check_split(split, ("train", "test", "all"))
    if not 0 < test_per_class < 500:
        raise ValueError(f"test_per_class must be in 1..499, got {test_per_class}")
    path = Path(path) if path is not None else OPENCV_DIGITS_PATH
    if not path.is_file():
        raise DatasetNotFoundError(
            "OpenCV digits.png", path, "install the Debian package opencv-doc (apt-get install opencv-doc)"
        )
    from PIL import Image

    with Image.open(path) as im:
        sheet = np.asarray(im.convert("L"))
    if sheet.shape != (1000, 2000):
        raise ValueError(f"{path}: expected a 1000x2000 sheet of 20x20 digits, got {sheet.shape}")
    digits = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    labels = np.repeat(np.arange(10), 500)
    if split != "all":
        g = torch.Generator().manual_seed(0)
        idx = []
        for k in range(10):
            perm = torch.randperm(500, generator=g) + 500 * k
            part = perm[:test_per_class] if split == "test" else perm[test_per_class:]
            idx.append(part.sort().values)
        sel = torch.cat(idx).numpy()
        digits, labels = digits[sel], labels[sel]
    return to_unit_range(digits, size), torch.from_numpy(labels.astype(np.int64))


# --- scikit-learn digits -----------------------------------------------------------------
def load_sklearn_digits(
    split: str = "train", *, size: int | None = None, test_fraction: float = 0.2
) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits' test set; shipped with the package).

    Pixel counts 0..16 are scaled to [-1, 1] (white digits on black, like OpenCV's sheet). The
    split is deterministic and stratified: a fixed permutation of each class (seed 0) gives
    ``round(test_fraction * n_class)`` test digits and the rest for training; ``"all"`` keeps the
    package's order. Returns images (N, 1, 8, 8) float32 in [-1, 1] (or ``size`` x ``size``,
    bilinear) and labels (N,) int64.
    """
    _check_split(split, ("train", "test", "all"))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    if split != "all":
        g = torch.Generator().manual_seed(0)
        idx = []
        for k in range(10):
            members = torch.from_numpy(np.flatnonzero(labels == k))
            perm = members[torch.randperm(len(members), generator=g)]
            n_test = int(round(test_fraction * len(members)))
            part = perm[:n_test] if split == "test" else perm[n_test:]
            idx.append(part.sort().values)
        sel = torch.cat(idx).numpy()
        images, labels = images[sel], labels[sel]
    return to_unit_range(images, size), torch.from_numpy(labels)


# --- image folders -------------------------------------------------------------------------
def image_folder_classes(root: str | os.PathLike) -> list[str]:
    """Sorted class names (subfolder names) of an image folder; label k is the k-th name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            "image folder", root, "create it with one subfolder of PNG/JPEG images per class"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetNotFoundError(
            "class subfolders", root, "expected one subfolder of PNG/JPEG images per class"
        )
    return classes


def load_image_folder(root: str | os.PathLike, size: int, *, channels: int = 3) -> tuple[Tensor, Tensor]:
    """Images from ``root/<class>/*.{png,jpg,jpeg}``, centre-cropped to a square and resized.

    Returns images (N, channels, size, size) float32 in [-1, 1] (``channels`` 1 = grey, 3 =
    RGB) and labels (N,) int64 indexing :func:`image_folder_classes`.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    from PIL import Image

    root = Path(root)
    images, labels = [], []
    for label, name in enumerate(image_folder_classes(root)):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for f in files:
            with Image.open(f) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                w, h = im.size
                s = min(w, h)
                box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
                im = im.resize((size, size), Image.Resampling.BICUBIC, box=box)
                arr = np.asarray(im, dtype=np.uint8)
            images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DatasetNotFoundError(
            "PNG/JPEG images", root, "expected files ending in .png/.jpg/.jpeg inside the class subfolders"
        )
    return to_unit_range(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def load_image_files(root: str | os.PathLike, size: int, *, channels: int = 3) -> tuple[Tensor, list[str]]:
    """All PNG/JPEG files directly inside ``root`` (sorted by name), centre-cropped and resized.

    Returns images (N, channels, size, size) float32 in [-1, 1] and the file names (N,).
    Raises DatasetNotFoundError when the folder is missing or holds no image.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError("image folder", root, "pass a folder of PNG/JPEG images")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetNotFoundError("PNG/JPEG images", root, "the folder holds no .png/.jpg/.jpeg file")
    return to_unit_range(np.stack([_read_square(f, size, channels) for f in files])), [f.name for f in files]


def _read_square(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 (channels, size, size): centre square crop, bicubic resize."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        arr = np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
