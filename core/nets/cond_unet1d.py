"""Chi et al.'s conditional 1-D U-Net (Diffusion Policy): residual convolutions over an action
chunk, each block modulated by FiLM (a per-channel scale and shift) computed from one global
conditioning vector = [diffusion-time embedding, observation-window embedding].

Input and output are chunks of shape (B, horizon, input_dim); the network transposes to
(B, channels, horizon) internally. Every level but the last halves the horizon, so ``horizon``
must be a multiple of 2^(len(down_dims) - 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .embeddings import SinusoidalEmbedding
from .temporal_unet import Conv1dBlock

__all__ = ["ConditionalUnet1D", "FiLMResidualBlock"]


class FiLMResidualBlock(nn.Module):
    """Conv block, FiLM ``h <- scale(c) * h + shift(c)``, conv block, plus a 1x1 residual.

    x (B, inp, H), c (B, cond_dim) -> (B, out, H).
    """

    def __init__(self, inp: int, out: int, cond_dim: int, kernel_size: int = 5, groups: int = 8) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(inp, out, kernel_size, groups)
        self.block2 = Conv1dBlock(out, out, kernel_size, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out))
        self.residual = nn.Conv1d(inp, out, 1) if inp != out else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.film(c)[:, :, None].chunk(2, dim=1)
        h = scale * self.block1(x) + shift
        return self.block2(h) + self.residual(x)


class ConditionalUnet1D(ModelMixin):
    """FiLM-conditioned 1-D U-Net.

    Args:
        input_dim: features per chunk step (the action dimension).
        global_cond_dim: width of the conditioning vector (e.g. observation horizon x obs features);
            0 for an unconditional network.
        time_embed_dim: width of the sinusoidal diffusion-time embedding (Chi et al.: 256).
        down_dims: channels per level (Chi et al.: (256, 512, 1024)).
        kernel_size: temporal convolution width (Chi et al.: 5).
        groups: GroupNorm groups; every entry of ``down_dims`` must be divisible by it.

    ``forward(x, t, global_cond=None)``: x (B, horizon, input_dim), t (B,) or scalar model time
    (any real scale, e.g. a step index in [0, T)), global_cond (B, global_cond_dim)
    -> (B, horizon, input_dim).
    """

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int = 0,
        time_embed_dim: int = 256,
        down_dims: tuple[int, ...] = (256, 512, 1024),
        kernel_size: int = 5,
        groups: int = 8,
    ) -> None:
        super().__init__()
        down_dims = tuple(int(d) for d in down_dims)
        if input_dim < 1 or global_cond_dim < 0:
            raise ValueError(
                f"need input_dim >= 1 and global_cond_dim >= 0, got {input_dim}, {global_cond_dim}"
            )
        if not down_dims or any(d % groups for d in down_dims):
            raise ValueError(f"down_dims {down_dims} must be non-empty and divisible by groups={groups}")
        self.input_dim, self.global_cond_dim = input_dim, global_cond_dim
        self.horizon_factor = 2 ** (len(down_dims) - 1)
        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(time_embed_dim),
            nn.Linear(time_embed_dim, 4 * time_embed_dim),
            nn.Mish(),
            nn.Linear(4 * time_embed_dim, time_embed_dim),
        )
        cond_dim = time_embed_dim + global_cond_dim
        dims = [input_dim, *down_dims]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
        self.downs = nn.ModuleList()
        for k, (din, dout) in enumerate(in_out):
            last = k == len(in_out) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        FiLMResidualBlock(din, dout, cond_dim, kernel_size, groups),
                        FiLMResidualBlock(dout, dout, cond_dim, kernel_size, groups),
                        nn.Identity() if last else nn.Conv1d(dout, dout, 3, 2, 1),
                    ]
                )
            )
        mid = down_dims[-1]
        self.mids = nn.ModuleList(
            [FiLMResidualBlock(mid, mid, cond_dim, kernel_size, groups) for _ in range(2)]
        )
        self.ups = nn.ModuleList()
        for din, dout in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList(
                    [
                        FiLMResidualBlock(2 * dout, din, cond_dim, kernel_size, groups),
                        FiLMResidualBlock(din, din, cond_dim, kernel_size, groups),
                        nn.ConvTranspose1d(din, din, 4, 2, 1),
                    ]
                )
            )
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, groups),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    def valid_horizons(self, up_to: int = 64) -> list[int]:
        """Chunk lengths this network takes, up to ``up_to``."""
        return list(range(self.horizon_factor, up_to + 1, self.horizon_factor))

    def forward(self, x: Tensor, t: Tensor, global_cond: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected x of shape (B, horizon, {self.input_dim}), got {tuple(x.shape)}")
        if x.shape[1] % self.horizon_factor:
            raise ValueError(
                f"horizon {x.shape[1]} is not supported by this network with {len(self.downs)} levels: it "
                f"must be a multiple of {self.horizon_factor}, "
                f"e.g. {self.valid_horizons(4 * self.horizon_factor)}"
            )
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        temb = self.time_mlp(t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(-1)).to(x.dtype)
        if self.global_cond_dim:
            if global_cond is None or global_cond.shape != (b, self.global_cond_dim):
                got = None if global_cond is None else tuple(global_cond.shape)
                raise ValueError(f"expected global_cond of shape ({b}, {self.global_cond_dim}), got {got}")
            c = torch.cat([temb, global_cond.to(x.dtype)], dim=-1)
        elif global_cond is not None:
            raise ValueError(
                "this ConditionalUnet1D was built with global_cond_dim=0 but received global_cond"
            )
        else:
            c = temb
        h = x.transpose(1, 2)
        skips = []
        for block1, block2, down in self.downs:
            h = block2(block1(h, c), c)
            skips.append(h)
            h = down(h)
        for block in self.mids:
            h = block(h, c)
        for block1, block2, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(block2(block1(h, c), c))
        return self.final(h).transpose(1, 2)
