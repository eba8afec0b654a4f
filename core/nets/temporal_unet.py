"""Janner et al.'s Temporal U-Net (Diffuser): 1-D residual convolutions over the planning horizon.

Input and output are trajectories of shape (B, horizon, transition_dim); the network
transposes to (B, channels, horizon) internally. ``horizon`` must be divisible by
2^(len(dim_mults) - 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import TimeMLP

__all__ = ["TemporalUnet"]


class Conv1dBlock(nn.Sequential):
    """Conv1d - GroupNorm - Mish."""

    def __init__(self, inp: int, out: int, kernel_size: int, groups: int = 8) -> None:
        super().__init__(
            nn.Conv1d(inp, out, kernel_size, padding=kernel_size // 2), nn.GroupNorm(groups, out), nn.Mish()
        )


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks with the time embedding added after the first, plus a 1x1 residual."""

    def __init__(self, inp: int, out: int, embed_dim: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(inp, out, kernel_size)
        self.block2 = Conv1dBlock(out, out, kernel_size)
        self.time_mlp = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, out))
        self.residual = nn.Conv1d(inp, out, 1) if inp != out else nn.Identity()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.block1(x) + self.time_mlp(t)[:, :, None]
        return self.block2(h) + self.residual(x)


class TemporalUnet(nn.Module):
    """Temporal U-Net.

    Args:
        transition_dim: features per time step (e.g. 6 = 4 state + 2 action dims for Maze2D).
        dim: base width; level k has ``dim * dim_mults[k]`` channels (Diffuser Maze2D: 32, (1, 4, 8)).
        dim_mults: width multipliers; every level but the last halves the horizon.
        kernel_size: temporal convolution width.

    ``forward(x, t)``: x (B, horizon, transition_dim), t (B,) model time (any real scale,
    e.g. a step index) -> (B, horizon, transition_dim).
    """

    def __init__(
        self,
        transition_dim: int,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.config = {
            "transition_dim": transition_dim,
            "dim": dim,
            "dim_mults": list(dim_mults),
            "kernel_size": kernel_size,
        }
        dims = [transition_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
        self.time_mlp = TimeMLP(dim)
        self.downs = nn.ModuleList()
        for k, (din, dout) in enumerate(in_out):
            last = k == len(in_out) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(din, dout, dim, kernel_size),
                        ResidualTemporalBlock(dout, dout, dim, kernel_size),
                        nn.Identity() if last else nn.Conv1d(dout, dout, 3, 2, 1),
                    ]
                )
            )
        mid = dims[-1]
        self.mid1 = ResidualTemporalBlock(mid, mid, dim, kernel_size)
        self.mid2 = ResidualTemporalBlock(mid, mid, dim, kernel_size)
        self.ups = nn.ModuleList()
        for din, dout in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(dout * 2, din, dim, kernel_size),
                        ResidualTemporalBlock(din, din, dim, kernel_size),
                        nn.ConvTranspose1d(din, din, 4, 2, 1),
                    ]
                )
            )
        self.final = nn.Sequential(Conv1dBlock(dim, dim, kernel_size), nn.Conv1d(dim, transition_dim, 1))
        self.min_horizon_factor = 2 ** (len(dim_mults) - 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.config["transition_dim"]:
            raise ValueError(
                f"expected x of shape (B, horizon, {self.config['transition_dim']}), got {tuple(x.shape)}"
            )
        if x.shape[1] % self.min_horizon_factor:
            raise ValueError(f"horizon {x.shape[1]} must be divisible by {self.min_horizon_factor}")
        h = x.transpose(1, 2)
        temb = self.time_mlp(t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t)
        skips = []
        for block1, block2, down in self.downs:
            h = block2(block1(h, temb), temb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid1(h, temb), temb)
        for block1, block2, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(block2(block1(h, temb), temb))
        return self.final(h).transpose(1, 2)
