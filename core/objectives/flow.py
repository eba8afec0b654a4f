"""Conditional flow matching and rectified flow on the linear path x_t = (1 - t) x_0 + t eps.

In this library a flow-matching model is a diffusion model under :class:`LinearSchedule`: the
regression target is the path's velocity dx_t/dt = eps - x_0 (``target="velocity"`` of
:func:`denoising_loss`), and any sampler integrates it through the Denoiser's exact conversions.

- **CFM / rectified flow** (Lipman et al. 2023; Liu et al. 2023): independent (x_0, eps) pairs.
- **Minibatch OT-CFM** (Tong et al. 2024): the pairs re-matched by an exact assignment.
- **Reflow**: pairs (eps, x_0 = ODE(eps)) produced by a trained flow; retraining on them with
  the same loss straightens the trajectories, so fewer steps suffice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import LinearSchedule
from .diffusion import denoising_loss

__all__ = ["flow_matching_loss", "ot_pair", "reflow_pairs", "straightness"]


def _check_linear(denoiser: Denoiser) -> None:
    if not isinstance(denoiser.schedule, LinearSchedule):
        raise ValueError(
            f"flow matching needs a LinearSchedule (x_t = (1-t) x_0 + t eps), got {denoiser.schedule!r}"
        )


def flow_matching_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    noise: Tensor | None = None,
    t: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    **cond,
) -> Tensor:
    """Velocity-regression loss E ||v_theta(x_t, t) - (eps - x_0)||^2 on the linear path.

    Args:
        denoiser: a model under :class:`LinearSchedule`, normally ``prediction="velocity"``
            (another prediction is converted exactly and regressed in velocity units).
        x0: data, shape (B, ...).
        noise: the coupled noise, shape like x0: independent Gaussian when None (CFM), a
            reflow pair's noise, or an OT re-matching (:func:`ot_pair`).
        t: times (B,), uniform on the schedule's [t_min, t_max] when None.
        reduction: ``"mean"`` or ``"none"`` (per-sample, shape (B,)).
        cond: passed to the network (e.g. ``y=labels``).
    """
    _check_linear(denoiser)
    return denoising_loss(
        denoiser, x0, target="velocity", t=t, noise=noise, generator=generator, reduction=reduction, **cond
    )


def ot_pair(x0: Tensor, noise: Tensor) -> Tensor:
    """Re-order ``noise`` (B, ...) to the exact squared-Euclidean optimal assignment to ``x0``
    within the minibatch (minibatch OT-CFM); returns the permuted noise, shape like ``noise``."""
    from scipy.optimize import linear_sum_assignment

    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
    cost = torch.cdist(x0.reshape(len(x0), -1).double(), noise.reshape(len(noise), -1).double()) ** 2
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return noise[torch.as_tensor(np.asarray(cols), device=noise.device)]


@torch.no_grad()
def reflow_pairs(
    sample_fn: Callable[..., Tensor],
    noise: Tensor,
    *,
    labels: Tensor | None = None,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Noise-sample couplings (eps, x_0) from a trained flow, for reflow.

    Args:
        sample_fn: maps a noise batch x_T (b, ...) to samples (b, ...), e.g.
            ``lambda z, **c: core.sample(den, z, method="heun", steps=50, cond=c)``; called as
            ``sample_fn(z)`` or, with labels, ``sample_fn(z, y=labels_batch)``.
        noise: starting noise (N, ...); batches of ``batch_size`` are sampled in order.
        labels: optional class labels (N,) passed as ``y``.
    Returns:
        (noise, samples), both (N, ...); train on them with
        ``flow_matching_loss(den, samples, noise=noise, y=labels)``.
    """
    if labels is not None and labels.shape[0] != noise.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {noise.shape[0]} noise samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = []
    for i in range(0, noise.shape[0], batch_size):
        z = noise[i : i + batch_size]
        cond = {} if labels is None else {"y": labels[i : i + batch_size]}
        x = sample_fn(z, **cond)
        if x.shape != z.shape:
            raise ValueError(f"sample_fn returned shape {tuple(x.shape)} for noise of shape {tuple(z.shape)}")
        out.append(x.detach())
    return noise, torch.cat(out)


@torch.no_grad()
def straightness(denoiser: Denoiser, noise: Tensor, *, steps: int = 50, **cond) -> Tensor:
    """How far a flow's ODE trajectories are from straight lines.

    Integrates dx/dt = v(x, t) with ``steps`` Euler steps from t_max to t_min starting at
    ``noise`` (B, ...), and returns per sample (B,) the gap
    mean_t ||v||^2 - ||(x_end - x_start) / (t_max - t_min)||^2 (per coordinate), which is
    >= 0 and 0 exactly when the trajectory is a straight line traversed at constant speed.
    """
    s = denoiser.schedule
    ts = torch.linspace(s.t_max, s.t_min, steps + 1, dtype=torch.float64, device=noise.device)
    x = noise
    speed2 = torch.zeros(noise.shape[0], dtype=torch.float64, device=noise.device)
    for i in range(steps):
        v = denoiser.velocity(x, ts[i], **cond)
        speed2 += v.reshape(len(v), -1).double().pow(2).mean(1)
        x = x + (ts[i + 1] - ts[i]).to(x.dtype) * v
    chord = (x - noise).reshape(len(x), -1).double() / (s.t_max - s.t_min)
    return speed2 / steps - chord.pow(2).mean(1)
