"""The three trained pieces of a translation task, each trained once and cached in its run folder.

- the score model: a DDPM U-Net (noise prediction, DDPM's linear betas 1e-4..0.02 over
  ``timesteps`` steps) on the target domain only;
- the domain classifier: a :class:`core.nets.TimeClassifier` on noisy source (label 0) vs
  target (label 1) images at every diffusion time (or, for the ablation, on clean images with
  ``time_conditional=False``);
- the evaluator: a :class:`vision.classifier.FeatureClassifier` whose penultimate features define
  the reported FID (not Inception FID) and whose predictions give the identity accuracy.

Each trainer resumes from its last checkpoint; a finished model is a ``save_pretrained`` folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from core import Denoiser, ModelMixin, Trainer, TrainerConfig
from core.checkpoint import atomic_directory
from core.nets import TimeClassifier, UNet, UNetConfig
from core.objectives import denoising_loss, noisy_classifier_loss
from core.schedules import VPSchedule, linear_betas

from ..classifier import ClassifierConfig, FeatureClassifier, classifier_accuracy, train_feature_classifier

__all__ = [
    "ModelSettings",
    "build_domain_classifier",
    "build_score_net",
    "ScoreUNet",
    "load_diffusers_model",
    "load_score_model",
    "score_denoiser",
    "train_domain_classifier",
    "train_evaluator",
    "train_score_model",
]


@dataclass
class ModelSettings:
    """Sizes and training lengths of the score model and the domain classifier."""

    timesteps: int = 1000
    unet_channels: int = 32
    unet_mults: tuple[int, ...] = (1, 2, 2)
    unet_blocks: int = 1
    unet_attention: tuple[int, ...] = ()
    score_steps: int = 3000
    score_batch: int = 128
    score_lr: float = 1e-3
    classifier_channels: int = 32
    classifier_mults: tuple[int, ...] = (1, 2, 2)
    classifier_steps: int = 1500
    classifier_batch: int = 128
    classifier_lr: float = 1e-3
    evaluator_epochs: int = 6
    evaluator_train_size: int | None = None
    groups: int = 8


class ScoreUNet(ModelMixin):
    """:class:`core.nets.UNet` built from plain keyword arguments, so it saves with ``save_pretrained``.

    ``ScoreUNet(**unet_config_fields)(x, t_model) -> (B, C, H, W)``; ``config`` holds the fields.
    """

    def __init__(self, **fields) -> None:
        super().__init__()
        self.unet = UNet(UNetConfig(**fields))
        self.image_size, self.channels = self.unet.config.image_size, self.unet.config.in_channels

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        return self.unet(x, t, y)


def ddpm_schedule(timesteps: int) -> VPSchedule:
    """DDPM's discrete schedule: linear betas 1e-4 -> 0.02 over ``timesteps`` steps."""
    return VPSchedule.discrete(linear_betas(timesteps))


def score_denoiser(net: torch.nn.Module, timesteps: int) -> Denoiser:
    """The noise-predicting Denoiser of a score network under DDPM's schedule."""
    return Denoiser(net, ddpm_schedule(timesteps), prediction="eps")


