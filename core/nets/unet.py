"""DDPM-style U-Net (Ho et al. 2020; class conditioning as in ADM): ResBlocks with GroupNorm and
SiLU, a sinusoidal time embedding added in every ResBlock, optional class embedding (with a null
class for classifier-free guidance), self-attention at chosen resolutions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .conditioning import ClassConditional, ClassEmbedding, TimeEmbedding, check_image, time_vector

__all__ = ["UNet", "UNetConfig"]


@dataclass
class UNetConfig:
    """U-Net hyper-parameters. Defaults are DDPM's CIFAR-10 model (35.7M parameters).

    ``image_size`` must be divisible by 2^(len(channel_mults) - 1); ``attention_resolutions``
    lists feature-map sizes (e.g. 16 for 16x16) that get self-attention; ``num_classes=None``
    builds an unconditional net.
    """

    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    dropout: float = 0.1
    num_classes: int | None = None
    class_dropout: float = 0.1
    groups: int = 32
    time_scale: float = 1000.0

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        levels = len(self.channel_mults)
        if levels < 1 or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be positive integers, got {self.channel_mults}")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2^{levels - 1} for {levels} levels "
                f"(channel_mults={self.channel_mults})"
            )
        sizes = {self.image_size // 2**i for i in range(levels)}
        if not set(self.attention_resolutions) <= sizes:
            raise ValueError(
                f"attention_resolutions {self.attention_resolutions} must be among "
                f"the feature sizes {sorted(sizes)}"
            )
        widths = {self.base_channels * m for m in self.channel_mults}
        if any(w % self.groups or w % self.num_heads for w in widths):
            raise ValueError(
                f"every width {sorted(widths)} must be divisible by "
                f"groups={self.groups} and num_heads={self.num_heads}"
            )


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(ClassConditional, ModelMixin):
    """``UNet(config)(x, t, y=None)``: x (B, C, H, W), t scalar or (B,), y (B,) int64 or None
    -> (B, C, H, W)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        ch = c.base_channels
        temb = 4 * ch
        self.time_embed = TimeEmbedding(temb, freq_dim=ch, hidden_dim=temb, time_scale=c.time_scale)
        self.class_embed = ClassEmbedding(c.num_classes, temb, c.class_dropout) if c.num_classes else None
        self.conv_in = nn.Conv2d(c.in_channels, ch, 3, padding=1)

        skips, res = [ch], c.image_size
        self.down = nn.ModuleList()
        for level, mult in enumerate(c.channel_mults):
            for _ in range(c.num_res_blocks):
                stage = [ResBlock(ch, c.base_channels * mult, temb, c.dropout, c.groups)]
                ch = c.base_channels * mult
                if res in c.attention_resolutions:
                    stage.append(AttnBlock(ch, c.num_heads, c.groups))
                self.down.append(nn.ModuleList(stage))
                skips.append(ch)
            if level < len(c.channel_mults) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                res //= 2
                skips.append(ch)

        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, temb, c.dropout, c.groups),
                AttnBlock(ch, c.num_heads, c.groups),
                ResBlock(ch, ch, temb, c.dropout, c.groups),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mults))):
            for i in range(c.num_res_blocks + 1):
                stage = [ResBlock(ch + skips.pop(), c.base_channels * mult, temb, c.dropout, c.groups)]
                ch = c.base_channels * mult
                if res in c.attention_resolutions:
                    stage.append(AttnBlock(ch, c.num_heads, c.groups))
                if level > 0 and i == c.num_res_blocks:
                    stage.append(Upsample(ch))
                    res *= 2
                self.up.append(nn.ModuleList(stage))

        self.norm_out = nn.GroupNorm(c.groups, ch)
        self.conv_out = nn.Conv2d(ch, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        c = self.config
        check_image(x, c.in_channels, c.image_size, "UNet")
        self.check_labels(y)
        emb = self.time_embed(time_vector(t, x))
        if self.class_embed is not None:
            emb = emb + self.class_embed(y, x.shape[0])
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            for layer in stage:
                h = layer(h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for stage in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in stage:
                h = layer(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
