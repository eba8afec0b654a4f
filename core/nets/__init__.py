"""Backbones: time-conditioned MLP, DDPM U-Net, U-ViT, DiT, Janner's temporal U-Net, Chi's
FiLM-conditioned 1-D U-Net, and the time-dependent classifier (the U-Net's encoder half with a
pooled head).

Every backbone is called as ``net(x, t, y=None)`` (the temporal U-Net as ``net(x, t)``) and
returns a tensor shaped like ``x``.
"""

from .cond_unet1d import ConditionalUnet1D
from .conditioning import ClassEmbedding, TimeEmbedding
from .dit import DiT, DiTConfig
from .embeddings import SinusoidalEmbedding
from .mlp import MLPConfig, MLPNet
from .temporal_unet import TemporalUnet
from .time_classifier import TimeClassifier
from .unet import UNet, UNetConfig
from .uvit import UViT, UViTConfig

__all__ = [
    "ClassEmbedding",
    "ConditionalUnet1D",
    "DiT",
    "DiTConfig",
    "MLPConfig",
    "MLPNet",
    "SinusoidalEmbedding",
    "TemporalUnet",
    "TimeClassifier",
    "TimeEmbedding",
    "UNet",
    "UNetConfig",
    "UViT",
    "UViTConfig",
]
