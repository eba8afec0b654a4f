"""Shared pieces of the likelihood families: input checks, dequantisation and bits per dimension."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["bits_per_dim", "check_binary", "check_k", "dequantize", "standard_normal_log_prob"]


def check_binary(x: Tensor, what: str = "data") -> None:
    """Raise ``ValueError`` unless every entry of ``x`` is exactly 0 or 1."""
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        v = x[bad].flatten()[:3].tolist()
        raise ValueError(f"{what} must be binary (0 or 1) for a Bernoulli likelihood; found values {v}")


def check_k(k: int, what: str = "k") -> None:
    """Raise ``ValueError`` unless ``k`` is an int >= 1 (a number of importance samples)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{what} (number of importance samples) must be an int >= 1, got {k!r}")


def dequantize(levels: Tensor, bins: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation: integer levels in 0..bins-1 (any shape, float) -> (levels + u) / bins
    in [0, 1) with u ~ U[0, 1). A density on the result lower-bounds the discrete likelihood:
    log P(levels) >= E_u[log p((levels + u) / bins)] - D log(bins)."""
    if levels.min() < 0 or levels.max() > bins - 1 or bool((levels != levels.round()).any()):
        raise ValueError(f"levels must be integers in 0..{bins - 1}")
    u = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=levels.dtype)
    return (levels + u) / bins


def bits_per_dim(log_prob: Tensor, dims: int, bins: int = 256) -> Tensor:
    """Bits per dimension of the discrete data from the log density (nats) of dequantised data in
    [0, 1)^dims: ``(-log_prob + dims * log(bins)) / (dims * log 2)``."""
    return (-log_prob + dims * math.log(bins)) / (dims * math.log(2.0))


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """Log density of N(0, I) summed over all but the first dimension: (B, ...) -> (B,)."""
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
