"""Euler-Maruyama on the reverse-time SDE.

Forward SDE dx = f(t) x dt + g(t) dw with f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2
= -2 sigma^2 d lambda / dt. The reverse SDE dx = [f x - g^2 grad log q_t] dt + g dw_bar, with
grad log q_t = -eps / sigma, is stepped from t_i to t_{i+1} < t_i (dt < 0) as

    x_{i+1} = (1 + f dt) x + (g^2 dt / sigma) eps + g sqrt(-dt) z,

everything evaluated at t_i. First order weakly, 1/2 strongly; NFE = steps. Noise is added on
every step, including the last.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import SamplerContext, register

__all__ = ["euler_maruyama"]


@register("euler_maruyama")
def euler_maruyama(ctx: SamplerContext, x: Tensor) -> Tensor:
    """Euler-Maruyama on the reverse SDE."""
    t, a, s = ctx.ts[:-1], ctx.alpha[:-1], ctx.sigma[:-1]
    da, ds = ctx.dalpha[:-1], ctx.dsigma[:-1]
    f = da / a
    g2 = 2.0 * s * ds - 2.0 * f * s**2
    dt = ctx.ts[1:] - t
    c_x, c_eps, c_z = ctx.per_step(1.0 + f * dt), ctx.scalars(g2 * dt / s), ctx.scalars(torch.sqrt(g2 * -dt))
    for i in range(ctx.steps):
        _, eps = ctx.model(x, ctx.times[i], i)
        x = (x * c_x[i]).add_(eps, alpha=c_eps[i]).add_(ctx.noise(), alpha=c_z[i])
        x = ctx.done(i, x)
    return x
