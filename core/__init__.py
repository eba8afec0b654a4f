"""anneal.core: schedules, the Denoiser, samplers, guidance, generative families, backbones, training."""

from . import guidance
from .checkpoint import ModelMixin, from_pretrained, load_weights, save_pretrained
from .denoiser import Denoiser
from .sampling import sample
from .schedules import LinearSchedule, NoiseSchedule, VESchedule, VPSchedule
from .training import EMA, Trainer, TrainerConfig, latest_checkpoint, resolve_device

__all__ = [
    "EMA",
    "Denoiser",
    "LinearSchedule",
    "ModelMixin",
    "NoiseSchedule",
    "Trainer",
    "TrainerConfig",
    "VESchedule",
    "VPSchedule",
    "from_pretrained",
    "guidance",
    "latest_checkpoint",
    "load_weights",
    "resolve_device",
    "sample",
    "save_pretrained",
]
