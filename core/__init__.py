"""anneal.core: schedules, the Denoiser, samplers, guidance, generative families, backbones, training."""

from . import guidance
from .checkpoint import ModelMixin, from_pretrained, load_weights, save_pretrained
from .denoiser import Denoiser
from .likelihood import VLB, nll_bound, nll_bounds
from .sampling import ddim_invert, grid_names, method_names, sample
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
    "VLB",
    "ddim_invert",
    "from_pretrained",
    "grid_names",
    "guidance",
    "latest_checkpoint",
    "load_weights",
    "method_names",
    "nll_bound",
    "nll_bounds",
    "resolve_device",
    "sample",
    "save_pretrained",
]
