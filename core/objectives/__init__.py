"""Training objectives of the generative families."""

from .diffusion import denoising_loss, noisy_sample

__all__ = ["denoising_loss", "noisy_sample"]
