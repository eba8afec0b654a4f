"""anneal.core: schedules, the Denoiser, samplers, guidance, generative families, backbones, training."""

from .denoiser import Denoiser
from .schedules import LinearSchedule, NoiseSchedule, VESchedule, VPSchedule

__all__ = ["Denoiser", "LinearSchedule", "NoiseSchedule", "VESchedule", "VPSchedule"]
