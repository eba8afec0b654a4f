"""Distances between sets of features: the Frechet distance of their Gaussian fits (the maths
of FID, whatever network gives the features) and the k-NN precision/recall of
Kynkaanniemi et al. (2019)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["frechet_distance", "gaussian_stats", "precision_recall"]


# --- Frechet distance ----------------------------------------------------------------------------
def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D), N >= 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    from scipy.linalg import eigh

    w, v = eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).

    The matrix square root is taken of the symmetric positive semi-definite product
    S1^1/2 S2 S1^1/2 by a symmetric eigendecomposition (eigenvalues clipped at 0), which has
    the same trace as sqrtm(S1 S2) but never turns complex or loses symmetry the way
    ``scipy.linalg.sqrtm`` of the non-symmetric product S1 S2 can for near-singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).reshape(-1), np.asarray(mu2, np.float64).reshape(-1)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}"
        )
    for name, arr in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values")
    r1 = _psd_sqrt(s1)
    cross = _psd_sqrt(r1 @ s2 @ r1)
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(cross))
    return max(value, 0.0)


# --- precision / recall -------------------------------------------------------------------------
def _kth_radius(feats: Tensor, k: int, chunk: int) -> Tensor:
    radii = []
    for i in range(0, len(feats), chunk):
        d = torch.cdist(feats[i : i + chunk], feats)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(queries: Tensor, ref: Tensor, ref_radii: Tensor, chunk: int) -> float:
    inside = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i : i + chunk], ref)
        inside.append((d <= ref_radii[None]).any(dim=1))
    return float(torch.cat(inside).float().mean())


@torch.no_grad()
def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of features real (N, D), fake (M, D).

    Each set's manifold is the union of balls around its points with radius the distance to
    the k-th nearest neighbour in the same set. Precision = fraction of fake points inside the
    real manifold; recall = fraction of real points inside the fake manifold.
    """
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D), got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in 1..{min(len(real), len(fake)) - 1}, got {k}")
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, _kth_radius(real, k, chunk), chunk)
    recall = _coverage(real, fake, _kth_radius(fake, k, chunk), chunk)
    return precision, recall
