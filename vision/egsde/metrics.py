"""Translation metrics: realism (FID to the target test set in a classifier's features) and
faithfulness to the source (L2, PSNR, SSIM, and for digits the identity accuracy).

Images are (N, C, H, W) in [-1, 1]; L2, PSNR and SSIM are computed on [0, 1] intensities.
SSIM follows scikit-image's ``structural_similarity`` defaults (7x7 uniform window, K1 = 0.01,
K2 = 0.03, sample covariance, data range 1, mean over the window-valid interior and channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..classifier import FeatureClassifier, fid_with_classifier

__all__ = ["l2_distance", "psnr", "ssim", "translation_metrics"]


def _unit(x: Tensor) -> Tensor:
    return (x.detach().double().cpu() + 1.0) / 2.0


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(
            f"expected two image batches of equal shape (N, C, H, W), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def l2_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Euclidean distance ||a - b||_2 on [0, 1] intensities, shape (N,)."""
    _check_pair(a, b)
    return (_unit(a) - _unit(b)).flatten(1).norm(dim=1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR in dB (data range 1), shape (N,)."""
    _check_pair(a, b)
    mse = ((_unit(a) - _unit(b)) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=1e-12))


def ssim(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    """Per-image SSIM (scikit-image's default definition), shape (N,)."""
    _check_pair(a, b)
    if win_size % 2 == 0 or win_size > min(a.shape[-2:]):
        raise ValueError(
            f"win_size must be odd and at most the image side {min(a.shape[-2:])}, got {win_size}"
        )
    x, y = _unit(a), _unit(b)
    n, c = x.shape[:2]
    x, y = x.reshape(n * c, 1, *x.shape[2:]), y.reshape(n * c, 1, *y.shape[2:])
    k = torch.full((1, 1, win_size, win_size), 1.0 / win_size**2, dtype=x.dtype)
    npix = win_size**2
    cov_norm = npix / (npix - 1)
    ux, uy = F.conv2d(x, k), F.conv2d(y, k)
    uxx, uyy, uxy = F.conv2d(x * x, k), F.conv2d(y * y, k), F.conv2d(x * y, k)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(n, c).mean(1)


def translation_metrics(
    translated: Tensor,
    source: Tensor,
    target_test: Tensor,
    evaluator: FeatureClassifier,
    *,
    source_labels: Tensor | None = None,
    label_of: str = "class",
) -> dict[str, float]:
    """``fid`` (evaluator features of the translations vs the target test set), ``ssim``, ``psnr``,
    ``l2`` (means over images, against the source) and, given source labels, ``identity_accuracy``:
    the fraction of translations whose evaluator class, reduced modulo 10 when
    ``label_of="digit"`` (evaluator classes = domain x digit), equals the source label."""
    out = {
        "fid": fid_with_classifier(evaluator, target_test.cpu(), translated.cpu()),
        "ssim": float(ssim(translated, source).mean()),
        "psnr": float(psnr(translated, source).mean()),
        "l2": float(l2_distance(translated, source).mean()),
    }
    if source_labels is not None:
        with torch.no_grad():
            pred = torch.cat(
                [evaluator(translated[i : i + 500].cpu()).argmax(1) for i in range(0, len(translated), 500)]
            )
        if label_of == "digit":
            pred = pred % 10
        out["identity_accuracy"] = float((pred == source_labels.cpu()).float().mean())
    return out
