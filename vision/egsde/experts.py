"""EGSDE's two experts as energies on the noisy state, and ILVR's low-pass replacement.

Both experts compare the state y_t with the source x perturbed to the same time,
x_t = alpha(t) x + sigma(t) z (one fresh z per evaluation: a one-sample estimate of the
expectation over q(x_t | x) in the energy's definition):

- realism: E_s(y_t, t) = mean over positions (h, w) of cos(G_hw(y_t, t), G_hw(x_t, t)), G the
  feature map of a time-dependent source/target classifier at one layer. A low energy means
  features unlike the source's, so guidance removes source-domain traits.
- faithfulness: E_i(y_t, t) = || L(y_t) - L(x_t) ||^2 (sum over pixels), L a low-pass filter
  (average-pool by ``factor``, then nearest upsampling: block means), so the coarse content is kept.

With :class:`core.guidance.Energy`'s convention (eps <- eps + scale * sigma_t * grad E) the
guided reverse step is EGSDE's guided mean, mean - lambda * (beta / sqrt(alpha)) * grad E.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.guidance import Energy, Project
from core.nets import TimeClassifier
from core.schedules import NoiseSchedule

__all__ = ["FaithfulnessExpert", "ILVRProjection", "RealismExpert", "check_factor", "lowpass", "perturb"]


def check_factor(factor: int, size: int) -> None:
    """Raise unless ``factor`` is an integer >= 2 dividing the image size."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or size % factor:
        raise ValueError(
            f"low-pass factor must be an integer >= 2 dividing the image size {size}, got {factor!r}"
        )


def lowpass(x: Tensor, factor: int) -> Tensor:
    """Downsample by ``factor`` (average pooling) and upsample back (nearest): (B, C, H, W) -> same.

    This is the orthogonal projection onto images constant on factor x factor blocks, so
    ILVR's replacement sets the block means exactly and ``lowpass(lowpass(x)) == lowpass(x)``.
    """
    check_factor(factor, x.shape[-1])
    return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")


def _coef(schedule: NoiseSchedule, t: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.as_tensor(t, dtype=torch.float64, device=like.device).reshape(-1)
    shape = (-1,) + (1,) * (like.dim() - 1)
    a = schedule.alpha(t).to(like.dtype).reshape(shape)
    s = schedule.sigma(t).to(like.dtype).reshape(shape)
    return a, s


def perturb(
    schedule: NoiseSchedule, x: Tensor, t: Tensor | float, generator: torch.Generator | None = None
) -> Tensor:
    """A draw of x_t = alpha(t) x + sigma(t) z, z ~ N(0, I); x (B, ...), t scalar or (B,)."""
    a, s = _coef(schedule, t, x)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return a * x + s * z


class _SourceEnergy(Energy):
    def __init__(self, source: Tensor, schedule: NoiseSchedule, scale: float, generator) -> None:
        super().__init__(self.energy, scale, on="x_t")
        self.source, self.schedule, self.generator = source, schedule, generator

    def _source_at(self, y: Tensor, t: Tensor) -> Tensor:
        if y.shape != self.source.shape:
            raise ValueError(
                f"state shape {tuple(y.shape)} differs from the source's {tuple(self.source.shape)}"
            )
        return perturb(self.schedule, self.source.to(y), t, self.generator)

    def energy(self, y: Tensor, t: Tensor, **cond) -> Tensor:
        raise NotImplementedError


class RealismExpert(_SourceEnergy):
    """E_s(y_t, t) = mean_hw cos(G_hw(y_t, t), G_hw(x_t, t)), shape (B,).

    Args:
        classifier: a :class:`core.nets.TimeClassifier` trained on noisy source vs target images.
        layer: the feature layer (one of ``classifier.layers``, e.g. ``"mid"``).
        source: source images (B, C, H, W) in [-1, 1], the batch being translated.
        schedule: the score model's noise schedule (to perturb the source).
        scale: lambda_s.
    """

    def __init__(
        self,
        classifier: TimeClassifier,
        layer: str,
        source: Tensor,
        schedule: NoiseSchedule,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if layer not in classifier.layers:
            raise ValueError(f"unknown feature layer {layer!r}; the classifier has {list(classifier.layers)}")
        if layer == "pool":
            raise ValueError("the realism expert needs a spatial feature layer, not 'pool'")
        super().__init__(source, schedule, scale, generator)
        self.classifier, self.layer = classifier, layer

    def energy(self, y: Tensor, t: Tensor, **cond) -> Tensor:
        tc = torch.as_tensor(t, device=y.device)
        with torch.no_grad():
            fx = self.classifier.features(self._source_at(y, t), tc, self.layer)
        fy = self.classifier.features(y, tc, self.layer)
        return F.cosine_similarity(fy, fx, dim=1, eps=1e-8).flatten(1).mean(1)


class FaithfulnessExpert(_SourceEnergy):
    """E_i(y_t, t) = || L(y_t) - L(x_t) ||^2 summed over pixels, shape (B,); L = :func:`lowpass`.

    Args:
        source: source images (B, C, H, W) in [-1, 1].
        schedule: the score model's noise schedule.
        factor: the low-pass factor k (H / k pixels survive per side).
        scale: lambda_i.
    """

    def __init__(
        self,
        source: Tensor,
        schedule: NoiseSchedule,
        factor: int,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        check_factor(factor, source.shape[-1])
        super().__init__(source, schedule, scale, generator)
        self.factor = factor

    def energy(self, y: Tensor, t: Tensor, **cond) -> Tensor:
        with torch.no_grad():
            lx = lowpass(self._source_at(y, t), self.factor)
        return ((lowpass(y, self.factor) - lx) ** 2).flatten(1).sum(1)


class ILVRProjection(Project):
    """ILVR: after every step y <- y - L(y) + L(x_t), x_t the source perturbed to the step's time."""

    def __init__(
        self, source: Tensor, schedule: NoiseSchedule, factor: int, generator: torch.Generator | None = None
    ) -> None:
        check_factor(factor, source.shape[-1])
        self.source, self.schedule, self.factor, self.generator = source, schedule, factor, generator
        super().__init__(self.replace)

    def replace(self, y: Tensor, t: Tensor, **cond) -> Tensor:
        xt = perturb(self.schedule, self.source.to(y), t, self.generator)
        return y - lowpass(y, self.factor) + lowpass(xt, self.factor)
