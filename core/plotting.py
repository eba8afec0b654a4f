"""Figures: every PNG the project draws is written through :func:`save_figure` (matplotlib)
or :func:`save_image_grid` (a grid of images, pixel for pixel)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from .files import atomic_write  # noqa: E402

__all__ = ["save_figure", "save_image_grid", "scatter_panels"]


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically (temp file, then rename), cropped to its content, and close it."""
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def save_image_grid(
    images: Tensor,
    path: str | os.PathLike,
    *,
    nrow: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 2,
    scale: int = 1,
) -> None:
    """Write images (N, C, H, W), C = 1 or 3, as one PNG grid (atomically).

    Values are mapped from ``value_range`` to 0..255 (clipped); ``nrow`` images per row
    (default ceil(sqrt(N))), ``padding`` pixels of black between them; ``scale`` enlarges
    each pixel into a scale x scale block.
    """
    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be (N >= 1, 1 or 3, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    grid = np.zeros((c, rows * (h + padding) + padding, ncol * (w + padding) + padding), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y0 : y0 + h, x0 : x0 + w] = x[i].numpy()
    if scale > 1:
        grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    img = Image.fromarray(grid[0] if c == 1 else grid.transpose(1, 2, 0), mode=None)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")


def scatter_panels(
    data: Tensor, panels: list[tuple[str, Tensor]], path: str | Path, color: str = "C0", lim: float = 2.5
) -> None:
    """A row of 2-D scatter plots saved as PNG: the data (N, 2) first, then each ``(title, points)``
    panel (M, 2), on a shared square window [-lim, lim]^2."""
    n = len(panels) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), sharex=True, sharey=True)
    axes[0].scatter(data[:4000, 0], data[:4000, 1], s=1, c="k", alpha=0.5)
    axes[0].set_title("data", fontsize=9)
    for ax, (title, x) in zip(axes[1:], panels, strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=1, c=color, alpha=0.5)
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    save_figure(fig, path)
