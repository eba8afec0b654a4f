"""DiT (Peebles & Xie 2023): patchify, transformer blocks modulated by adaLN-Zero from the sum
of time and class embeddings, linear decoder back to patches. Outputs one tensor shaped like
the input (no learned variance channels)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..checkpoint import ModelMixin
from ..config import sized_preset
from .conditioning import ClassConditional, ClassEmbedding, TimeEmbedding, check_image, time_vector
from .transformer import Attention, FeedForward, PatchEmbed, sincos_2d, unpatchify

__all__ = ["DiT", "DiTConfig", "DIT_SIZES"]

#: (depth, width, heads) of the paper's model sizes.
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


@dataclass
class DiTConfig:
    """DiT hyper-parameters; defaults are DiT-S/2 on 32x32x4 latents, unconditional.

    ``DiTConfig.preset("XL/2", num_classes=1000)`` builds a named paper size.
    """

    image_size: int = 32
    in_channels: int = 4
    patch_size: int = 2
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int | None = None
    class_dropout: float = 0.1
    time_scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.dim % self.heads or self.dim % 4:
            raise ValueError(f"dim {self.dim} must be divisible by 4 and by heads={self.heads}")

    @classmethod
    def preset(cls, name: str, **overrides) -> DiTConfig:
        """A paper size ``"<size>/<patch>"`` (sizes: ``DIT_SIZES``), e.g. ``"S/2"``; ``overrides``
        set other fields."""
        return sized_preset(cls, DIT_SIZES, name, **overrides)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        s1, g1, b1, s2, g2, b2 = self.ada(c).chunk(6, dim=1)
        x = x + b1[:, None] * self.attn(_modulate(self.norm1(x), s1, g1))
        return x + b2[:, None] * self.mlp(_modulate(self.norm2(x), s2, g2))


class DiT(ClassConditional, ModelMixin):
    """``DiT(config)(x, t, y=None)``: x (B, C, H, W), t scalar or (B,), y (B,) int64 or None
    -> (B, C, H, W)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.in_channels, c.dim, c.patch_size)
        grid = c.image_size // c.patch_size
        self.register_buffer("pos_embed", sincos_2d(c.dim, grid)[None], persistent=False)
        self.time_embed = TimeEmbedding(c.dim, freq_dim=256, hidden_dim=c.dim, time_scale=c.time_scale)
        self.class_embed = ClassEmbedding(c.num_classes, c.dim, c.class_dropout) if c.num_classes else None
        self.blocks = nn.ModuleList(DiTBlock(c.dim, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 2 * c.dim))
        self.head = nn.Linear(c.dim, c.patch_size**2 * c.in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for lin in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.table.weight, std=0.02)
        for ada in [blk.ada for blk in self.blocks] + [self.ada_out]:
            nn.init.zeros_(ada[1].weight)
            nn.init.zeros_(ada[1].bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.config
        check_image(x, cfg.in_channels, cfg.image_size, "DiT")
        self.check_labels(y)
        h = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        c = self.time_embed(time_vector(t, x))
        if self.class_embed is not None:
            c = c + self.class_embed(y, x.shape[0])
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        h = self.head(_modulate(self.norm_out(h), shift, scale))
        return unpatchify(h, cfg.in_channels, cfg.patch_size)
