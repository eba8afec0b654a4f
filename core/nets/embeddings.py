"""Time embeddings shared by the backbones."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of a scalar per sample: (B,) -> (B, dim) = [sin(t w_k), cos(t w_k)].

    Frequencies w_k = max_period^(-k / (dim/2 - 1)), k = 0 .. dim/2 - 1; ``dim`` must be even.
    """

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"embedding dim must be even and >= 4, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        args = t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([args.sin(), args.cos()], dim=-1)
