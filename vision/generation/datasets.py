"""Image datasets of the image pipeline: names, loading and input validation.

Images are float32 (N, C, H, W) in [-1, 1], labels int64 (N,). The loaders of
:mod:`core.data` raise the missing-file errors (naming the Debian package to install).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from core.data import load_fashion_mnist, load_idx_dataset, load_opencv_digits

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "balanced_labels",
    "check_images",
    "check_labels",
    "load_config_images",
    "load_images",
]


class DatasetInfo:
    """Shape facts of a dataset: ``channels``, ``image_size`` (square) and ``num_classes``."""

    def __init__(self, name: str, channels: int, image_size: int, num_classes: int) -> None:
        self.name, self.channels, self.image_size, self.num_classes = name, channels, image_size, num_classes

    @property
    def fid_name(self) -> str:
        """The metric's name, e.g. ``fid_fmnist`` (classifier-feature FID, not Inception FID)."""
        return {"fashion_mnist": "fid_fmnist", "digits": "fid_digits"}.get(self.name, f"fid_{self.name}")


#: The datasets of the pipeline. ``digits`` (20x20) is resized to 16x16 or 20x20 by its preset.
DATASETS = {
    "fashion_mnist": DatasetInfo("fashion_mnist", 1, 28, 10),
    "digits": DatasetInfo("digits", 1, 20, 10),
}


def load_images(
    name: str, split: str = "train", *, root: str | os.PathLike | None = None, size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Images (N, 1, H, W) in [-1, 1] and labels (N,) of dataset ``name`` (``fashion_mnist`` or
    ``digits``), split ``train`` or ``test``. ``root`` overrides the folder (Fashion-MNIST: any
    folder with the standard IDX names, MNIST's included) or the ``digits.png`` path;
    ``size`` resizes to ``size`` x ``size``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    if name == "fashion_mnist":
        if root is not None:
            return load_idx_dataset(root, split, size=size)
        return load_fashion_mnist(split=split, size=size)
    return load_opencv_digits(root, split, size=size)


def load_config_images(
    config, split: str = "train", root: str | os.PathLike | None = None
) -> tuple[Tensor, Tensor]:
    """Images (N, C, S, S) in [-1, 1] and labels (N,) of ``split`` of an ImageConfig's dataset at
    its ``image_size``, checked against the config's channels, size and classes."""
    native = DATASETS[config.dataset].image_size
    size = None if config.image_size == native else config.image_size
    x, y = load_images(config.dataset, split, root=root, size=size)
    check_images(x, config.channels, config.image_size, f"{config.dataset} images")
    check_labels(y, config.num_classes, len(x))
    return x, y


def check_images(x: Tensor, channels: int, image_size: int, what: str = "images") -> None:
    """Raise a ValueError unless x is a float tensor (N, channels, image_size, image_size)."""
    expected = (channels, image_size, image_size)
    if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must have shape (N, {channels}, {image_size}, {image_size}), got {got}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating point in [-1, 1], got dtype {x.dtype}")


def check_labels(y: Tensor, num_classes: int, n: int | None = None) -> None:
    """Raise a ValueError unless y is an integer tensor (n,) with values in 0..num_classes-1."""
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"labels must be an integer tensor (N,), got {getattr(y, 'dtype', type(y))}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} labels for {n} images")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"label out of range: values in [{int(y.min())}, {int(y.max())}], expected 0..{num_classes - 1}"
        )


def balanced_labels(n: int, num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """Labels 0, 1, ..., num_classes-1, 0, 1, ... of length n (equal class counts when possible)."""
    return torch.arange(n, device=device) % num_classes
