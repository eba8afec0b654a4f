"""A time-dependent image classifier: the encoder half of the DDPM U-Net plus a pooled linear head.

It reads noisy images x_t at continuous time t (the same t the samplers pass to guides), as
needed by classifier guidance (ADM's noisy classifier) and by EGSDE's realism expert, whose
energy compares the classifier's intermediate feature maps. With ``time_conditional=False``
the time input is ignored (a plain classifier of clean images, for ablations).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .conditioning import TimeEmbedding, check_image, time_vector
from .unet import AttnBlock, Downsample, ResBlock

__all__ = ["TimeClassifier"]


class TimeClassifier(ModelMixin):
    """``TimeClassifier(...)(x, t) -> logits``: x (B, C, H, W), t scalar or (B,) -> (B, num_classes).

    Layout: ``conv_in``, then per level ``num_res_blocks`` ResBlocks (self-attention at
    ``attention_resolutions``) and a stride-2 downsampling between levels (named ``down.0``,
    ``down.1``, ...: the output of each level), the U-Net's middle block (``mid``: ResBlock,
    attention, ResBlock), and a head GroupNorm -> SiLU -> global average pool -> Linear.
    :meth:`features` returns the feature map after any named layer (:attr:`layers`).

    Args:
        image_size: H = W of the inputs; divisible by 2^(len(channel_mults) - 1).
        in_channels, num_classes: input channels and number of classes.
        base_channels, channel_mults, num_res_blocks, attention_resolutions, dropout, groups:
            as in :class:`core.nets.UNetConfig`.
        time_scale: the time embedding sees ``time_scale * t`` (1000 for t in [0, 1]).
        time_conditional: False ignores t (every call embeds t = 0).
    """

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 2,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] | list[int] = (),
        dropout: float = 0.0,
        groups: int = 8,
        time_scale: float = 1000.0,
        time_conditional: bool = True,
    ) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mults)
        if not mults or min(mults) < 1:
            raise ValueError(f"channel_mults must be positive integers, got {channel_mults}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if image_size % 2 ** (len(mults) - 1):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2^{len(mults) - 1} for {len(mults)} levels"
            )
        widths = {base_channels * m for m in mults}
        if any(w % groups for w in widths):
            raise ValueError(f"every width {sorted(widths)} must be divisible by groups={groups}")
        self.image_size, self.in_channels, self.num_classes = image_size, in_channels, num_classes
        self.time_conditional = bool(time_conditional)
        ch = base_channels
        temb = 4 * ch
        self.time_embed = TimeEmbedding(temb, freq_dim=ch, hidden_dim=temb, time_scale=time_scale)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.levels = nn.ModuleList()
        res = image_size
        for level, mult in enumerate(mults):
            blocks: list[nn.Module] = []
            if level > 0:
                blocks.append(Downsample(ch))
                res //= 2
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, base_channels * mult, temb, dropout, groups))
                ch = base_channels * mult
                if res in tuple(attention_resolutions):
                    blocks.append(AttnBlock(ch, 1, groups))
            self.levels.append(nn.ModuleList(blocks))
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, temb, dropout, groups),
                AttnBlock(ch, 1, groups),
                ResBlock(ch, ch, temb, dropout, groups),
            ]
        )
        self.head = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(ch, num_classes)

    @property
    def layers(self) -> tuple[str, ...]:
        """Names accepted by :meth:`features`, from the input side to the pooled features."""
        return ("conv_in", *(f"down.{i}" for i in range(len(self.levels))), "mid", "pool")

    def _embed(self, x: Tensor, t: float | Tensor | None) -> Tensor:
        if not self.time_conditional or t is None:
            if self.time_conditional:
                raise ValueError("this classifier is time-dependent: pass the time t of the noisy input")
            t = 0.0
        return self.time_embed(time_vector(t, x).to(self.conv_in.weight.dtype))

    def features(self, x: Tensor, t: float | Tensor | None = None, layer: str = "mid") -> Tensor:
        """The activation after ``layer``: (B, C_l, H_l, W_l) (``pool``: (B, C))."""
        if layer not in self.layers:
            raise ValueError(f"unknown feature layer {layer!r}; this classifier has {list(self.layers)}")
        check_image(x, self.in_channels, self.image_size, "TimeClassifier")
        emb = self._embed(x, t)
        h = self.conv_in(x)
        if layer == "conv_in":
            return h
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, emb)
            if layer == f"down.{i}":
                return h
        for block in self.mid:
            h = block(h, emb)
        return h if layer == "mid" else self.head(h)

    def forward(self, x: Tensor, t: float | Tensor | None = None) -> Tensor:
        return self.out(self.features(x, t, "pool"))

    def log_prob(self, x: Tensor, t: float | Tensor | None, y: Tensor) -> Tensor:
        """log p(y | x_t) per sample, shape (B,), for labels y (B,) int64."""
        return F.log_softmax(self(x, t), dim=-1).gather(1, y.reshape(-1, 1).long()).squeeze(1)

    @torch.no_grad()
    def predict(self, x: Tensor, t: float | Tensor | None = None, batch_size: int = 512) -> Tensor:
        """Predicted labels (B,) int64, in batches, without gradients (t scalar, (B,) or None)."""
        t = torch.as_tensor(t, device=x.device) if t is not None else None
        out = []
        for i in range(0, len(x), batch_size):
            ti = t[i : i + batch_size] if t is not None and t.dim() else t
            out.append(self(x[i : i + batch_size], ti).argmax(1))
        return torch.cat(out)
