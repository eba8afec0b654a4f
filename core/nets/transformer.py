"""Pieces shared by the transformer backbones (U-ViT, DiT): patchify, 2-D sin-cos positions,
multi-head self-attention and the MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "FeedForward", "PatchEmbed", "sincos_2d", "unpatchify"]


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, (H/p)(W/p), dim) tokens by a p x p convolution with stride p."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def unpatchify(tokens: Tensor, channels: int, patch: int) -> Tensor:
    """(B, L, p*p*C) with L = g*g, channels last within a patch -> (B, C, g*p, g*p)."""
    b, n, _ = tokens.shape
    g = math.isqrt(n)
    x = tokens.reshape(b, g, g, patch, patch, channels)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, channels, g * patch, g * patch)


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding (MAE/DiT), shape (grid*grid, dim), float32."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")

    def emb(pos: Tensor) -> Tensor:
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([emb(gx), emb(gy)], dim=1).float()


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, L, dim)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Sequential):
    """Linear(dim, ratio*dim) -> GELU (tanh approximation) -> Linear(ratio*dim, dim)."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
