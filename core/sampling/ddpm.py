"""Ancestral DDPM and DDIM, written for any schedule through lambda = log(alpha / sigma).

One step from t (state x, prediction x0, eps) to the next grid time s < t, with
h = lambda_s - lambda_t > 0:

- DDIM: x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, c = eta sigma_s sqrt(1 - e^{-2h}).
  eta = 0 is the deterministic DDIM (= first-order DPM-Solver); eta = 1 is ancestral sampling
  with the exact posterior variance of q(x_s | x_t, x0).
- DDPM: the posterior mean alpha_s x0 + sigma_s e^{-h} eps plus noise of variance
  ``beta_tilde`` = sigma_s^2 (1 - e^{-2h}) (the posterior's) or ``beta`` = sigma_t^2 (1 - e^{-2h})
  (the forward transition's; 1 - alpha_t^2 / alpha_s^2 under VP).

NFE = steps for both.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import SamplerContext, register

__all__ = ["ddim", "ddpm"]


@register("ddim")
def ddim(ctx: SamplerContext, x: Tensor, *, eta: float = 0.0) -> Tensor:
    """DDIM with stochasticity ``eta`` in [0, 1]."""
    a, s, lam = ctx.alpha, ctx.sigma, ctx.lam
    h = lam[1:] - lam[:-1]
    c = eta * s[1:] * torch.sqrt(-torch.expm1(-2.0 * h))
    c_x0, c_eps, c_z = ctx.per_step(a[1:]), ctx.scalars(torch.sqrt(s[1:] ** 2 - c**2)), ctx.scalars(c)
    for i in range(ctx.steps):
        x0, eps = ctx.model(x, ctx.times[i], i)
        x = (x0 * c_x0[i]).add_(eps, alpha=c_eps[i])
        if eta > 0:
            x.add_(ctx.noise(), alpha=c_z[i])
        x = ctx.done(i, x)
    return x


@register("ddpm")
def ddpm(ctx: SamplerContext, x: Tensor, *, variance: str = "beta_tilde") -> Tensor:
    """Ancestral sampling with reverse variance ``beta_tilde`` (posterior) or ``beta`` (forward)."""
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    a, s, lam = ctx.alpha, ctx.sigma, ctx.lam
    h = lam[1:] - lam[:-1]
    one_minus = -torch.expm1(-2.0 * h)
    std = (s[1:] if variance == "beta_tilde" else s[:-1]) * torch.sqrt(one_minus)
    c_x0, c_eps, c_z = ctx.per_step(a[1:]), ctx.scalars(s[1:] * torch.exp(-h)), ctx.scalars(std)
    for i in range(ctx.steps):
        x0, eps = ctx.model(x, ctx.times[i], i)
        x = (x0 * c_x0[i]).add_(eps, alpha=c_eps[i]).add_(ctx.noise(), alpha=c_z[i])
        x = ctx.done(i, x)
    return x
