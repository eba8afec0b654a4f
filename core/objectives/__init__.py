"""Training objectives of the generative families."""

from .consistency import ConsistencyDistillation, ConsistencyModel, consistency_sample, karras_times
from .diffusion import denoising_loss, noisy_sample
from .flow import flow_matching_loss, ot_pair, reflow_pairs, straightness
from .noisy_classifier import noisy_classifier_loss
from .score_distillation import (
    LoRAConv2d,
    LoRALinear,
    add_lora,
    lora_copy,
    particle_loss,
    sds_gradient,
    sds_loss,
    vsd_gradient,
    vsd_loss,
)

__all__ = [
    "ConsistencyDistillation",
    "ConsistencyModel",
    "LoRAConv2d",
    "LoRALinear",
    "add_lora",
    "consistency_sample",
    "denoising_loss",
    "flow_matching_loss",
    "karras_times",
    "lora_copy",
    "noisy_classifier_loss",
    "noisy_sample",
    "ot_pair",
    "particle_loss",
    "reflow_pairs",
    "sds_gradient",
    "sds_loss",
    "straightness",
    "vsd_gradient",
    "vsd_loss",
]
