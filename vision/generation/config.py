"""Configs of the image pipeline: one dataclass, named presets, per-backbone sizes.

``image_config("quick", model="dit", family="flow", dataset="fashion_mnist")`` resolves a preset
(``smoke``: seconds, for tests and the demo; ``quick``: one CPU core, tens of minutes; ``paper``:
a GPU) for one backbone, family and dataset; keyword overrides replace any field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from core.config import apply_overrides, preset
from core.files import read_json
from core.objectives.consistency import DISTANCES, WEIGHTINGS

from .classic import CLASSIC_FAMILIES
from .datasets import DATASETS

__all__ = [
    "DIFFUSION_FAMILIES",
    "FAMILIES",
    "MODELS",
    "ImageConfig",
    "PRESETS",
    "family_models",
    "image_config",
    "load_image_config",
]

#: The backbones of the diffusion families.
MODELS = ("unet", "uvit", "dit")
#: ddpm: discrete 1000-step VP schedule, v prediction; flow: rectified flow (linear path,
#: velocity); reflow: a flow retrained on a teacher flow's noise-sample pairs; consistency:
#: consistency distillation of a ddpm teacher.
DIFFUSION_FAMILIES = ("ddpm", "flow", "reflow", "consistency")
#: Every family: the diffusion families, then the classic ones (:mod:`vision.generation.classic`).
FAMILIES = DIFFUSION_FAMILIES + tuple(CLASSIC_FAMILIES)


def family_models(family: str) -> tuple[str, ...]:
    """The architectures ``family`` can be trained with (the first is its default)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return MODELS if family in DIFFUSION_FAMILIES else CLASSIC_FAMILIES[family].models


