"""Classic generative families beside diffusion: each a model plus its objective, trained by the
shared :class:`core.Trainer`."""

from .dirac import (
    dirac_gan_eigenvalues,
    dirac_gan_field,
    dirac_gan_iterates,
    dirac_gan_jacobian,
    dirac_phase_plot,
)
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
from .triple_gan import ConvClassifier, MLPClassifier, TripleGAN, TripleGANGame, all_class_scores

__all__ = [
    "GAN",
    "GAN_FAMILIES",
    "ConvClassifier",
    "ConvCritic",
    "ConvGenerator",
    "GANConfig",
    "GANGame",
    "TripleGAN",
    "TripleGANGame",
    "all_class_scores",
    "MLPClassifier",
    "MLPCritic",
    "MLPGenerator",
    "clc_penalty",
    "critic_loss",
    "dirac_gan_eigenvalues",
    "dirac_gan_field",
    "dirac_gan_iterates",
    "dirac_gan_jacobian",
    "dirac_phase_plot",
    "generator_loss",
    "gradient_penalty",
]
