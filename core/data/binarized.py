"""Statically binarised Fashion-MNIST and 8-bit integer images for likelihood models.

Static binarisation (as in the IWAE and NADE papers' binarised MNIST): every pixel's grey level
p in [0, 1] becomes one Bernoulli(p) draw, made once from a fixed seed, so every model sees the
same binary images and test NLLs are comparable across runs.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .images import load_fashion_mnist

__all__ = ["binarize", "load_binarized_fashion_mnist", "to_uint8"]

_SPLIT_OFFSET = {"train": 0, "test": 1}


def binarize(images: Tensor, seed: int) -> Tensor:
    """Static binarisation of images (N, C, H, W) in [-1, 1]: pixel i is 1 with probability
    (x_i + 1) / 2, drawn once from ``seed``. Returns float32 {0, 1} of the same shape."""
    if images.min() < -1.0 or images.max() > 1.0:
        raise ValueError(f"images must lie in [-1, 1], got [{images.min():.3g}, {images.max():.3g}]")
    g = torch.Generator().manual_seed(seed)
    p = (images.float() + 1.0) / 2.0
    return (torch.rand(p.shape, generator=g) < p).float()


def load_binarized_fashion_mnist(
    split: str = "train", *, seed: int = 0, root: str | os.PathLike | None = None
) -> tuple[Tensor, Tensor]:
    """Statically binarised Fashion-MNIST: images (N, 1, 28, 28) float32 in {0, 1}, labels (N,).

    The draw is a function of ``(seed, split)`` only (the test split uses ``seed + 1``)."""
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split must be one of {tuple(_SPLIT_OFFSET)}, got {split!r}")
    x, y = load_fashion_mnist(root, split)
    return binarize(x, seed + _SPLIT_OFFSET[split]), y


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] (as the loaders return them) back to their integer levels 0..255 (float32)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255)
