"""Guidance: energies, classifiers, classifier-free guidance and projections for every sampler.

Any sampler of :func:`core.sample` takes ``guide=``; a domain plugs in its own energy with
:class:`Energy` (or subclasses :class:`Guide`) without touching ``core``.
"""

from .base import GuidanceError, Guide, model_fn
from .guides import ClassifierFree, ClassifierGuidance, Combined, Energy, Inpaint, Project, combine

__all__ = [
    "ClassifierFree",
    "ClassifierGuidance",
    "Combined",
    "Energy",
    "Guide",
    "GuidanceError",
    "Inpaint",
    "Project",
    "combine",
    "model_fn",
]
