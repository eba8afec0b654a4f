"""Translation tasks: source and target images, splits, and the labels that carry the content.

- ``digits``: source = OpenCV's handwritten 20x20 digits (Debian ``opencv-doc``), target =
  scikit-learn's 8x8 digits, both resized to ``size`` x ``size``; the digit is the content a
  faithful translation keeps (identity accuracy).
- ``fashion``: Fashion-MNIST shape transfer, source class -> target class (default sneaker ->
  ankle boot); the score model sees the target class only, the source class reaches the
  method only through the domain classifier.
- ``folder``: an image folder per domain (e.g. AFHQ cat -> dog, CelebA-HQ), for the paper preset.

Source images are split into train (domain classifier), validation (tuning) and test
(reported metrics); target images into train (score model, domain classifier) and test (FID).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.data import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_image_files,
    load_opencv_digits,
    load_sklearn_digits,
)

__all__ = ["TASKS", "Task", "load_source_folder", "load_task"]

TASKS = ("digits", "fashion", "folder")


@dataclass
class Task:
    """Images (N, C, H, W) in [-1, 1]; ``*_labels`` (N,) int64 content labels or None."""

    name: str
    source_train: Tensor
    source_val: Tensor
    source_test: Tensor
    target_train: Tensor
    target_test: Tensor
    source_val_labels: Tensor | None = None
    source_test_labels: Tensor | None = None
    description: str = ""

    @property
    def channels(self) -> int:
        return self.source_test.shape[1]

    @property
    def size(self) -> int:
        return self.source_test.shape[-1]


def _split(x: Tensor, n_val: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _take(x: Tensor, n: int | None, seed: int) -> Tensor:
    """A fixed random subset of n indices (all when n is None or >= len)."""
    if n is None or n >= len(x):
        return torch.arange(len(x))
    return torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n].sort().values


def digits_task(size: int = 16, n_val: int = 300, n_test: int | None = None) -> Task:
    """OpenCV 20x20 digits -> scikit-learn 8x8 digits, both at ``size`` px."""
    src, src_y = load_opencv_digits(split="train", size=size)
    test, test_y = load_opencv_digits(split="test", size=size)
    tr, va = _split(src, n_val)
    keep = _take(test, n_test, 1)
    tgt, _ = load_sklearn_digits("train", size=size)
    tgt_test, _ = load_sklearn_digits("test", size=size)
    return Task(
        "digits", src[tr], src[va], test[keep], tgt, tgt_test, src_y[va], test_y[keep],
        f"OpenCV handwritten digits (20x20) -> scikit-learn digits (8x8), both at {size}x{size}",
    )  # fmt: skip


def fashion_task(
    size: int = 16,
    source_class: int = 7,
    target_class: int = 9,
    n_val: int = 300,
    n_test: int | None = None,
    n_train: int | None = None,
) -> Task:
    """Fashion-MNIST class ``source_class`` -> ``target_class`` (default sneaker -> ankle boot)."""
    for c in (source_class, target_class):
        if not 0 <= c < 10:
            raise ValueError(f"Fashion-MNIST classes are 0..9, got {c}")
    if source_class == target_class:
        raise ValueError(f"source and target class must differ, got {source_class} twice")
    x, y = load_fashion_mnist(split="train", size=size)
    xt, yt = load_fashion_mnist(split="test", size=size)
    src = x[y == source_class]
    tr, va = _split(src, n_val)
    tr = tr[_take(tr, n_train, 2)]
    test = xt[yt == source_class]
    tgt = x[y == target_class]
    tgt = tgt[_take(tgt, n_train, 3)]
    names = FASHION_MNIST_CLASSES[source_class], FASHION_MNIST_CLASSES[target_class]
    return Task(
        "fashion", src[tr], src[va], test[_take(test, n_test, 1)], tgt, xt[yt == target_class],
        description=f"Fashion-MNIST {names[0]} -> {names[1]} at {size}x{size}",
    )  # fmt: skip


def folder_task(
    source_dir: str | Path,
    target_dir: str | Path,
    size: int,
    channels: int = 3,
    n_val: int | None = None,
    n_test: int | None = None,
) -> Task:
    """Two image folders (source, target), each split 80% / 10% / 10% (train / val / test)."""
    src, _ = load_image_files(source_dir, size, channels=channels)
    tgt, _ = load_image_files(target_dir, size, channels=channels)
    if len(src) < 4 or len(tgt) < 4:
        raise ValueError(f"need >= 4 source and >= 4 target images, got {len(src)} and {len(tgt)}")
    perm = torch.randperm(len(src), generator=torch.Generator().manual_seed(0))
    nv = n_val or max(1, len(src) // 10)
    nt = n_test or max(2, len(src) // 10)
    va, te, tr = perm[:nv], perm[nv : nv + nt], perm[nv + nt :]
    if len(tr) == 0:
        tr = te
    tperm = torch.randperm(len(tgt), generator=torch.Generator().manual_seed(1))
    n_tt = max(2, len(tgt) // 10)  # the FID reference needs at least two images
    return Task(
        "folder", src[tr], src[va], src[te], tgt[tperm[n_tt:]], tgt[tperm[:n_tt]],
        description=f"{Path(source_dir).name} -> {Path(target_dir).name} at {size}x{size}",
    )  # fmt: skip


def load_task(name: str, size: int, **kwargs) -> Task:
    """The task ``name`` (one of :data:`TASKS`) at ``size`` px; kwargs go to its loader."""
    if name == "digits":
        return digits_task(size, **kwargs)
    if name == "fashion":
        return fashion_task(size, **kwargs)
    if name == "folder":
        return folder_task(size=size, **kwargs)
    raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")


def load_source_folder(
    folder: str | Path, size: int, channels: int, *, resize: bool = False
) -> tuple[Tensor, list[str]]:
    """Source images from a folder of PNG/JPEG files for a ``size`` px, ``channels``-channel model.

    Without ``resize`` every file must already be ``size`` x ``size`` (a ValueError names the
    first that is not); with it, images are centre-cropped and resized. Grey files are
    replicated to RGB (and RGB files converted to grey) as the model needs. Returns images
    (N, channels, size, size) in [-1, 1] and the file names.
    """
    from PIL import Image

    from core.data.images import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not resize and folder.is_dir():
        for f in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
            with Image.open(f) as im:
                if im.size != (size, size):
                    raise ValueError(
                        f"source image {f.name} is {im.size[0]}x{im.size[1]}, the model expects "
                        f"{size}x{size}; resize the images or pass --resize"
                    )
    return load_image_files(folder, size, channels=channels)
