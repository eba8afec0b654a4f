"""Time-conditioned residual MLP for low-dimensional data (toy 2-D densities, states, features)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .conditioning import ClassConditional, ClassEmbedding, TimeEmbedding, time_vector

__all__ = ["MLPNet", "MLPConfig"]


@dataclass
class MLPConfig:
    """``dim``: data width; ``depth`` residual blocks of width ``hidden``; ``num_classes=None``
    builds an unconditional net."""

    dim: int = 2
    hidden: int = 256
    depth: int = 3
    num_classes: int | None = None
    class_dropout: float = 0.1
    time_scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.depth < 1:
            raise ValueError(
                f"dim, hidden and depth must be positive, got {self.dim}, {self.hidden}, {self.depth}"
            )


class _Block(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class MLPNet(ClassConditional, ModelMixin):
    """``MLPNet(config)(x, t, y=None)``: x (B, dim), t scalar or (B,), y (B,) int64 or None -> (B, dim)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = c = config
        self.time_embed = TimeEmbedding(c.hidden, freq_dim=64, hidden_dim=c.hidden, time_scale=c.time_scale)
        self.class_embed = ClassEmbedding(c.num_classes, c.hidden, c.class_dropout) if c.num_classes else None
        self.inp = nn.Linear(c.dim, c.hidden)
        self.blocks = nn.ModuleList(_Block(c.hidden) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.hidden)
        self.out = nn.Linear(c.hidden, c.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"MLPNet expects inputs of shape (B, {self.config.dim}), got {tuple(x.shape)}")
        self.check_labels(y)
        emb = F.silu(self.time_embed(time_vector(t, x)))
        if self.class_embed is not None:
            emb = emb + self.class_embed(y, x.shape[0])
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, emb)
        return self.out(F.silu(self.norm_out(h)))
