"""Backbones, schedules and denoisers of the image families, and loading a trained run."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checkpoint import ModelMixin
from core.denoiser import Denoiser
from core.nets import DiT, DiTConfig, UNet, UNetConfig, UViT, UViTConfig
from core.nets.conditioning import check_image
from core.runs import CONFIG_FILE, MODEL_DIR
from core.schedules import LinearSchedule, NoiseSchedule, VPSchedule, linear_betas

from .classic import CLASSIC_FAMILIES
from .config import ImageConfig, load_image_config

__all__ = ["PixelShuffled", "build_denoiser", "build_net", "load_run", "make_schedule", "run_config"]


class PixelShuffled(ModelMixin):
    """Runs ``net`` on pixel-unshuffled images: (B, C, H, W) -> (B, C f^2, H/f, W/f) -> net ->
    back to (B, C, H, W). The U-Net then costs about f^2 times less on the same images."""

    def __init__(self, net: UNet, factor: int, channels: int, image_size: int) -> None:
        super().__init__()
        self.net, self.factor, self.channels, self.image_size = net, factor, channels, image_size

    @property
    def null_class(self) -> int | None:
        return self.net.null_class

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        check_image(x, self.channels, self.image_size, type(self.net).__name__)
        h = self.net(F.pixel_unshuffle(x, self.factor), t, y=y)
        return F.pixel_shuffle(h, self.factor)


def make_schedule(config: ImageConfig) -> NoiseSchedule:
    """``ddpm``/``consistency``: DDPM's discrete linear-beta schedule with ``timesteps`` steps;
    ``flow``/``reflow``: the linear (rectified-flow) path."""
    if config.family in ("ddpm", "consistency"):
        return VPSchedule.discrete(linear_betas(config.timesteps))
    return LinearSchedule()


def build_net(config: ImageConfig) -> nn.Module:
    """The backbone ``net(x, t_model, y=None)`` for images (B, C, image_size, image_size)."""
    c = config
    discrete = c.family in ("ddpm", "consistency")
    common = dict(
        num_classes=c.num_classes, class_dropout=c.class_dropout, time_scale=1.0 if discrete else 1000.0
    )
    if c.model == "unet":
        size = c.image_size // c.patch
        lowest = size // 2 ** (len(c.channel_mults) - 1)
        net = UNet(
            UNetConfig(
                image_size=size, in_channels=c.channels * c.patch**2, base_channels=c.width,
                channel_mults=c.channel_mults, num_res_blocks=c.depth, attention_resolutions=(lowest,),
                num_heads=1, dropout=0.0, groups=8, **common,
            )
        )  # fmt: skip
        return PixelShuffled(net, c.patch, c.channels, c.image_size) if c.patch > 1 else net
    kw = dict(image_size=c.image_size, in_channels=c.channels, patch_size=c.patch, dim=c.width, depth=c.depth)
    if c.model == "uvit":
        return UViT(UViTConfig(heads=c.heads, mlp_time_embed=True, **kw, **common))
    return DiT(DiTConfig(heads=c.heads, **kw, **common))


def build_denoiser(config: ImageConfig) -> Denoiser:
    """A fresh Denoiser: v prediction under the discrete VP schedule, velocity under the linear path."""
    schedule = make_schedule(config)
    prediction = "velocity" if isinstance(schedule, LinearSchedule) else "v"
    return Denoiser(build_net(config), schedule, prediction=prediction)


def run_config(run: str | Path) -> ImageConfig:
    """The ImageConfig of a trained run folder (FileNotFoundError naming it when it holds no model)."""
    run = Path(run)
    folder = run / MODEL_DIR
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no trained model in {run}: {folder / 'config.json'} is missing "
            "(train one with python -m vision train)"
        )
    return load_image_config(run / CONFIG_FILE)


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ImageConfig]:
    """The trained model (eval mode, on ``device``) and config of a run folder written by
    :func:`vision.generation.train.train`: ``config.json`` (the ImageConfig) and ``model/`` (a
    pretrained folder, readable alone by ``<Class>.from_pretrained``). The model is a
    :class:`~core.denoiser.Denoiser` around the backbone for the diffusion families, the
    family's own model (a VAE, a flow, NADE, a GAN, ...) for the classic families."""
    run = Path(run)
    folder = run / MODEL_DIR
    config = run_config(run)
    if config.family in CLASSIC_FAMILIES:
        model = CLASSIC_FAMILIES[config.family].build(config)
        return type(model).from_pretrained(folder).to(device).eval(), config
    den = build_denoiser(config)
    net = type(den.net).from_pretrained(folder)
    return Denoiser(net, den.schedule, prediction=den.prediction).to(device).eval(), config