@dataclass
class ImageConfig:
    """Everything a run needs; ``teacher`` names the teacher's run folder for reflow/consistency.

    Backbone: ``width`` = U-Net base channels or transformer width; ``depth`` = U-Net residual
    blocks per level or transformer depth; ``patch`` = transformer patch size, or for the U-Net
    a pixel-unshuffle factor (the U-Net runs on (C * patch^2, H / patch, W / patch)).
    Consistency distillation (``cd_*``): N discretisation times, the target's EMA decay, the
    distance and the per-interval weighting (see :class:`core.objectives.ConsistencyDistillation`;
    the defaults, pseudo-Huber with iCT weighting, are the choice under which 2-step sampling
    improves on 1-step in the image benchmark; see the README).

    Classic families (:mod:`vision.generation.classic`): ``model`` names their architecture
    (``mlp`` or ``conv``), ``width`` their hidden units or channels, ``depth`` the couplings per
    group (RealNVP, VFlow) or implicit blocks (ImpFlow); ``latent_dim`` the VAE's or generator's
    latent size; ``iwae_k`` the IWAE's training K; ``nll_k`` the importance samples of the
    likelihood estimate (VAE/IWAE; VFlow's bound) on ``nll_images`` test images; ``labels`` the
    labelled training images of Triple-GAN (balanced over classes). ``ema_decay`` averages the
    diffusion networks and the games' generators; the likelihood families save their trained
    weights (their NLL is of those).
    """

    dataset: str = "fashion_mnist"
    model: str = "unet"
    family: str = "ddpm"
    image_size: int = 28
    width: int = 32
    depth: int = 1
    patch: int = 2
    heads: int = 4
    channel_mults: tuple[int, ...] = (1, 2)
    class_dropout: float = 0.1
    timesteps: int = 1000
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    ckpt_every: int = 500
    eval_samples: int = 1000
    eval_batch: int = 250
    grid_samples: int = 100
    teacher: str | None = None
    reflow_pairs: int = 4000
    reflow_solver_steps: int = 20
    cd_num_steps: int = 18
    cd_ema: float = 0.95
    cd_distance: str = "pseudo_huber"
    cd_weighting: str = "ict"
    latent_dim: int = 32
    iwae_k: int = 5
    nll_k: int = 1000
    nll_images: int = 1000
    labels: int = 100

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {sorted(DATASETS)}")
        models = family_models(self.family)
        if self.model not in models:
            raise ValueError(
                f"unknown model {self.model!r} for family {self.family!r}; expected one of {models}"
            )
        positive = ("image_size", "width", "depth", "patch", "heads", "steps", "batch_size", "eval_samples")
        positive += ("latent_dim", "iwae_k", "nll_k", "nll_images", "labels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ImageConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch {self.patch}")
        for name, allowed in (("cd_distance", DISTANCES), ("cd_weighting", WEIGHTINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {allowed}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    @property
    def channels(self) -> int:
        return DATASETS[self.dataset].channels


PRESETS = {
    "smoke": ImageConfig(
        width=16, channel_mults=(1, 2), steps=20, batch_size=32, warmup_steps=5,
        ckpt_every=10, eval_samples=100, eval_batch=100, grid_samples=20, timesteps=100,
        reflow_pairs=64, reflow_solver_steps=4, cd_num_steps=6,
    ),
    "quick": ImageConfig(),
    "paper": ImageConfig(
        width=128, depth=2, patch=1, channel_mults=(1, 2, 2), steps=100_000, batch_size=128,
        lr=2e-4, warmup_steps=1000, ema_decay=0.9999, ckpt_every=5000, eval_samples=10_000,
        eval_batch=500, reflow_pairs=100_000, cd_num_steps=18,
    ),
}  # fmt: skip

#: Per-backbone fields of each preset (the U-Net's are the preset's own).
MODEL_SIZES = {
    "smoke": {m: dict(width=32, depth=2, patch=4, heads=2) for m in ("uvit", "dit")},
    "quick": {m: dict(width=96, depth=4, patch=4, heads=4) for m in ("uvit", "dit")},
    "paper": {
        "uvit": dict(width=512, depth=12, patch=2, heads=8),
        "dit": dict(width=384, depth=12, patch=2, heads=6),
    },
}


def _each(families: tuple[str, ...], **fields: Any) -> dict[str, dict[str, Any]]:
    return {f: dict(fields) for f in families}


_GANS = ("gan", "wgan_gp", "clc_gan")
#: IWAE's MNIST setup: 200-200 tanh MLPs, 50 latents, scored with K = 5000 on the whole test set.
_PAPER_VAE = dict(
    width=200, latent_dim=50, batch_size=100, lr=1e-3, steps=300_000, nll_k=5000, nll_images=10**4
)

#: Per-family fields of each preset. Consistency distillation: each step costs about four U-Net
#: passes (two Heun teacher evaluations, the target, the student with its backward pass); the
#: ``quick`` learning rate is the better of the two compared in the README's image notes.
#: Classic families: ``paper`` follows the papers' sizes (IWAE's 200-200 tanh MLPs with 50
#: latents and K = 50, scored with K = 5000; NADE's 500 hidden units; RealNVP's multi-scale
#: couplings; DCGAN-width GANs and Triple-GAN with 100 labels); ``steps`` count optimizer
#: steps of all players of a game. ``quick`` GAN on the digits (500 samples): width 32 and 6000
#: steps gave fid_digits 15.9 (precision 0.82, recall 0.54) where width 16 and 3000 steps gave
#: 31.2 (0.89, 0.42).
FAMILY_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "consistency": dict(steps=10),
        **_each(("vae", "iwae"), width=16, latent_dim=4, iwae_k=3, nll_k=8, nll_images=16),
        "nade": dict(width=8, nll_images=16),
        **_each(("realnvp", "vflow", "impflow"), width=4, depth=1, nll_k=2, nll_images=8),
        **_each(_GANS, width=4, latent_dim=8, lr=2e-4),
        "triple_gan": dict(width=4, latent_dim=8, labels=20, lr=3e-4),
    },
    "quick": {
        "consistency": dict(steps=4500, lr=4e-4, ema_decay=0.999),
        "vae": dict(width=200, latent_dim=32, batch_size=100, nll_images=500),
        "iwae": dict(width=200, latent_dim=32, batch_size=100, nll_images=500, iwae_k=5),
        "nade": dict(width=200, batch_size=100, steps=1000, nll_images=500),
        **_each(("realnvp", "vflow"), width=24, depth=3, batch_size=32, steps=1000, nll_k=16, nll_images=500),
        "impflow": dict(width=16, depth=2, batch_size=32, steps=300, nll_images=200),
        **_each(_GANS, width=32, latent_dim=32, steps=6000, lr=2e-4, warmup_steps=0, ema_decay=0.999),
        "triple_gan": dict(width=32, latent_dim=32, steps=6000, lr=3e-4, warmup_steps=0, ema_decay=0.999),
    },
    "paper": {
        "consistency": dict(steps=50_000),
        "vae": dict(_PAPER_VAE),
        "iwae": dict(_PAPER_VAE, iwae_k=50),
        "nade": dict(width=500, batch_size=100, lr=1e-3, steps=200_000, nll_images=10_000),
        **_each(("realnvp", "vflow"), width=64, depth=3, batch_size=64, lr=1e-3, nll_k=128, nll_images=10**4),
        "impflow": dict(width=64, depth=4, batch_size=64, lr=1e-3, nll_images=10_000),
        "gan": dict(width=64, latent_dim=128, batch_size=64, steps=60_000, warmup_steps=0, ema_decay=0.999),
        **_each(
            ("wgan_gp", "clc_gan"),
            width=64,
            latent_dim=128,
            batch_size=64,
            steps=60_000,
            lr=1e-4,
            warmup_steps=0,
            ema_decay=0.999,
        ),  # fmt: skip
        "triple_gan": dict(
            width=64, latent_dim=128, batch_size=64, steps=60_000, lr=3e-4, warmup_steps=0, ema_decay=0.999
        ),
    },
}


def image_config(name: str = "quick", **overrides: Any) -> ImageConfig:
    """The preset ``name`` resolved for ``overrides["model"]``, ``["family"]`` and ``["dataset"]``
    (a classic family's default model is its first architecture); further non-None overrides
    replace fields (unknown fields are an error). ``digits`` runs at 20x20."""
    base = preset(PRESETS, name)
    family = overrides.get("family") or base.family
    default_model = base.model if family in DIFFUSION_FAMILIES else family_models(family)[0]
    model = overrides.get("model") or default_model
    dataset = overrides.get("dataset") or base.dataset
    fields: dict[str, Any] = dict(MODEL_SIZES[name].get(model, {}))
    fields.update(FAMILY_FIELDS[name].get(family, {}), family=family, model=model)
    if dataset == "digits":
        fields["image_size"] = 20
    return apply_overrides(dataclasses.replace(base, **fields), overrides)


def load_image_config(path: str | os.PathLike) -> ImageConfig:
    """The ImageConfig saved as JSON in ``path`` (a run's ``config.json``); errors name the file."""
    try:
        return ImageConfig(**read_json(path))
    except TypeError as e:
        raise ValueError(f"{path} is not an image run config: {e}") from e