def _trainer_config(
    out: Path, steps: int, lr: float, seed: int, device: str, progress: bool
) -> TrainerConfig:
    return TrainerConfig(
        steps=steps, lr=lr, warmup_steps=min(100, steps // 10), schedule="cosine", ema_decay=0.999,
        log_every=max(1, min(100, steps)), ckpt_every=max(1, steps // 4), keep_last=1,
        out_dir=out, seed=seed, device=device, progress=progress, tensorboard=False,
    )  # fmt: skip


def _fit(model, loss_fn, data: tuple[Tensor, ...], batch: int, cfg: TrainerConfig) -> None:
    loader = DataLoader(
        TensorDataset(*data), batch_size=min(batch, len(data[0])), shuffle=True, drop_last=True
    )
    trainer = Trainer(model, loss_fn, loader, cfg)
    trainer.fit(resume=True)
    trainer.ema.copy_to(model)


def build_score_net(s: ModelSettings, size: int, channels: int) -> ScoreUNet:
    """A fresh score U-Net for ``size`` x ``size`` images with ``channels`` channels."""
    return ScoreUNet(
        image_size=size, in_channels=channels, base_channels=s.unet_channels,
        channel_mults=list(s.unet_mults), num_res_blocks=s.unet_blocks,
        attention_resolutions=list(s.unet_attention), dropout=0.0, groups=s.groups, time_scale=1.0,
    )  # fmt: skip


def build_domain_classifier(
    s: ModelSettings, size: int, channels: int, time_conditional: bool = True
) -> TimeClassifier:
    """A fresh two-class (source 0, target 1) classifier for ``size`` px images."""
    return TimeClassifier(
        image_size=size, in_channels=channels, num_classes=2, base_channels=s.classifier_channels,
        channel_mults=list(s.classifier_mults), num_res_blocks=1, groups=s.groups,
        time_conditional=time_conditional,
    )  # fmt: skip


def train_score_model(
    target: Tensor, s: ModelSettings, out: Path, *, seed: int = 0, device: str = "auto", progress: bool = True
) -> Denoiser:
    """Train (or load from ``out/model``) the target-domain DDPM; target (N, C, H, W) in [-1, 1]."""
    final = out / "model"
    if not (final / "config.json").is_file():
        size = target.shape[-1]
        torch.manual_seed(seed)  # initial weights from the seed, whatever ran before
        net = build_score_net(s, size, target.shape[1])
        den = score_denoiser(net, s.timesteps)

        def loss(model, batch):
            return denoising_loss(den, batch[0])

        _fit(
            net,
            loss,
            (target,),
            s.score_batch,
            _trainer_config(out, s.score_steps, s.score_lr, seed, device, progress),
        )
        net.save_pretrained(final)
    return load_score_model(final, s.timesteps)


def load_score_model(
    folder: str | Path, timesteps: int | None = None, device: str | torch.device = "cpu"
) -> Denoiser:
    """A score model folder: a :class:`ScoreUNet` (``save_pretrained``), a diffusers ``UNet2DModel``
    folder beside a ``scheduler/`` folder, or a diffusers pipeline folder."""
    folder = Path(folder)
    if (folder / "unet" / "config.json").is_file():
        return load_diffusers_model(folder).to(device)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no score model in {folder}: {cfg_path} is missing")
    name = json.loads(cfg_path.read_text()).get("_class_name")
    if name == "UNet2DModel":
        return load_diffusers_model(folder).to(device)
    if name != "ScoreUNet":
        raise ValueError(f"{folder} holds a {name!r} model; expected ScoreUNet or a diffusers UNet2DModel")
    return score_denoiser(ScoreUNet.from_pretrained(folder, map_location=device), timesteps or 1000).eval()


def load_diffusers_model(folder: str | Path) -> Denoiser:
    """A diffusers score model as a Denoiser (``core.diffusers_adapter``): a pipeline folder
    (``unet/`` + ``scheduler/``) or a model folder whose parent holds ``scheduler/``."""
    from core.diffusers_adapter import load_diffusers

    folder = Path(folder)
    if (folder / "unet" / "config.json").is_file():
        return load_diffusers(folder)
    return load_diffusers(folder.parent, model_subfolder=folder.name)


def train_domain_classifier(
    source: Tensor,
    target: Tensor,
    schedule: VPSchedule,
    s: ModelSettings,
    out: Path,
    *,
    time_conditional: bool = True,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> TimeClassifier:
    """Train (or load from ``out/model``) the source (0) vs target (1) classifier.

    Time-dependent: on x_t at uniformly drawn times of ``schedule``; otherwise on clean images.
    """
    final = out / "model"
    if not (final / "config.json").is_file():
        torch.manual_seed(seed)  # initial weights from the seed, whatever ran before
        net = build_domain_classifier(s, source.shape[-1], source.shape[1], time_conditional)
        n = min(len(source), len(target))
        g = torch.Generator().manual_seed(seed)
        src = source[torch.randperm(len(source), generator=g)[:n]]
        tgt = target[torch.randperm(len(target), generator=g)[:n]]
        x = torch.cat([src, tgt])
        y = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])

        def loss(model, batch):
            return noisy_classifier_loss(model, schedule, batch[0], batch[1], clean=not time_conditional)

        cfg = _trainer_config(out, s.classifier_steps, s.classifier_lr, seed, device, progress)
        _fit(net, loss, (x, y), s.classifier_batch, cfg)
        net.save_pretrained(final)
    return TimeClassifier.from_pretrained(final)


def train_evaluator(
    images: Tensor,
    labels: Tensor,
    test: tuple[Tensor, Tensor],
    s: ModelSettings,
    out: Path,
    *,
    seed: int = 0,
    progress: bool = True,
) -> tuple[FeatureClassifier, dict]:
    """Train (or load from ``out``) the evaluator and report its held-out accuracy (``info.json``)."""
    if not (out / "info.json").is_file():
        if s.evaluator_train_size is not None and len(images) > s.evaluator_train_size:
            keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[
                : s.evaluator_train_size
            ]
            images, labels = images[keep], labels[keep]
        config = ClassifierConfig(in_channels=images.shape[1], num_classes=int(labels.max()) + 1)
        model = train_feature_classifier(
            images, labels, config=config, epochs=s.evaluator_epochs, seed=seed, progress=progress
        )
        info = {"test_accuracy": classifier_accuracy(model, *test), "train_size": len(images)}
        info |= {"num_classes": config.num_classes, "epochs": s.evaluator_epochs}
        with atomic_directory(out) as tmp:
            model.save_pretrained(tmp)
            (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return FeatureClassifier.from_pretrained(out), json.loads((out / "info.json").read_text())
