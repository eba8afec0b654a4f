"""The exact oracle: Gaussian mixtures under any schedule, with closed-form noised densities,
scores and denoisers, so a sampler's error can be measured against the exact answer.

``GaussianMixture.random(dim, k, seed)`` builds a mixture; ``mixture.as_denoiser(prediction)``
wraps its exact prediction (:class:`ExactNet`) as a :class:`core.Denoiser`.
"""

from .mixture import ExactNet, GaussianMixture

__all__ = ["ExactNet", "GaussianMixture"]
