"""U-ViT (Bao et al. 2023): time, class and image patches are all tokens of one ViT; long skip
connections join each shallow block to its mirrored deep block (concatenate, then Linear);
a final 3x3 convolution after unpatchify."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from ..config import sized_preset
from .conditioning import ClassConditional, ClassEmbedding, TimeEmbedding, check_image, time_vector
from .transformer import Attention, FeedForward, PatchEmbed, unpatchify

__all__ = ["UViT", "UViTConfig", "UVIT_SIZES"]

#: (depth, width, heads) of the paper's sizes; depth counts in + out blocks (the mid block is extra).
UVIT_SIZES = {"S": (12, 512, 8), "M": (16, 768, 12), "L": (20, 1024, 16), "H": (28, 1152, 16)}


@dataclass
class UViTConfig:
    """U-ViT hyper-parameters; defaults are U-ViT-S/2 for CIFAR-10 (unconditional, ~44M).

    ``depth`` must be even: depth/2 shallow blocks, one middle block, depth/2 deep blocks.
    ``mlp_time_embed`` puts an MLP after the sinusoidal time embedding (the ImageNet models).
    """

    image_size: int = 32
    in_channels: int = 3
    patch_size: int = 2
    dim: int = 512
    depth: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    mlp_time_embed: bool = False
    num_classes: int | None = None
    class_dropout: float = 0.1
    time_scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.depth % 2:
            raise ValueError(f"depth must be even (in/out block pairs), got {self.depth}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads={self.heads}")

    @classmethod
    def preset(cls, name: str, **overrides) -> UViTConfig:
        """A paper size ``"<size>/<patch>"`` (sizes: ``UVIT_SIZES``), e.g. ``"S/2"``; ``overrides``
        set other fields."""
        return sized_preset(cls, UVIT_SIZES, name, **overrides)


class UViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool) -> None:
        super().__init__()
        self.skip = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(ClassConditional, ModelMixin):
    """``UViT(config)(x, t, y=None)``: x (B, C, H, W), t scalar or (B,), y (B,) int64 or None
    -> (B, C, H, W)."""

    def __init__(self, config: UViTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.in_channels, c.dim, c.patch_size)
        hidden = 4 * c.dim if c.mlp_time_embed else None
        self.time_embed = TimeEmbedding(c.dim, freq_dim=c.dim, hidden_dim=hidden, time_scale=c.time_scale)
        self.class_embed = ClassEmbedding(c.num_classes, c.dim, c.class_dropout) if c.num_classes else None
        self.extras = 1 + (self.class_embed is not None)
        tokens = self.extras + (c.image_size // c.patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, c.dim))
        args = (c.dim, c.heads, c.mlp_ratio, c.qkv_bias)
        self.in_blocks = nn.ModuleList(UViTBlock(*args, skip=False) for _ in range(c.depth // 2))
        self.mid_block = UViTBlock(*args, skip=False)
        self.out_blocks = nn.ModuleList(UViTBlock(*args, skip=True) for _ in range(c.depth // 2))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.patch_size**2 * c.in_channels)
        self.conv_out = nn.Conv2d(c.in_channels, c.in_channels, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.config
        check_image(x, cfg.in_channels, cfg.image_size, "UViT")
        self.check_labels(y)
        tokens = [self.time_embed(time_vector(t, x))[:, None]]
        if self.class_embed is not None:
            tokens.append(self.class_embed(y, x.shape[0])[:, None])
        h = torch.cat([*tokens, self.patch_embed(x)], dim=1) + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skips.pop())
        h = self.head(self.norm(h))[:, self.extras :]
        return self.conv_out(unpatchify(h, cfg.in_channels, cfg.patch_size))
