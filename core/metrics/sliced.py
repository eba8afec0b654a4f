"""Sliced 2-Wasserstein distance between two point clouds (sample quality of low-dimensional generators)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced 2-Wasserstein distance between two empirical distributions.

    SW_2(x, y) = sqrt(E_theta W_2^2(theta^T x, theta^T y)) over ``n_projections`` random unit
    directions theta; each 1-D W_2 compares sorted projections (at matching quantile levels when
    the sample sizes differ). ``x`` (N, D) and ``y`` (M, D); returns a float64 scalar in x's units.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be (N, D) and (M, D) with equal D, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    x64, y64 = x.detach().to(torch.float64), y.detach().to(device=x.device, dtype=torch.float64)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px, py = _sort_rows(theta.T @ x64.T), _sort_rows(theta.T @ y64.T)
    if px.shape[1] != py.shape[1]:
        n = min(px.shape[1], py.shape[1])
        levels = (torch.arange(n, dtype=torch.float64, device=x.device) + 0.5) / n
        px, py = _quantiles(px, levels), _quantiles(py, levels)
    return ((px - py) ** 2).mean().sqrt()


def _sort_rows(v: Tensor) -> Tensor:
    """Sort each row of (P, N); on the CPU numpy's sort is faster than torch's."""
    if v.device.type == "cpu":
        return torch.from_numpy(np.sort(v.numpy(), axis=1))
    return v.sort(1).values


def _quantiles(sorted_rows: Tensor, levels: Tensor) -> Tensor:
    """Linear-interpolation quantiles of sorted rows (P, N) at ``levels`` (Q,) -> (P, Q)."""
    n = sorted_rows.shape[1]
    pos = levels * (n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = pos - lo
    return sorted_rows[:, lo] * (1 - w) + sorted_rows[:, hi] * w
