"""Probability-flow ODE solvers in the schedule's own time t.

The drift is dx/dt = alpha'(t) x0 + sigma'(t) eps (``Denoiser.velocity``), with alpha', sigma'
precomputed on the grid. For a flow-matching model (``LinearSchedule``, velocity prediction)
these are the usual Euler / Heun flow samplers.

- ``euler``: x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i). NFE = steps.
- ``heun``: EDM's Heun (Karras et al. 2022, Alg. 1): an Euler predictor, then the trapezoidal
  corrector with the drift at t_{i+1}; the final step is a plain Euler step (as EDM, whose last
  step goes to sigma = 0). NFE = 2 steps - 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import SamplerContext, register

__all__ = ["euler", "heun"]


def _drift_coefficients(ctx: SamplerContext) -> tuple[Tensor, Tensor, Tensor]:
    return ctx.dalpha, ctx.dsigma, ctx.ts[1:] - ctx.ts[:-1]


@register("euler")
def euler(ctx: SamplerContext, x: Tensor) -> Tensor:
    """Euler's method on the probability-flow ODE."""
    da, ds, dt = _drift_coefficients(ctx)
    c_x0, c_eps = ctx.scalars(da[:-1] * dt), ctx.scalars(ds[:-1] * dt)
    for i in range(ctx.steps):
        x0, eps = ctx.model(x, ctx.times[i], i)
        x = torch.add(x, x0, alpha=c_x0[i]).add_(eps, alpha=c_eps[i])
        x = ctx.done(i, x)
    return x


@register("heun", nfe=lambda steps, order, multistep: 2 * steps - 1)
def heun(ctx: SamplerContext, x: Tensor) -> Tensor:
    """EDM's second-order Heun method with a final Euler step."""
    da, ds, dt = _drift_coefficients(ctx)
    c0_x0, c0_eps = ctx.per_step(da[:-1] * dt), ctx.scalars(ds[:-1] * dt)
    c1_x0, c1_eps = ctx.per_step(da[1:] * dt), ctx.scalars(ds[1:] * dt)
    last = ctx.steps - 1
    for i in range(ctx.steps):
        x0, eps = ctx.model(x, ctx.times[i], i)
        step0 = (x0 * c0_x0[i]).add_(eps, alpha=c0_eps[i])
        if i == last:
            x = x + step0
        else:
            x_pred = x + step0
            x0p, epsp = ctx.model(x_pred, ctx.times[i + 1], i)
            step1 = (x0p * c1_x0[i]).add_(epsp, alpha=c1_eps[i])
            x = torch.add(x, step0 + step1, alpha=0.5)
        x = ctx.done(i, x)
    return x
