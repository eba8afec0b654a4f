"""Per-frame control maps for the ControlNet branch: Canny edges and grayscale.

Input and output clips are (F, 3, H, W) float tensors in [0, 1]; a map is replicated over the
three channels (the ControlNet convention: white edges on black for ``canny``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["CONTROLS", "canny", "control_maps", "grayscale", "luminance"]


def luminance(x: Tensor) -> Tensor:
    """ITU-R BT.601 luminance of images (..., 3, H, W) -> (..., 1, H, W), in their dtype."""
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"images must have shape (..., 3, H, W), got {tuple(x.shape)}")
    return 0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :]


def _gray(clip: Tensor) -> np.ndarray:
    """(F, 3, H, W) in [0, 1] -> (F, H, W) luminance, float64."""
    if clip.dim() != 4 or clip.shape[1] != 3:
        raise ValueError(f"clip must have shape (F, 3, H, W), got {tuple(clip.shape)}")
    return luminance(clip.detach().to("cpu", torch.float64).clamp(0, 1))[:, 0].numpy()


def _as_clip(maps: np.ndarray, like: Tensor) -> Tensor:
    out = torch.from_numpy(np.ascontiguousarray(maps)).to(like.dtype)
    return out[:, None].expand(-1, 3, -1, -1).contiguous().to(like.device)


def canny(clip: Tensor, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> Tensor:
    """Canny edges of every frame (scikit-image, Gaussian ``sigma`` in pixels, hysteresis
    thresholds ``low`` / ``high`` on the gradient magnitude of [0, 1] intensities): 1 on an
    edge, 0 elsewhere, shape (F, 3, H, W)."""
    from skimage.feature import canny as sk_canny

    gray = _gray(clip)
    edges = np.stack([sk_canny(g, sigma=sigma, low_threshold=low, high_threshold=high) for g in gray])
    return _as_clip(edges.astype(np.float64), clip)


def grayscale(clip: Tensor) -> Tensor:
    """Luminance of every frame, replicated over three channels, shape (F, 3, H, W)."""
    return _as_clip(_gray(clip), clip)


#: Control types by name: ``fn(clip) -> maps``.
CONTROLS: dict[str, Callable[[Tensor], Tensor]] = {"canny": canny, "gray": grayscale}


def control_maps(clip: Tensor, kind: str) -> Tensor:
    """The ``kind`` control maps of a clip (F, 3, H, W) in [0, 1]; ValueError for an unknown kind."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control type {kind!r}; expected one of {sorted(CONTROLS)}")
    return CONTROLS[kind](clip)
