"""Shared pieces of the image backbones: time and class embeddings and input checks.

Time: the network receives the schedule's model time (``Denoiser`` passes
``schedule.model_time(t)``, continuous t in [0, 1] for continuous schedules) and multiplies it
by ``time_scale`` (1000 by default) before a sinusoidal embedding, so that its frequencies
resolve [0, 1]; use ``time_scale=1`` for a discrete schedule whose model time is the step
index 0..N-1.

Classes: label ``num_classes`` is the null class of classifier-free guidance. ``y=None``
means "unconditional" (every sample gets the null class); during training a fraction
``class_dropout`` of labels is replaced by the null class. Sample with classifier-free
guidance as ``core.guidance.ClassifierFree(scale, {"y": net.null_class})``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import SinusoidalEmbedding

__all__ = ["ClassEmbedding", "TimeEmbedding", "check_image", "time_vector"]


def time_vector(t: float | Tensor, x: Tensor) -> Tensor:
    """Times as shape (B,) on x's device: a scalar is broadcast over the batch."""
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def check_image(x: Tensor, channels: int, size: int, name: str) -> None:
    """Raise a ValueError unless x has shape (B, channels, size, size)."""
    if x.dim() != 4:
        raise ValueError(
            f"{name} expects images of shape (B, {channels}, {size}, {size}), got {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} is configured for {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})"
        )
    if tuple(x.shape[2:]) != (size, size):
        raise ValueError(
            f"{name} is configured for {size}x{size} images, "
            f"got {x.shape[2]}x{x.shape[3]} (shape {tuple(x.shape)})"
        )


_ACTIVATIONS = {"silu": nn.SiLU, "mish": nn.Mish}


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding (:class:`SinusoidalEmbedding`) of ``time_scale * t`` followed by an
    MLP Linear(freq_dim, hidden_dim) - activation - Linear(hidden_dim, out_dim): (B,) -> (B, out_dim).
    With ``hidden_dim=None`` there is no MLP and ``out_dim`` is the sinusoid's width.
    ``activation``: ``"silu"`` (DDPM, DiT, U-ViT) or ``"mish"`` (Janner's temporal U-Net)."""

    def __init__(
        self,
        out_dim: int,
        freq_dim: int = 256,
        hidden_dim: int | None = None,
        time_scale: float = 1000.0,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        self.time_scale = float(time_scale)
        self.sinusoid = SinusoidalEmbedding(freq_dim if hidden_dim is not None else out_dim)
        self.mlp = (
            nn.Sequential(
                nn.Linear(freq_dim, hidden_dim), _ACTIVATIONS[activation](), nn.Linear(hidden_dim, out_dim)
            )
            if hidden_dim is not None
            else nn.Identity()
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.sinusoid(t * self.time_scale))  # in the module's dtype (its buffer's)


class ClassEmbedding(nn.Module):
    """Learned embedding of labels 0..num_classes-1 plus the null class ``num_classes``.

    ``forward(y, batch)``: y of shape (B,) int64 or None (all null) -> (B, dim). In training
    mode a fraction ``dropout`` of the labels is replaced by the null class (label dropout
    for classifier-free guidance).
    """

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"class dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.dropout = dropout
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        device = self.table.weight.device
        if y is None:
            y = torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        else:
            if y.shape != (batch,):
                raise ValueError(f"labels y must have shape ({batch},), got {tuple(y.shape)}")
            if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ValueError(f"labels y must be an integer tensor, got {y.dtype}")
            if y.device.type != "meta" and bool(((y < 0) | (y > self.null_class)).any()):
                raise ValueError(
                    f"label out of range: got values in [{int(y.min())}, {int(y.max())}], expected "
                    f"0..{self.num_classes - 1} or {self.null_class} (the null class)"
                )
            y = y.long()
            if self.training and self.dropout > 0:
                drop = torch.rand(batch, device=y.device) < self.dropout
                y = torch.where(drop, torch.full_like(y, self.null_class), y)
        return self.table(y)


class ClassConditional:
    """Mixin for backbones whose ``class_embed`` is a :class:`ClassEmbedding` or None."""

    class_embed: ClassEmbedding | None

    @property
    def null_class(self) -> int | None:
        """The label that means "no class" (classifier-free guidance), or None if unconditional."""
        return self.class_embed.null_class if self.class_embed is not None else None

    def check_labels(self, y: Tensor | None) -> None:
        """Raise a ValueError when labels are given to an unconditional net."""
        if y is not None and self.class_embed is None:
            raise ValueError(f"labels y given to an unconditional {type(self).__name__} (num_classes=None)")
