"""DDIM inversion: run deterministic DDIM forward in time, from data to noise.

One step from t to the next grid time u > t (state x, prediction x0, eps at (x, t)):

    x_u = alpha_u x0 + sigma_u eps,

the DDIM update with the roles of t and u exchanged. It integrates the probability-flow ODE
with the prediction taken at the start of each step (first order), so inverting with a grid and
then sampling ``core.sample(..., method="ddim")`` on the same grid returns the data up to an
O(1 / steps) error. :func:`ddim_invert` takes the same ``grid`` / ``steps`` / interval as
:func:`core.sample` and walks the identical times backwards, so the two calls are each other's
approximate inverse; a guide (e.g. classifier-free guidance) applies to inversion exactly as to
sampling.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from ..guidance.base import Guide, model_fn
from .sample import DEFAULT_GRID, _grid

__all__ = ["ddim_invert"]


def ddim_invert(
    denoiser: Denoiser,
    x: Tensor,
    steps: int | None = None,
    grid: str | Tensor = DEFAULT_GRID,
    t_start: float | None = None,
    t_end: float | None = None,
    guide: Guide | None = None,
    cond: dict | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Map ``x`` at time ``t_end`` up to ``t_start`` by deterministic DDIM in reverse.

    Args:
        denoiser: the model.
        x: the state at the low time ``t_end`` (clean data at the schedule's ``t_min``),
            shape (B, ...); its dtype is the solver-state dtype (float64 for tight inversions).
        steps, grid, t_start, t_end: exactly as in :func:`core.sample` (``t_start`` the high
            time, default ``t_max``; ``t_end`` the low time, default ``t_min``): the grid is the
            one sampling would use, walked from its end back to its start.
        guide: a :class:`core.guidance.Guide` applied to every prediction (its ``project`` is
            not applied: a projection is not invertible).
        cond: network keyword arguments (as in :func:`core.sample`).
        progress: show a tqdm bar over the steps.
        return_trajectory: also return the states at every grid time, shape (steps + 1, B, ...),
            from ``x`` at ``t_end`` up to the result at ``t_start``.

    Returns:
        the state at ``t_start``, shaped like ``x``, in ``x``'s dtype (and the trajectory).
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a core.Denoiser, got {type(denoiser).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError("x must be a floating-point tensor of shape (B, ...) with B >= 1")
    if cond is not None and not isinstance(cond, dict):
        raise TypeError(f"cond must be a dict of network keyword arguments, got {type(cond).__name__}")
    sch = denoiser.schedule
    ts = _grid(grid, sch, steps, t_start, t_end).flip(0).to(x.device)
    alpha, sigma = sch.alpha(ts), sch.sigma(ts)
    a, s = alpha.tolist(), sigma.tolist()
    model = model_fn(denoiser, guide, cond)
    x = x.detach()
    trajectory = [x] if return_trajectory else []
    grad_ctx = torch.no_grad() if guide is None else nullcontext()
    steps_iter = range(ts.numel() - 1)
    if progress:
        steps_iter = tqdm(steps_iter, desc="ddim inversion", leave=False)
    with grad_ctx:
        for i in steps_iter:
            x0, eps = model(x, ts[i], i)
            x = (x0 * a[i + 1]).add_(eps, alpha=s[i + 1]).detach()
            if return_trajectory:
                trajectory.append(x)
    if return_trajectory:
        return x, torch.stack(trajectory)
    return x
