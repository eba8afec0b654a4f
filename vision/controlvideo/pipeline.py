"""ControlVideo editing on a diffusers model folder: load, invert, tune, edit.

A model folder is laid out like a diffusers Stable Diffusion + ControlNet pipeline::

    unet/          UNet2DConditionModel
    controlnet/    ControlNetModel
    text_encoder/  a WordTextEncoder (vision.controlvideo.text) or a CLIP text model + tokenizer/
    scheduler/     any diffusers scheduler config (its beta schedule and prediction type are used)
    vae/           optional AutoencoderKL: without it the models work on pixels in [-1, 1]

Editing (Zhao et al. 2023) a clip of F frames, all as one batch of F frames:

1. encode the frames (VAE latents, or pixels) and compute the per-frame control maps;
2. optionally tune the selected attention parameters on (clip, source prompt) with the
   denoising loss (:func:`tune`);
3. invert the latents to noise by deterministic DDIM with the source prompt
   (:func:`core.ddim_invert`);
4. sample by DDIM from that noise with the target prompt under classifier-free guidance
   (:class:`core.guidance.ClassifierFree`, one batched call for both branches), the ControlNet
   conditioned on the control maps at every step (:func:`core.sample`).

The UNet and ControlNet are inflated (:func:`vision.controlvideo.attention.inflate`) with the
chosen attention mode; ``attention="per_frame", temporal=False`` is per-frame image editing by
the same code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from core import Denoiser, ddim_invert, sample
from core.diffusers_adapter import diffusers_denoiser
from core.guidance import ClassifierFree
from core.objectives.diffusion import denoising_loss

from .attention import inflate, set_num_frames, trainable_parameters
from .text import WordTextEncoder, load_text_encoder

__all__ = [
    "ControlledUNet",
    "EditConfig",
    "SourceClip",
    "VideoEditModel",
    "edit_clip",
    "edit_source",
    "load_tuned",
    "prepare_source",
    "save_tuned",
    "tune",
    "tuned_state",
]

_REQUIRED = ("unet", "controlnet", "text_encoder", "scheduler")


class ControlledUNet(nn.Module):
    """``net(x, t, encoder_hidden_states, control) -> eps``: a ControlNet's residuals added to a UNet.

    x (B, C, h, w) latents, t (B,) diffusers timesteps, encoder_hidden_states (B, L, D),
    control (B, 3, H, W) control maps in [0, 1] at the pixel resolution. ``control_scale``
    multiplies the ControlNet's residuals (0 switches the control off).
    """

    def __init__(self, unet: nn.Module, controlnet: nn.Module, control_scale: float = 1.0) -> None:
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        self.control_scale = float(control_scale)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def forward(self, x: Tensor, t: Tensor, encoder_hidden_states: Tensor, control: Tensor) -> Tensor:
        control = control.to(x.dtype)
        down, mid = self.controlnet(
            x, t, encoder_hidden_states=encoder_hidden_states, controlnet_cond=control,
            conditioning_scale=self.control_scale, return_dict=False,
        )  # fmt: skip
        return self.unet(
            x, t, encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample  # fmt: skip


@dataclass
class VideoEditModel:
    """The components of a model folder (see the module docstring), on one device and dtype."""

    unet: nn.Module
    controlnet: nn.Module
    text_encoder: nn.Module
    scheduler_config: dict
    vae: nn.Module | None = None
    inflated: dict = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        controlnet: str | os.PathLike | None = None,
    ) -> VideoEditModel:
        """Load a model folder; FileNotFoundError naming a missing component.

        ``controlnet`` optionally names a ControlNet folder outside ``folder`` (e.g. a Stable
        Diffusion 1.5 folder with a separately downloaded ControlNet).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        cn_dir = folder / "controlnet" if controlnet is None else Path(controlnet)
        if not (cn_dir / "config.json").is_file():
            raise FileNotFoundError(f"ControlNet folder {cn_dir} has no config.json")
        missing = [c for c in _REQUIRED if c != "controlnet" and not (folder / c).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"model folder {folder} lacks {missing}; "
                f"expected subfolders {list(_REQUIRED)} (+ optional vae/)"
            )
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

        sched = folder / "scheduler" / "scheduler_config.json"
        if not sched.is_file():
            raise FileNotFoundError(f"model folder {folder} has no scheduler config: {sched} is missing")

        def load(kind, path: Path) -> nn.Module:
            return kind.from_pretrained(path, torch_dtype=dtype).eval()

        vae = load(AutoencoderKL, folder / "vae") if (folder / "vae").is_dir() else None
        model = cls(
            unet=load(UNet2DConditionModel, folder / "unet"),
            controlnet=load(ControlNetModel, cn_dir),
            text_encoder=load_text_encoder(folder),
            scheduler_config=json.loads(sched.read_text()),
            vae=vae,
        )
        model.check_resolutions()
        return model.to(device, dtype)

    @property
    def vae_factor(self) -> int:
        """Pixels per latent pixel along each side (1 without a VAE)."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    def check_resolutions(self) -> None:
        """ValueError unless the ControlNet's conditioning embedding maps the pixel resolution of
        the control maps onto the latent resolution (its downsampling = the VAE's)."""
        embed = self.controlnet.config.conditioning_embedding_out_channels
        factor = 2 ** (len(embed) - 1)
        if factor != self.vae_factor:
            raise ValueError(
                f"the ControlNet downsamples control maps {factor}x but the latents are {self.vae_factor}x "
                "smaller than the frames; use a ControlNet made for this UNet and VAE"
            )

    def check_size(self, height: int, width: int) -> None:
        """ValueError unless frames of (height, width) fit the VAE and the UNet's downsampling."""
        multiple = self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if height % multiple or width % multiple:
            raise ValueError(
                f"frame size {height}x{width} does not fit this model: height and width must be "
                f"multiples of {multiple} (VAE and UNet downsampling)"
            )

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the components as a model folder (diffusers ``save_pretrained`` per component,
        the scheduler as a ``DDIMScheduler`` config with the same betas and prediction type),
        atomically: the folder appears complete or not at all."""
        from diffusers import DDIMScheduler

        from core.files import atomic_directory

        if self.inflated:
            raise ValueError("save the model before inflating it (the folder holds the 2-D image model)")
        with atomic_directory(folder) as tmp:
            self.unet.save_pretrained(tmp / "unet")
            self.controlnet.save_pretrained(tmp / "controlnet")
            if isinstance(self.text_encoder, WordTextEncoder):
                self.text_encoder.save_pretrained(tmp / "text_encoder")
            else:
                self.text_encoder.model.save_pretrained(tmp / "text_encoder")
                self.text_encoder.tokenizer.save_pretrained(tmp / "tokenizer")
            DDIMScheduler.from_config(self.scheduler_config).save_pretrained(tmp / "scheduler")
            if self.vae is not None:
                self.vae.save_pretrained(tmp / "vae")
        return Path(folder)

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> VideoEditModel:
        """Move every component to ``device`` and ``dtype`` (in place); returns self."""
        for m in self.modules():
            if next(m.parameters()).dtype != dtype or next(m.parameters()).device != torch.device(device):
                m.to(device=device, dtype=dtype)
        return self

    def modules(self) -> list[nn.Module]:
        """The components present: UNet, ControlNet, text encoder and the VAE if any."""
        return [m for m in (self.unet, self.controlnet, self.text_encoder, self.vae) if m is not None]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def inflate(self, num_frames: int, attention: str = "keyframe", temporal: bool = True) -> None:
        """Inflate the UNet and ControlNet to video (once; later calls only set num_frames)."""
        wanted = {"attention": attention, "temporal": temporal}
        if self.inflated:
            if self.inflated != wanted:
                raise ValueError(f"model is inflated with {self.inflated}; load it again for {wanted}")
            set_num_frames(self.unet, num_frames)
            set_num_frames(self.controlnet, num_frames)
            return
        inflate(self.unet, num_frames, attention, temporal)
        inflate(self.controlnet, num_frames, attention, temporal)
        self.inflated = wanted

    def check_prompt(self, prompt: str) -> None:
        """ValueError naming the words of ``prompt`` the text encoder does not know."""
        self.text_encoder.check(prompt)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Tensor:
        """Hidden states (1, L, D) of a prompt."""
        return self.text_encoder.encode([prompt]).to(self.dtype)

    @torch.no_grad()
    def encode(self, clip: Tensor) -> Tensor:
        """Frames (F, 3, H, W) in [0, 1] -> latents (F, C, h, w) (the VAE posterior mean, scaled)."""
        x = clip.to(self.device, self.dtype) * 2 - 1
        if self.vae is None:
            return x
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents (F, C, h, w) -> frames (F, 3, H, W) in [0, 1]."""
        x = latents.to(self.dtype)
        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        return ((x + 1) / 2).clamp(0, 1).float()

    def denoiser(self, control_scale: float = 1.0) -> Denoiser:
        """The UNet + ControlNet as a :class:`core.Denoiser` under the folder's schedule."""
        return diffusers_denoiser(
            ControlledUNet(self.unet, self.controlnet, control_scale), self.scheduler_config
        )


@dataclass
class EditConfig:
    """Settings of one edit (the defaults follow the paper where a CPU allows).

    attention / temporal: video attention (:func:`vision.controlvideo.attention.inflate`);
    tune_steps, lr, tune_query: one-shot tuning (the paper: 80-300 steps at lr 3e-5, outputs of
    key-frame attention + temporal attention); steps: DDIM steps of inversion and sampling
    (paper 50); guidance: classifier-free guidance scale of the edit (paper 12); control_scale:
    ControlNet residual scale; grid: the time grid shared by inversion and sampling.
    """

    attention: str = "keyframe"
    temporal: bool = True
    tune_steps: int = 0
    lr: float = 3e-5
    tune_query: bool = False
    steps: int = 50
    guidance: float = 12.0
    control_scale: float = 1.0
    grid: str = "time_uniform"


def _batch(t: Tensor, n: int) -> Tensor:
    return t.expand(n, *t.shape[1:])


def tune(
    model: VideoEditModel,
    latents: Tensor,
    prompt_embeds: Tensor,
    control: Tensor,
    steps: int,
    lr: float = 3e-5,
    query: bool = False,
    control_scale: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """One-shot tuning on the source clip: AdamW on the selected parameters
    (:func:`vision.controlvideo.attention.trainable_parameters`) minimising the denoising loss
    (:func:`core.objectives.diffusion.denoising_loss`) of the clip's latents (F, C, h, w) with
    its prompt (1, L, D) and controls (F, 3, H, W); one diffusion time per step, shared by the
    frames, drawn from the model's discrete training steps. Returns the loss per step."""
    if steps < 0:
        raise ValueError(f"tune steps must be >= 0, got {steps}")
    params = trainable_parameters([model.unet, model.controlnet], query=query)
    den = model.denoiser(control_scale)
    n = int(model.scheduler_config.get("num_train_timesteps", 1000))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    f = latents.shape[0]
    cond = {"encoder_hidden_states": _batch(prompt_embeds, f), "control": control}
    losses = []
    bar = tqdm(range(steps), desc="tuning", leave=False, disable=not progress)
    for _ in bar:
        step = torch.randint(0, n, (1,), generator=gen)
        t = ((step.to(torch.float64) + 1) / n).expand(f).to(latents.device)
        noise = torch.randn(latents.shape, generator=gen, dtype=latents.dtype).to(latents.device)
        loss = denoising_loss(den, latents, t=t, noise=noise, **cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    for p in params:
        p.requires_grad_(False)
    return losses


@dataclass
class SourceClip:
    """A source clip prepared for editing: latents (F, C, h, w), control maps (F, 3, H, W), the
    source prompt's hidden states (1, L, D), the DDIM-inverted noise latents and the tuning
    losses. One preparation (tuning, inversion) serves any number of target prompts."""

    latents: Tensor
    control: Tensor
    prompt_embeds: Tensor
    inverted: Tensor
    tune_losses: list[float]


def prepare_source(
    model: VideoEditModel,
    clip: Tensor,
    control: Tensor,
    source_prompt: str,
    config: EditConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SourceClip:
    """Inflate the model for the clip (F, 3, H, W) in [0, 1], tune it on the clip when
    ``config.tune_steps`` > 0, and DDIM-invert the clip's latents with the source prompt."""
    config = config or EditConfig()
    model.check_prompt(source_prompt)
    if clip.dim() != 4 or clip.shape[1] != 3:
        raise ValueError(f"clip must have shape (F, 3, H, W), got {tuple(clip.shape)}")
    if clip.shape != control.shape:
        raise ValueError(f"clip {tuple(clip.shape)} and control maps {tuple(control.shape)} differ in shape")
    model.check_size(*clip.shape[-2:])
    f = clip.shape[0]
    model.inflate(f, config.attention, config.temporal)
    latents = model.encode(clip)
    control = control.to(model.device, model.dtype)
    src = model.encode_prompt(source_prompt)
    losses: list[float] = []
    if config.tune_steps:
        losses = tune(
            model, latents, src, control, config.tune_steps, config.lr, config.tune_query,
            config.control_scale, seed, progress,
        )  # fmt: skip
    den = model.denoiser(config.control_scale)
    cond = {"encoder_hidden_states": _batch(src, f), "control": control}
    z = ddim_invert(den, latents, steps=config.steps, grid=config.grid, cond=cond, progress=progress)
    return SourceClip(latents, control, src, z, losses)


def edit_source(
    model: VideoEditModel,
    source: SourceClip,
    target_prompt: str,
    config: EditConfig | None = None,
    progress: bool = False,
) -> Tensor:
    """DDIM sampling from the inverted source toward ``target_prompt`` under classifier-free
    guidance, the ControlNet conditioned on the source's control maps: frames (F, 3, H, W) in
    [0, 1]. Use the ``config`` (steps, grid, control scale) the source was prepared with."""
    config = config or EditConfig()
    model.check_prompt(target_prompt)
    f = source.latents.shape[0]
    den = model.denoiser(config.control_scale)
    null = model.encode_prompt("")
    guide = ClassifierFree(config.guidance, {"encoder_hidden_states": null}) if config.guidance != 1 else None
    cond = {"encoder_hidden_states": _batch(model.encode_prompt(target_prompt), f), "control": source.control}
    out = sample(
        den, source.inverted, method="ddim", steps=config.steps, grid=config.grid, guide=guide, cond=cond,
        progress=progress,
    )  # fmt: skip
    return model.decode(out)


def edit_clip(
    model: VideoEditModel,
    clip: Tensor,
    control: Tensor,
    source_prompt: str,
    target_prompt: str,
    config: EditConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Edit a clip (F, 3, H, W) in [0, 1] with control maps (F, 3, H, W) toward ``target_prompt``
    (:func:`prepare_source`, then :func:`edit_source`).

    Returns ``{"edited": (F, 3, H, W) in [0, 1] (float32), "latents": the clip's latents,
    "inverted": the DDIM-inverted noise latents, "tune_losses": the tuning loss per step}``.
    With the source prompt as target and guidance 1, the edit reconstructs the clip up to the
    inversion's O(1 / steps) error.
    """
    model.check_prompt(target_prompt)
    source = prepare_source(model, clip, control, source_prompt, config, seed, progress)
    edited = edit_source(model, source, target_prompt, config, progress)
    return {
        "edited": edited,
        "inverted": source.inverted,
        "latents": source.latents,
        "tune_losses": source.tune_losses,
    }


_TUNABLE = (".attn1.to_out.", ".attn1.to_q.", ".attn_temp.")


def tuned_state(model: VideoEditModel) -> dict[str, Tensor]:
    """The tunable tensors of an inflated model (key-frame attention's output and query
    projections, temporal attention) by name, ``unet.<name>`` / ``controlnet.<name>``."""
    if not model.inflated:
        raise ValueError("the model is not inflated; nothing has been tuned")
    return {
        f"{prefix}.{name}": p.detach().cpu().contiguous()
        for prefix, m in (("unet", model.unet), ("controlnet", model.controlnet))
        for name, p in m.named_parameters()
        if any(k in f".{name}" for k in _TUNABLE)
    }


def save_tuned(model: VideoEditModel, path: str | os.PathLike) -> Path:
    """Write :func:`tuned_state` to a safetensors file, atomically."""
    from safetensors.torch import save_file

    from core.files import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(
            tuned_state(model),
            str(tmp),
            metadata={k: str(v) for k, v in model.inflated.items()} | {"format": "pt"},
        )
    return path


def load_tuned(model: VideoEditModel, path: str | os.PathLike) -> None:
    """Load tensors written by :func:`save_tuned` into an inflated model (same architecture and
    video attention); ValueError naming missing or unexpected tensors."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tuned weights not found: {path}")
    state = load_file(str(path))
    own = tuned_state(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"tuned weights {path} do not fit this model (inflated with {model.inflated}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    params = {
        f"{prefix}.{n}": p
        for prefix, m in (("unet", model.unet), ("controlnet", model.controlnet))
        for n, p in m.named_parameters()
    }
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                want = tuple(params[name].shape)
                raise ValueError(
                    f"tuned weight {name} in {path} has shape {tuple(value.shape)}, expected {want}"
                )
            params[name].copy_(value)
