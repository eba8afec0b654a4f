"""One- and multi-step consistency sampling (Song et al. 2023, Algorithm 1).

The consistency function of a denoiser is its own DDIM jump from (x, t) to the end time
t_end of the grid (the boundary time eps, default the schedule's t_min):

    f(x, t) = c_skip(t) x + c_out(t) x0(x, t),
    c_skip = sigma(t_end) / sigma(t),  c_out = alpha(t_end) - c_skip alpha(t),

the parameterisation ``core.objectives.ConsistencyModel`` trains. Step i evaluates f at the
grid time t_i; before the next evaluation the estimate is re-noised to t_{i+1},
x = alpha(t_{i+1}) f + sigma(t_{i+1}) z. With ``steps=1`` it is one-step generation; the last
step returns f itself. NFE = steps; ``steps - 1`` noise draws.
"""

from __future__ import annotations

from torch import Tensor

from .registry import SamplerContext, register

__all__ = ["consistency"]


@register("consistency", need="x0")
def consistency(ctx: SamplerContext, x: Tensor) -> Tensor:
    """Multistep consistency sampling on the grid ``ctx.ts`` (re-noising at each inner time)."""
    a, s = ctx.alpha, ctx.sigma
    c_skip = s[-1] / s[:-1]
    c_out = a[-1] - c_skip * a[:-1]
    k_skip, k_out = ctx.per_step(c_skip), ctx.scalars(c_out)
    r_x, r_z = ctx.per_step(a[1:]), ctx.scalars(s[1:])
    last = ctx.steps - 1
    for i in range(ctx.steps):
        x0, _ = ctx.model(x, ctx.times[i], i)
        f = (x * k_skip[i]).add_(x0, alpha=k_out[i])
        x = f if i == last else (f * r_x[i]).add_(ctx.noise(), alpha=r_z[i])
        x = ctx.done(i, x)
    return x
