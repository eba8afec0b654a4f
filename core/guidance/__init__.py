"""Guidance: energies, classifiers, classifier-free guidance and projections for every sampler."""

from .base import Guide, GuidanceError, model_fn

__all__ = ["Guide", "GuidanceError", "model_fn"]
