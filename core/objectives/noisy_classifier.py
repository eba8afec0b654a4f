"""Training loss of time-dependent classifiers and regressors on noisy data.

A guide that reads the noisy state x_t (classifier guidance, EGSDE's realism expert, a property
regressor's energy) needs a model trained on x_t = alpha(t) x0 + sigma(t) eps at every t it
will see, not on clean data only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..schedules import NoiseSchedule

__all__ = ["noisy_classifier_loss"]

CRITERIA = ("cross_entropy", "mse")


def noisy_classifier_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    target: Tensor,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    criterion: str = "cross_entropy",
    clean: bool = False,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Loss of ``model(x_t, t)`` against ``target`` on data noised to random times.

    Args:
        model: ``model(x, t) -> (B, K)`` logits (``cross_entropy``) or (B, ...) predictions
            (``mse``); t of shape (B,), continuous times of ``schedule``.
        schedule: the noise schedule of the diffusion model the classifier will guide.
        x0: clean data (B, ...).
        target: class labels (B,) int64 (``cross_entropy``) or regression targets shaped like
            the model's output (``mse``).
        t: times (B,); drawn with ``schedule.sample_t`` (uniform on [t_min, t_max]) when None.
        noise: Gaussian noise shaped like x0; drawn when None.
        criterion: ``"cross_entropy"`` or ``"mse"``.
        clean: train on x0 itself at t = t_min (a time-independent classifier, for ablations).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per sample, shape (B,)).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    b = x0.shape[0]
    if target.shape[0] != b:
        raise ValueError(f"{target.shape[0]} targets for a batch of {b}")
    if clean:
        t = torch.full((b,), schedule.t_min, device=x0.device, dtype=torch.float64)
        xt = x0
    else:
        if t is None:
            t = schedule.sample_t(b, device=x0.device, generator=generator)
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        shape = (b,) + (1,) * (x0.dim() - 1)
        a = schedule.alpha(t).to(x0.dtype).reshape(shape)
        s = schedule.sigma(t).to(x0.dtype).reshape(shape)
        xt = a * x0 + s * noise
    out = model(xt, t)
    if criterion == "cross_entropy":
        per = F.cross_entropy(out, target.long(), reduction="none")
    else:
        per = ((out - target.to(out.dtype)) ** 2).reshape(b, -1).mean(1)
    return per.mean() if reduction == "mean" else per
