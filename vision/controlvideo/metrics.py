"""Temporal consistency and structure metrics of an edited clip against its source.

Clips are (F, 3, H, W) float tensors with RGB values in [0, 1].

- :func:`warping_error`: optical flow is estimated on the **source** clip (OpenCV Farneback,
  from frame i + 1 back to frame i), the edited frame i is warped along it onto frame i + 1, and
  the mean absolute difference (in [0, 1] intensity units, over pixels and channels) with the
  edited frame i + 1 is averaged over the pairs; pixels failing the forward-backward flow check
  (occlusions, Sundaram et al. 2010) are left out.
- :func:`frame_consistency`: mean cosine similarity of consecutive frames' feature vectors
  (default features: the frame's pixels minus their mean, i.e. the pixel correlation).
- :func:`edge_f1`: F1 of the edited clip's Canny edges against the source's, an edge counting
  as matched within ``tolerance`` pixels, averaged over frames.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .controls import canny, luminance

__all__ = ["edge_f1", "frame_consistency", "optical_flow", "warp", "warping_error"]


def _check(clip: Tensor, name: str, frames: int = 1) -> None:
    if not isinstance(clip, Tensor) or clip.dim() != 4 or clip.shape[1] != 3 or clip.shape[0] < frames:
        shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"{name} must be a clip of shape (F >= {frames}, 3, H, W), got {shape}")


def _gray_u8(frame: Tensor) -> np.ndarray:
    gray = luminance(frame.detach().float().cpu().clamp(0, 1))[0]
    return (gray * 255).round().to(torch.uint8).numpy()


def optical_flow(frame_from: Tensor, frame_to: Tensor) -> np.ndarray:
    """Farneback flow (H, W, 2) in pixels (x, y) such that ``frame_from(p) ~ frame_to(p + flow(p))``."""
    import cv2

    return cv2.calcOpticalFlowFarneback(
        _gray_u8(frame_from), _gray_u8(frame_to), None,
        pyr_scale=0.5, levels=3, winsize=9, iterations=5, poly_n=5, poly_sigma=1.1, flags=0,
    )  # fmt: skip


def warp(frame: Tensor, flow: np.ndarray) -> Tensor:
    """Sample ``frame`` (3, H, W) at p + flow(p) (bilinear, border replicated): (3, H, W)."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    img = frame.detach().float().cpu().permute(1, 2, 0).numpy()
    out = cv2.remap(
        img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


def _consistent(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Pixels whose forward flow and the backward flow at its target cancel (not occluded)."""
    import cv2

    h, w = fw.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    bw_at = cv2.remap(bw, gx + fw[..., 0], gy + fw[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = ((fw + bw_at) ** 2).sum(-1)
    return err < 0.01 * ((fw**2).sum(-1) + (bw_at**2).sum(-1)) + 0.5


def warping_error(edited: Tensor, source: Tensor, occlusion_mask: bool = True) -> float:
    """Mean absolute difference between edited frame i + 1 and edited frame i warped onto it by
    the source clip's flow, averaged over consecutive pairs (see the module docstring)."""
    _check(edited, "edited", 2)
    _check(source, "source", 2)
    if edited.shape != source.shape:
        raise ValueError(f"edited {tuple(edited.shape)} and source {tuple(source.shape)} differ in shape")
    errors = []
    for i in range(edited.shape[0] - 1):
        back = optical_flow(source[i + 1], source[i])  # frame i+1 at p ~ frame i at p + back(p)
        diff = (warp(edited[i].float(), back) - edited[i + 1].detach().float().cpu()).abs().mean(0)
        if occlusion_mask:
            keep = torch.from_numpy(_consistent(back, optical_flow(source[i], source[i + 1])))
            diff = diff[keep] if bool(keep.any()) else diff.reshape(-1)
        errors.append(float(diff.mean()))
    return float(np.mean(errors))


def frame_consistency(clip: Tensor, features: Callable[[Tensor], Tensor] | None = None) -> float:
    """Mean cosine similarity of consecutive frames' features; ``features(clip) -> (F, D)``
    (default: each frame's pixels minus their mean). 1 for a still clip."""
    _check(clip, "clip", 2)
    if features is None:
        x = clip.detach().float().reshape(clip.shape[0], -1)
        feats = x - x.mean(dim=1, keepdim=True)
    else:
        feats = features(clip)
        if feats.dim() != 2 or feats.shape[0] != clip.shape[0]:
            raise ValueError(f"features must return ({clip.shape[0]}, D), got {tuple(feats.shape)}")
    cos = torch.nn.functional.cosine_similarity(feats[:-1], feats[1:], dim=1)
    return float(cos.mean())


def edge_f1(edited: Tensor, source: Tensor, tolerance: int = 1, sigma: float = 1.0) -> float:
    """F1 of the edited clip's Canny edges against the source's (an edge pixel counts as
    matched when an edge of the other clip lies within ``tolerance`` pixels, Chebyshev
    distance), averaged over frames; a frame without edges in both counts as 1."""
    import cv2

    _check(edited, "edited")
    _check(source, "source")
    if edited.shape != source.shape:
        raise ValueError(f"edited {tuple(edited.shape)} and source {tuple(source.shape)} differ in shape")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    pred = canny(edited.float(), sigma=sigma)[:, 0].cpu().numpy().astype(np.uint8)
    true = canny(source.float(), sigma=sigma)[:, 0].cpu().numpy().astype(np.uint8)
    scores = []
    for p, t in zip(pred, true, strict=True):
        if not p.any() and not t.any():
            scores.append(1.0)
            continue
        precision = (p & cv2.dilate(t, kernel)).sum() / max(p.sum(), 1)
        recall = (t & cv2.dilate(p, kernel)).sum() / max(t.sum(), 1)
        scores.append(
            0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))
        )
    return float(np.mean(scores))
