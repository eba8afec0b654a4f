"""Video attention for a 2-D text-to-image UNet / ControlNet: key-frame and temporal attention.

A diffusers ``UNet2DConditionModel`` or ``ControlNetModel`` runs a clip as a batch of frames,
video-major: batch index = video * num_frames + frame. :func:`inflate` turns it into a video
model in place:

- **spatial self-attention** (``attn1`` of every ``BasicTransformerBlock``) becomes
  ``attention="keyframe"`` (ControlVideo, Zhao et al. 2023: every frame's queries attend to the
  keys and values of the video's first frame), ``"full"`` (fully cross-frame attention,
  Zhang et al. 2023: keys and values of all frames, concatenated) or stays ``"per_frame"``;
- **temporal attention** (``temporal=True``): after each block, a residual attention across the
  frames at every spatial position, ``h <- h + W_zero(Attn_temp(LayerNorm(h)))``; its LayerNorm
  and q/k/v/out projections are copies of the block's ``norm1`` / ``attn1``, and ``W_zero`` is a
  linear layer initialised to zero, so the inflated model equals the 2-D one at initialisation.

The number of frames lives in one :class:`VideoContext` shared by the processors and temporal
modules of a model (:func:`set_num_frames` changes it). With key-frame attention frame 0 attends
to itself exactly as in the 2-D model; with identical frames every mode equals per-frame
attention (the tests check both).

:func:`trainable_parameters` selects the parameters ControlVideo tunes on the source clip (the
key-frame attention's output projections, optionally its queries, and the temporal modules) and
freezes the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTENTION_MODES",
    "TemporalAttention",
    "VideoAttnProcessor",
    "VideoContext",
    "inflate",
    "is_inflated",
    "set_num_frames",
    "trainable_parameters",
]

#: Spatial self-attention modes of an inflated model.
ATTENTION_MODES = ("per_frame", "keyframe", "full")


@dataclass
class VideoContext:
    """Frames per video of the batches an inflated model receives (batch = videos * num_frames)."""

    num_frames: int

    def videos(self, batch: int) -> int:
        """The number of videos in a batch of ``batch`` frames; ValueError if it does not divide."""
        f = self.num_frames
        if batch % f:
            raise ValueError(
                f"batch of {batch} frames is not a whole number of videos of num_frames={f}; "
                "order the batch video-major (video * num_frames + frame) or call set_num_frames"
            )
        return batch // f


def _check_frames(num_frames: int) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    return num_frames


class VideoAttnProcessor:
    """A diffusers attention processor whose self-attention spans the frames of a video.

    Called by ``diffusers.models.attention_processor.Attention`` with ``hidden_states`` of
    shape (videos * F, N, C) (or (videos * F, C, H, W)); ``mode`` is one of
    :data:`ATTENTION_MODES`. Cross-attention calls (``encoder_hidden_states`` given) are plain
    per-frame attention. The scaled dot-product uses the module's own ``scale``.
    """

    def __init__(self, context: VideoContext, mode: str = "keyframe") -> None:
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
        self.context = context
        self.mode = mode

    def _key_value_input(self, attn, hidden_states: Tensor) -> Tensor:
        """Self-attention's key/value tokens for every frame: (videos * F, M, C)."""
        bf, n, c = hidden_states.shape
        if self.mode == "per_frame":
            return hidden_states
        f = self.context.num_frames
        video = hidden_states.view(self.context.videos(bf), f, n, c)
        if self.mode == "keyframe":
            src = video[:, :1]
        else:
            src = video.reshape(bf // f, 1, f * n, c)
        return src.expand(-1, f, -1, -1).reshape(bf, src.shape[2], c)

    def __call__(
        self,
        attn,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            kv_input = self._key_value_input(attn, hidden_states)
        else:
            kv_input = encoder_hidden_states
            if attn.norm_cross:
                kv_input = attn.norm_encoder_hidden_states(kv_input)
        if attention_mask is not None:
            if encoder_hidden_states is None and self.mode == "full":
                raise ValueError("an attention mask is not supported with fully cross-frame attention")
            attention_mask = attn.prepare_attention_mask(attention_mask, kv_input.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        key, value = attn.to_k(kv_input), attn.to_v(kv_input)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class TemporalAttention(nn.Module):
    """Residual attention across frames at each spatial position.

    ``forward(h)`` with h of shape (videos * F, N, C) returns
    ``h + proj_out(attn(norm(h_t)))``, where h_t regroups h as (videos * N, F, C). ``norm`` and
    ``attn`` are copies of a transformer block's ``norm1`` and ``attn1`` (so the temporal
    projections start from the spatial self-attention's weights); ``proj_out`` starts at zero,
    so the module is the identity at initialisation.
    """

    def __init__(self, norm: nn.Module, attn: nn.Module, context: VideoContext) -> None:
        super().__init__()
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.norm = norm
        self.attn = attn
        self.attn.set_processor(AttnProcessor2_0())
        dim = attn.to_out[0].out_features
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.context = context

    def forward(self, h: Tensor) -> Tensor:
        bf, n, c = h.shape
        f = self.context.num_frames
        v = self.context.videos(bf)
        x = h.view(v, f, n, c).transpose(1, 2).reshape(v * n, f, c)
        x = self.proj_out(self.attn(self.norm(x)))
        return h + x.view(v, n, f, c).transpose(1, 2).reshape(bf, n, c)


def _temporal_hook(module: nn.Module, args, output: Tensor) -> Tensor:
    return module.attn_temp(output)


def _blocks(model: nn.Module) -> list[nn.Module]:
    from diffusers.models.attention import BasicTransformerBlock

    return [m for m in model.modules() if isinstance(m, BasicTransformerBlock)]


def inflate(
    model: nn.Module,
    num_frames: int,
    attention: str = "keyframe",
    temporal: bool = True,
) -> VideoContext:
    """Make a diffusers UNet / ControlNet a video model, in place; returns its :class:`VideoContext`.

    Args:
        model: a ``UNet2DConditionModel`` or ``ControlNetModel`` (any module holding diffusers
            ``BasicTransformerBlock`` s).
        num_frames: frames per video F; the model then takes batches of videos * F frames,
            video-major.
        attention: spatial self-attention mode, one of :data:`ATTENTION_MODES`.
        temporal: add a zero-initialised temporal attention after each transformer block.

    Raises ValueError for a model without transformer blocks, a model inflated already, or a bad
    mode / frame count.
    """
    if attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {attention!r}; expected one of {ATTENTION_MODES}")
    context = VideoContext(_check_frames(num_frames))
    blocks = _blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no diffusers BasicTransformerBlock to inflate")
    if is_inflated(model):
        raise ValueError(f"{type(model).__name__} is inflated already")
    for block in blocks:
        block.attn1.set_processor(VideoAttnProcessor(context, attention))
        if temporal:
            dim = block.attn1.to_out[0].out_features
            norm = copy.deepcopy(block.norm1) if isinstance(block.norm1, nn.LayerNorm) else nn.LayerNorm(dim)
            weight = block.attn1.to_out[0].weight
            temp = TemporalAttention(norm, copy.deepcopy(block.attn1), context)
            block.attn_temp = temp.to(device=weight.device, dtype=weight.dtype)
            block.register_forward_hook(_temporal_hook)
    model._video_context = context
    return context


def is_inflated(model: nn.Module) -> bool:
    """Whether :func:`inflate` has run on ``model``."""
    return getattr(model, "_video_context", None) is not None


def set_num_frames(model: nn.Module, num_frames: int) -> None:
    """Set the frames per video of an inflated model (its processors and temporal modules)."""
    if not is_inflated(model):
        raise ValueError(f"{type(model).__name__} is not inflated; call inflate(model, num_frames) first")
    model._video_context.num_frames = _check_frames(num_frames)


def trainable_parameters(models: Iterable[nn.Module], query: bool = False) -> list[nn.Parameter]:
    """Freeze every parameter of ``models`` except those ControlVideo tunes; returns those.

    Tuned: the output projection of each key-frame (self-)attention (``attn1.to_out``), with
    ``query`` also its query projection (``attn1.to_q``), and every temporal attention module
    (``attn_temp``) whole. Cross-attention, convolutions, norms and embeddings stay frozen.
    """
    selected: list[nn.Parameter] = []
    for model in models:
        if not is_inflated(model):
            raise ValueError(f"{type(model).__name__} is not inflated; call inflate first")
        model.requires_grad_(False)
        for block in _blocks(model):
            parts = [block.attn1.to_out]
            if query:
                parts.append(block.attn1.to_q)
            if hasattr(block, "attn_temp"):
                parts.append(block.attn_temp)
            for part in parts:
                for p in part.parameters():
                    p.requires_grad_(True)
                    selected.append(p)
    return selected
