"""The exponential integrators behind DPM-Solver (noise prediction) and DPM-Solver++ (data).

Both solve the probability-flow ODE exactly in its linear part and Taylor-expand the network's
prediction in the log-SNR. In generic variables (A, B, L) with prediction p:

- DPM-Solver:   (A, B, L, p) = (alpha, sigma,  lambda, eps)
- DPM-Solver++: (A, B, L, p) = (sigma, alpha, -lambda, x0)

one step from s to t (h = L_t - L_s, phi1 = e^h - 1, phi2 = phi1 / h - 1, phi3 = phi2 / h - 1/2) is

    x_t = (A_t / A_s) x_s - B_t [phi1 p_s + phi2 D1 + phi3 D2],

where D1 ~ h p' and D2 ~ h^2 p'' come from previous evaluations (multistep) or from stages at
L_s + r h inside the step (singlestep, r = 1/2 for order 2 and 1/3, 2/3 for order 3). The
forms are those of the official DPM-Solver code ("dpmsolver" solver type), also shipped by
diffusers and k-diffusion.

The shipped third-order multistep update uses D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 p'' / 2
where the phi3 term needs h^2 p'', so it is only second order asymptotically. ``corrected=True``
doubles D2 and restores third order; at the step counts used in practice the shipped form is
nonetheless the more accurate one on the Gaussian-mixture oracle (``benchmarks/samplers.py``),
so it stays the default.

Every coefficient is computed once per call, vectorised over steps in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import SamplerContext

LOWER_ORDER_FINAL_BELOW = 15  # as diffusers: lower_order_final acts when steps < 15


def step_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Per-step order of a multistep solver: warm-up from first order, optionally lower at the end."""
    lof = lower_order_final and steps < LOWER_ORDER_FINAL_BELOW
    return [min(order, i + 1, steps - i if lof else order) for i in range(steps)]


def multistep(ctx: SamplerContext, x: Tensor, data: bool, corrected: bool) -> Tensor:
    """Multistep DPM-Solver(++) of order ctx.order; NFE = steps."""
    A, B, L = (ctx.sigma, ctx.alpha, -ctx.lam) if data else (ctx.alpha, ctx.sigma, ctx.lam)
    steps = ctx.steps
    orders = step_orders(steps, ctx.order, ctx.lower_order_final)
    h = L[1:] - L[:-1]
    hp = torch.cat([h[:1], h[:-1]])  # h_{i-1} (a placeholder where unused)
    hpp = torch.cat([h[:2], h[:-2]])[:steps]  # h_{i-2}
    r0, r1 = hp / h, hpp / h
    phi1 = torch.expm1(h)
    phi2 = phi1 / h - 1.0
    phi3 = phi2 / h - 0.5
    bt = B[1:]
    zero = torch.zeros_like(h)
    c1 = torch.stack([-bt * phi1, zero, zero])
    c2 = torch.stack([-bt * phi1 * (1.0 + 0.5 / r0), bt * phi1 * 0.5 / r0, zero])
    d10 = torch.stack([1.0 / r0, -1.0 / r0, zero])  # D1_0 = (p0 - p1) / r0
    d11 = torch.stack([zero, 1.0 / r1, -1.0 / r1])  # D1_1 = (p1 - p2) / r1
    q = r0 / (r0 + r1)
    d1 = (1.0 + q) * d10 - q * d11
    d2 = (2.0 if corrected else 1.0) * (d10 - d11) / (r0 + r1)
    c3 = c1 - bt * phi2 * d1 - bt * phi3 * d2
    sel = torch.tensor(orders, device=h.device)
    coef = torch.where(sel == 1, c1, torch.where(sel == 2, c2, c3))
    c_x = ctx.per_step(A[1:] / A[:-1])
    c_p = [ctx.scalars(c) for c in coef]
    model, times, done = ctx.model, ctx.times, ctx.done
    prev: list[Tensor] = []
    for i in range(steps):
        x0, eps = model(x, times[i], i)
        prev = [x0 if data else eps, *prev[:2]]
        x = x * c_x[i]
        for j in range(orders[i]):
            x.add_(prev[j], alpha=c_p[j][i])
        x = done(i, x)
    return x


def singlestep(ctx: SamplerContext, x: Tensor, data: bool) -> Tensor:
    """Singlestep DPM-Solver(++) of order ctx.order; NFE = order * steps."""
    order = ctx.order
    A, B, L = (ctx.sigma, ctx.alpha, -ctx.lam) if data else (ctx.alpha, ctx.sigma, ctx.lam)
    h = L[1:] - L[:-1]
    phi1 = torch.expm1(h)
    a_s, b_t = A[:-1], B[1:]
    c_x = ctx.per_step(A[1:] / a_s)
    if order == 1:
        c_p0 = ctx.scalars(-b_t * phi1)
    ratios = {2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}.get(order, ())
    stages = []  # per stage: (cached times, coefficient on x, on p0, on p1)
    for k, r in enumerate(ratios):
        lam_r = ctx.lam[:-1] + r * (ctx.lam[1:] - ctx.lam[:-1])
        t_r = ctx.schedule.t_of_log_snr(lam_r)
        vals = ctx.schedule.values(t_r)
        a_r, b_r = (vals[1], vals[0]) if data else (vals[0], vals[1])
        e_r = torch.expm1(r * h)
        times_r, c_x_r = ctx.cache_times(t_r, vals), ctx.per_step(a_r / a_s)
        if k == 0:
            stages.append((times_r, c_x_r, ctx.scalars(-b_r * e_r), None))
        else:  # the second stage of order 3: r2 / r1 * B phi22 (p1 - p0)
            g = (r / ratios[0]) * b_r * (e_r / (r * h) - 1.0)
            stages.append((times_r, c_x_r, ctx.scalars(-b_r * e_r + g), ctx.scalars(-g)))
    if order == 2:
        g = (0.5 / ratios[0]) * b_t * phi1
        c_p0, c_p1 = ctx.scalars(-b_t * phi1 + g), ctx.scalars(-g)
    elif order == 3:
        g = (1.0 / ratios[1]) * b_t * (phi1 / h - 1.0)
        c_p0, c_p2 = ctx.scalars(-b_t * phi1 + g), ctx.scalars(-g)
    for i in range(ctx.steps):
        x0, eps = ctx.model(x, ctx.times[i], i)
        p = [x0 if data else eps]
        for times, sx, s0, s1 in stages:
            u = (x * sx[i]).add_(p[0], alpha=s0[i])
            if s1 is not None:
                u.add_(p[1], alpha=s1[i])
            x0u, epsu = ctx.model(u, times[i], i)
            p.append(x0u if data else epsu)
        x = (x * c_x[i]).add_(p[0], alpha=c_p0[i])
        if order == 2:
            x.add_(p[1], alpha=c_p1[i])
        elif order == 3:
            x.add_(p[2], alpha=c_p2[i])
        x = ctx.done(i, x)
    return x
