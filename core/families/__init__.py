"""Classic generative families beside diffusion, each a model plus its objective, trained by
``core.Trainer``: VAE/IWAE, coupling flows (NICE, RealNVP), VFlow, residual flows and ImpFlow,
autoregressive models (FVSBN, NADE, RNADE), GAN/WGAN/WGAN-GP/CLC-GAN, Dirac-GAN dynamics and
Triple-GAN."""

from .autoregressive import FVSBN, NADE, RNADE, nll_loss
from .densities import bits_per_dim, check_binary, dequantize
from .dirac import (
    dirac_gan_eigenvalues,
    dirac_gan_field,
    dirac_gan_iterates,
    dirac_gan_jacobian,
    dirac_phase_plot,
)
from .flows import MultiScaleFlow, RealNVP, count_parameters, flow_nll_loss
from .gan import (
    GAN,
    GAN_FAMILIES,
    ConvCritic,
    ConvGenerator,
    GANConfig,
    GANGame,
    MLPCritic,
    MLPGenerator,
    clc_penalty,
    critic_loss,
    generator_loss,
    gradient_penalty,
)
from .residual import (
    ConvergenceError,
    ImpFlow,
    ResidualFlow,
    implicit_solve,
    residual_logdet,
    solve_fixed_point,
)
from .triple_gan import ConvClassifier, MLPClassifier, TripleGAN, TripleGANGame, all_class_scores
from .vae import VAE, iwae_loss, log_likelihood, vae_loss
from .vflow import VFlow

__all__ = [
    "FVSBN",
    "GAN",
    "GAN_FAMILIES",
    "NADE",
    "RNADE",
    "VAE",
    "ConvClassifier",
    "ConvCritic",
    "ConvGenerator",
    "ConvergenceError",
    "GANConfig",
    "GANGame",
    "ImpFlow",
    "MLPClassifier",
    "MLPCritic",
    "MLPGenerator",
    "MultiScaleFlow",
    "RealNVP",
    "ResidualFlow",
    "TripleGAN",
    "TripleGANGame",
    "VFlow",
    "all_class_scores",
    "bits_per_dim",
    "check_binary",
    "clc_penalty",
    "count_parameters",
    "critic_loss",
    "dequantize",
    "dirac_gan_eigenvalues",
    "dirac_gan_field",
    "dirac_gan_iterates",
    "dirac_gan_jacobian",
    "dirac_phase_plot",
    "flow_nll_loss",
    "generator_loss",
    "gradient_penalty",
    "implicit_solve",
    "iwae_loss",
    "log_likelihood",
    "nll_loss",
    "residual_logdet",
    "solve_fixed_point",
    "vae_loss",
]
