"""Image generation on real data (Fashion-MNIST, OpenCV digits): presets, one training entry
point for every family — the diffusion families (ddpm, flow, reflow, consistency) on U-Net /
U-ViT / DiT, sampled with any ``core.sample`` solver or consistency sampling, and the classic
families of :mod:`core.families` (vae, iwae, nade, realnvp, vflow, impflow, gan, wgan_gp,
clc_gan, triple_gan; one registry, :mod:`vision.generation.classic`) — and classifier-feature
metrics plus each classic family's likelihood (NLL in nats or bits/dim).

Command line (``runs/vision/<name>/``: config.json, train/ checkpoints, model/, metrics.json, PNGs)::

    python -m vision train --preset quick --model unet --family ddpm --dataset fashion_mnist
    python -m vision sample --run runs/vision/ddpm_unet_fashion_mnist --method dpm_solver++ --steps 20
    python -m vision evaluate --run runs/vision/ddpm_unet_fashion_mnist --method ddim --steps 10
    python -m vision train --family consistency --teacher runs/vision/ddpm_unet_fashion_mnist
    python -m vision train --preset quick --family iwae --dataset fashion_mnist
    python -m vision evaluate --run runs/vision/iwae_mlp_fashion_mnist

``fid_fmnist`` / ``fid_digits`` are Frechet distances in the features of a classifier trained
here (cached under ``$ANNEAL_DATA/fid_classifiers``); they are not Inception FIDs.
"""

from .classic import CLASSIC_FAMILIES
from .config import DIFFUSION_FAMILIES, FAMILIES, MODELS, PRESETS, ImageConfig, image_config
from .evaluate import evaluate_run
from .generate import generate
from .models import build_denoiser, build_net, load_run
from .quality import feature_classifier, sample_metrics
from .train import train

__all__ = [
    "CLASSIC_FAMILIES",
    "DIFFUSION_FAMILIES",
    "FAMILIES",
    "MODELS",
    "PRESETS",
    "ImageConfig",
    "build_denoiser",
    "build_net",
    "evaluate_run",
    "feature_classifier",
    "generate",
    "image_config",
    "load_run",
    "sample_metrics",
    "train",
]
