"""Test utilities: the exact Gaussian-mixture oracle, sample-quality metrics, Analytic-DPM tables."""

from .analytic_bench import analytic_dpm_nll, analytic_dpm_sample_error, default_mixture
from .metrics import sliced_wasserstein
from .oracle import ExactNet, GaussianMixture

__all__ = [
    "ExactNet",
    "GaussianMixture",
    "analytic_dpm_nll",
    "analytic_dpm_sample_error",
    "default_mixture",
    "sliced_wasserstein",
]
