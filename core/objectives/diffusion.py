"""Denoising score matching: the training loss of every diffusion and flow-matching model."""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import PREDICTIONS, Denoiser

__all__ = ["denoising_loss", "noisy_sample"]


def noisy_sample(denoiser: Denoiser, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = alpha(t) x0 + sigma(t) noise; x0 and noise of shape (B, ...), t of shape (B,)."""
    a, s = denoiser.coefficients(x0, t)
    return a * x0 + s * noise


def denoising_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    target: str | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    **cond,
) -> Tensor:
    """Mean squared error between the network's prediction and its exact target.

    Args:
        denoiser: the model; its ``prediction`` is what the network outputs.
        x0: clean data, shape (B, ...).
        target: the quantity the loss is measured on (``eps | x0 | v | score | velocity``);
            defaults to the denoiser's own prediction, i.e. the plain regression loss. Choosing
            another target reweights the loss over time (e.g. an x0-predicting network trained
            with ``target="eps"`` gets the eps-MSE weighting).
        t: training times, shape (B,); drawn with ``schedule.sample_t`` when None.
        noise: Gaussian noise shaped like x0; drawn when None.
        mask: optional weights broadcastable to x0 (1 = counts), e.g. to ignore padding. Each
            sample's loss is then the weighted mean over its own counted entries
            (sum(w err) / sum(w)), so a padded point cloud of n points weighs like an unpadded
            one; a sample with no counted entry contributes 0.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (per-sample loss, shape (B,)).
        cond: passed to the network.
    """
    target = target or denoiser.prediction
    if target not in PREDICTIONS:
        raise ValueError(f"unknown target {target!r}; expected one of {PREDICTIONS}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    b = x0.shape[0]
    if t is None:
        t = denoiser.schedule.sample_t(b, device=x0.device, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    xt = noisy_sample(denoiser, x0, t, noise)
    out = denoiser(xt, t, **cond)
    if target == denoiser.prediction:
        a, s = denoiser.coefficients(x0, t)
        truth = _exact(target, denoiser, x0, noise, t, a, s)
        pred = out
    else:
        x0_hat, eps_hat = denoiser.x0_eps_from(out, xt, t)
        a, s = denoiser.coefficients(x0, t)
        pred = _exact(target, denoiser, x0_hat, eps_hat, t, a, s)
        truth = _exact(target, denoiser, x0, noise, t, a, s)
    err = (pred - truth) ** 2
    if mask is not None:
        try:
            w = torch.broadcast_to(mask.to(err.dtype), err.shape)
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to x0's {tuple(x0.shape)}"
            ) from None
        total = w.reshape(b, -1).sum(dim=1)
        per_sample = (err * w).reshape(b, -1).sum(dim=1) / total.clamp(min=torch.finfo(err.dtype).tiny)
    else:
        per_sample = err.reshape(b, -1).mean(dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample


def _exact(kind: str, denoiser: Denoiser, x0: Tensor, eps: Tensor, t: Tensor, a: Tensor, s: Tensor) -> Tensor:
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return a * eps - s * x0
    if kind == "score":
        return -eps / s
    da, ds = denoiser.schedule.derivatives(t.to(torch.float64))
    shape = (-1, *([1] * (x0.dim() - 1)))
    return da.reshape(shape).to(x0.dtype) * x0 + ds.reshape(shape).to(x0.dtype) * eps
