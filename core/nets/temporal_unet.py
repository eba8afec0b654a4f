"""Janner et al.'s Temporal U-Net (Diffuser): 1-D residual convolutions over the planning horizon.

Input and output are trajectories of shape (B, horizon, transition_dim); the network
transposes to (B, channels, horizon) internally. ``horizon`` must be divisible by
2^(len(dim_mults) - 1).

With ``cond_dim > 0`` the network also takes per-step conditioning features (B, horizon,
cond_dim), concatenated to the input channels (e.g. the start and goal states broadcast along
the horizon plus the step's position). Convolutions are translation-equivariant, so an
unconditional network can only find inpainted rows through the zero padding at the edges of
the horizon, which it learns slowly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .conditioning import TimeEmbedding

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


class TemporalUnet(ModelMixin):
    """Temporal U-Net.

    Args:
        transition_dim: features per time step (e.g. 6 = 4 state + 2 action dims for Maze2D).
        dim: base width; level k has ``dim * dim_mults[k]`` channels (Diffuser Maze2D: 32, (1, 4, 8)).
        dim_mults: width multipliers; every level but the last halves the horizon.
        kernel_size: temporal convolution width.
        cond_dim: number of conditioning channels (0: none).

    ``forward(x, t, cond=None)``: x (B, horizon, transition_dim), t (B,) model time (any real
    scale, e.g. a step index), cond (B or 1, horizon, cond_dim) (required iff ``cond_dim > 0``)
    -> (B, horizon, transition_dim).
    """

    def __init__(
        self,
        transition_dim: int,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        kernel_size: int = 5,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.transition_dim = transition_dim
        if cond_dim < 0:
            raise ValueError(f"cond_dim must be >= 0, got {cond_dim}")
        self.cond_dim = cond_dim
        dims = [transition_dim + cond_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
        self.time_mlp = TimeEmbedding(
            dim, freq_dim=dim, hidden_dim=4 * dim, time_scale=1.0, activation="mish"
        )
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
        for din, dout in reversed(in_out[1:]):  # the full-resolution skip is unused, as in Diffuser
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

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.transition_dim:
            raise ValueError(f"expected x of shape (B, horizon, {self.transition_dim}), got {tuple(x.shape)}")
        if x.shape[1] % self.min_horizon_factor:
            raise ValueError(f"horizon {x.shape[1]} must be divisible by {self.min_horizon_factor}")
        if self.cond_dim:
            if cond is None or cond.dim() != 3 or cond.shape[1:] != (x.shape[1], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"expected cond of shape (B, {x.shape[1]}, {self.cond_dim}), got {got}")
            x = torch.cat([x, cond.to(x.dtype).expand(x.shape[0], -1, -1)], dim=-1)
        elif cond is not None:
            raise ValueError("this TemporalUnet was built with cond_dim=0 but received cond")
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
