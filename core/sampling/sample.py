"""``core.sample``: the one sampling entry point."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from ..guidance.base import Guide, model_fn
from .grids import make_grid
from .registry import METHODS, NoiseFn, SamplerContext, gaussian_noise, get_method

__all__ = ["sample", "DEFAULT_METHOD", "DEFAULT_GRID", "DEFAULT_STEPS"]

Callback = Callable[[int, float, Tensor, Tensor], object]

DEFAULT_METHOD = "dpm_solver"  # its defaults: order 3, multistep: DPM-Solver-3M (noise prediction)
DEFAULT_GRID = "logsnr"
DEFAULT_STEPS = 20


def sample(
    denoiser: Denoiser,
    x_T: Tensor,
    method: str = DEFAULT_METHOD,
    steps: int | None = None,
    order: int | None = None,
    multistep: bool | None = None,
    eta: float = 0.0,
    guide: Guide | None = None,
    cond: dict | None = None,
    grid: str | Tensor = DEFAULT_GRID,
    t_start: float | None = None,
    t_end: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    lower_order_final: bool = True,
    noise_fn: NoiseFn | None = None,
    callback: Callback | None = None,
    **options,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate the reverse process from ``x_T`` at ``t_start`` down to ``t_end``.

    Args:
        denoiser: the model (any prediction type, any schedule).
        x_T: initial state at ``t_start``, shape (B, ...); its dtype is the solver-state dtype
            (keep it float32/float64; the network may run in lower precision inside).
        method: a registered name (``core.sampling.method_names()``): ``ddpm``, ``ddim``,
            ``euler_maruyama``, ``euler``, ``heun``, ``dpm_solver``, ``dpm_solver++``,
            ``analytic_ddpm``, ``analytic_ddim``, ``consistency``. The default,
            DPM-Solver-3M (noise prediction) on the ``logsnr`` grid, had the lowest error at
            10-20 NFE on the Gaussian-mixture oracle among the methods and grids here (the
            README states its error relative to diffusers' default; ``benchmarks/samplers.py``
            measures it); for strong guidance (large classifier-free scales) prefer
            ``dpm_solver++`` (2M), whose data prediction stays bounded.
        steps: number of grid intervals (default 20, or the length of an explicit grid - 1).
            Network evaluations (NFE): ``steps`` for ddpm, ddim, euler_maruyama, euler,
            consistency and every multistep solver; ``2 steps - 1`` for heun; ``order * steps``
            for singlestep DPM-Solver / DPM-Solver++ (orders 2 and 3).
        order: solver order (1-3) where the method has one; None = the method's default
            (``dpm_solver++``: 2, ``dpm_solver``: 3).
        multistep: multistep (one evaluation per step, previous ones reused) or singlestep
            (``order`` evaluations per step); None = the method's default (multistep for both
            DPM-Solvers).
        eta: DDIM stochasticity (0 = deterministic, 1 = the DDPM posterior variance); only
            methods that declare an ``eta`` option accept a non-zero value.
        guide: a :class:`core.guidance.Guide`, applied through ``core.guidance.model_fn`` to
            every network evaluation, and ``guide.project`` after every step and on ``x_T``.
        cond: keyword arguments for the network (class labels, context, masks, ...); every guide
            hook receives them too (``correction``, ``project``, the callables of ``Energy``,
            ``ClassifierGuidance`` and ``Project`` as ``fn(x, t, **cond)``).
        grid: ``time_uniform | logsnr | time_quadratic | karras``, or an explicit 1-D tensor
            of strictly decreasing times (float64 recommended).
        t_start, t_end: the integration interval, t_min <= t_end < t_start <= t_max;
            default the schedule's t_max / t_min.
        generator: random generator for stochastic methods (on x_T's device).
        progress: show a tqdm progress bar over the steps.
        return_trajectory: also return the states at every grid time, shape (steps + 1, B, ...),
            starting with (projected) x_T.
        lower_order_final: multistep solvers only: when ``steps < 15``, the last step is first
            order and (for order 3) the one before second order, as in diffusers (the official
            code uses ``steps < 10``). On by default: on the oracle it helps most on coarse
            time-uniform grids of discrete models and changes little on ``logsnr`` grids
            (``benchmarks/samplers.py``); singlestep solvers ignore it.
        noise_fn: ``noise_fn(like, generator, **cond) -> Tensor``, the noise every stochastic
            method draws (``ddpm``, ``ddim`` with eta > 0, ``euler_maruyama``, the analytic and
            consistency samplers): a tensor of ``like``'s shape, dtype and device, e.g. noise with
            zero centre of mass or masked entries. Default :func:`core.sampling.gaussian_noise`,
            i.i.d. standard normal draws from ``generator``.
        callback: ``callback(i, t, x, x0)``, called once per step i = 0 .. steps - 1 at the
            step's first network evaluation, with ``t`` the grid time (a float), ``x`` the state
            at ``t`` and ``x0`` its (guided) denoised estimate, each shaped like x_T (read them,
            do not modify them in place). Its return value is ignored; raise to stop early.
        options: method-specific keyword options (e.g. ``variance="beta"`` for ``ddpm``,
            ``corrected=True`` for third-order multistep DPM-Solver(++)).

    Returns:
        x at ``t_end``, shaped like x_T, in x_T's dtype; with ``return_trajectory`` also the
        trajectory. Stochastic methods add noise on every step, including the last (the result
        is a sample of the marginal at ``t_end``).

    Without a guide, sampling runs under ``torch.no_grad``. Every argument is validated before
    the first network call; the network's output shape is checked by the Denoiser on that first
    call, which precedes any state update (so no extra probe evaluation is spent on it).
    Coefficients are computed once per call in float64; the loop makes no host-device
    synchronisation (one ``tolist`` per coefficient vector happens before it).
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a core.Denoiser, got {type(denoiser).__name__}")
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.dim() < 1 or x_T.shape[0] < 1:
        raise ValueError("x_T must be a floating-point tensor of shape (B, ...) with B >= 1")
    if cond is not None and not isinstance(cond, dict):
        raise TypeError(f"cond must be a dict of network keyword arguments, got {type(cond).__name__}")
    cond = dict(cond or {})
    m = get_method(method)
    sch = denoiser.schedule
    ts = _grid(grid, sch, steps, t_start, t_end)
    order = m.default_order if order is None else order
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if order not in m.orders:
        raise ValueError(f"method {method!r} supports order {list(m.orders)}, got {order}")
    multistep = m.default_multistep if multistep is None else multistep
    if multistep not in m.multistep or not isinstance(multistep, bool):
        raise ValueError(f"method {method!r} supports multistep in {list(m.multistep)}, got {multistep!r}")
    if not isinstance(lower_order_final, bool):
        raise ValueError(f"lower_order_final must be a bool, got {lower_order_final!r}")
    unknown = sorted(set(options) - set(m.options))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for method {method!r}; it accepts {sorted(m.options)}")
    if noise_fn is not None and not callable(noise_fn):
        raise TypeError(f"noise_fn must be callable (like, generator, **cond) -> Tensor, got {noise_fn!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (i, t, x, x0), got {callback!r}")
    if "eta" in m.options:
        if not (isinstance(eta, int | float) and 0.0 <= eta <= 1.0):
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        options["eta"] = float(eta)
    elif eta != 0:
        with_eta = [n for n, mm in METHODS.items() if "eta" in mm.options]
        raise ValueError(f"method {method!r} has no eta; methods with eta: {with_eta}")

    device = x_T.device
    ts = ts.to(device)
    values = sch.values(ts)
    alpha, sigma, lam, dalpha, dsigma = values
    coefs = torch.stack(values)
    if not bool(torch.isfinite(coefs).all() and (alpha > 0).all() and (sigma > 0).all()):
        raise ValueError(
            f"the schedule is singular on this grid (alpha or sigma not finite and > 0): {sch!r}"
        )

    x = x_T.detach()
    grad_ctx = torch.no_grad() if guide is None else nullcontext()
    times = denoiser.cache_times(ts, x, values)
    trajectory: list[Tensor] = []
    bar = tqdm(total=ts.numel() - 1, desc=method, leave=False) if progress else None
    try:
        with grad_ctx:
            if guide is not None:
                x = guide.project(x, times[0], cond)
            if return_trajectory:
                trajectory.append(x)
            done = _make_done(
                guide, cond, times, trajectory if return_trajectory else None, bar if progress else None
            )
            model = model_fn(denoiser, guide, cond, "both" if callback is not None else m.need)
            if callback is not None:
                model = _with_callback(model, callback, ts.tolist())
            ctx = SamplerContext(
                model=model,
                denoiser=denoiser,
                schedule=sch,
                ts=ts,
                times=times,
                alpha=alpha,
                sigma=sigma,
                lam=lam,
                dalpha=dalpha,
                dsigma=dsigma,
                order=order,
                multistep=multistep,
                lower_order_final=lower_order_final,
                generator=generator,
                dtype=x.dtype,
                done=done,
                _like=x,
                noise_fn=gaussian_noise if noise_fn is None else noise_fn,
                cond=cond,
            )
            try:
                x = m.fn(ctx, x, **options)
            finally:
                denoiser.release_times(ctx._cached)
    finally:
        denoiser.release_times(times)
        if bar is not None:
            bar.close()
    if return_trajectory:
        return x, torch.stack(trajectory)
    return x


def _grid(grid: str | Tensor, sch, steps: int | None, t_start: float | None, t_end: float | None) -> Tensor:
    """Validate the grid arguments and build the grid (float64, CPU)."""
    lo, hi = sch.t_min, sch.t_max
    tol = 1e-9 * max(1.0, abs(hi))
    if isinstance(grid, Tensor):
        ts = grid.detach().to("cpu", torch.float64).reshape(-1)
        if ts.numel() < 2 or not bool(torch.isfinite(ts).all()) or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("an explicit grid must hold at least 2 finite, strictly decreasing times")
        if steps is not None and steps != ts.numel() - 1:
            raise ValueError(f"steps={steps} disagrees with the explicit grid of {ts.numel() - 1} intervals")
        for name, val, ref in (("t_start", t_start, ts[0]), ("t_end", t_end, ts[-1])):
            if val is not None and not math.isclose(val, float(ref), rel_tol=1e-12, abs_tol=1e-12):
                raise ValueError(f"{name}={val} disagrees with the explicit grid ({float(ref)})")
        t_start, t_end = float(ts[0]), float(ts[-1])
        steps = ts.numel() - 1
    else:
        if not isinstance(grid, str):
            raise ValueError(f"grid must be a grid name or a tensor of times, got {type(grid).__name__}")
        steps = DEFAULT_STEPS if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        t_start = hi if t_start is None else float(t_start)
        t_end = lo if t_end is None else float(t_end)
    if not t_end < t_start:
        raise ValueError(f"need t_end < t_start, got t_start={t_start}, t_end={t_end}")
    if t_start > hi + tol or t_end < lo - tol:
        raise ValueError(
            f"times must lie in the schedule's [t_min, t_max] = [{lo:g}, {hi:g}], got [{t_end}, {t_start}]"
        )
    return make_grid(grid, sch, steps, t_start, t_end)


def _with_callback(model, callback: Callback, ts: list[float]):
    """``model`` that calls ``callback(i, t_i, x, x0)`` on the first evaluation of each step i."""
    last = -1

    def model_cb(x: Tensor, t: Tensor, step: int | None = None) -> tuple[Tensor, Tensor]:
        nonlocal last
        x0, eps = model(x, t, step)
        if step is not None and step != last:
            last = step
            callback(step, ts[step], x, x0)
        return x0, eps

    return model_cb


def _make_done(guide, cond, times, trajectory, bar):
    """The per-step hook: project at the new time, record, advance the bar."""
    if guide is None and trajectory is None and bar is None:
        return lambda i, x: x

    def done(i: int, x: Tensor) -> Tensor:
        if guide is not None:
            x = guide.project(x, times[i + 1], cond)
        if trajectory is not None:
            trajectory.append(x)
        if bar is not None:
            bar.update()
        return x

    return done
