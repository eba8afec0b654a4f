"""Classic generative families beside diffusion, each a model plus its objective, trained by
``core.Trainer``: VAE/IWAE, coupling flows (NICE, RealNVP), VFlow, residual flows and ImpFlow,
and autoregressive models (FVSBN, NADE, RNADE)."""

from .autoregressive import FVSBN, NADE, RNADE, nll_loss
from .densities import bits_per_dim, check_binary, dequantize
from .flows import MultiScaleFlow, RealNVP, count_parameters, flow_nll_loss
from .residual import (
    ConvergenceError,
    ImpFlow,
    ResidualFlow,
    implicit_solve,
    residual_logdet,
    solve_fixed_point,
)
from .vae import VAE, iwae_loss, log_likelihood, vae_loss
from .vflow import VFlow

__all__ = [
    "ConvergenceError",
    "FVSBN",
    "ImpFlow",
    "NADE",
    "RNADE",
    "ResidualFlow",
    "VAE",
    "VFlow",
    "MultiScaleFlow",
    "RealNVP",
    "bits_per_dim",
    "check_binary",
    "count_parameters",
    "dequantize",
    "flow_nll_loss",
    "implicit_solve",
    "iwae_loss",
    "log_likelihood",
    "nll_loss",
    "residual_logdet",
    "solve_fixed_point",
    "vae_loss",
]
