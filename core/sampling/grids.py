"""Time grids: ``steps + 1`` strictly decreasing times from t_start to t_end, float64.

- ``time_uniform``: uniform in t.
- ``logsnr``: uniform in lambda = log(alpha / sigma) (DPM-Solver's ``logSNR``).
- ``time_quadratic``: uniform in sqrt(t), denser near t_end (DPM-Solver's ``time_quadratic``).
- ``karras``: EDM's rho = 7 spacing of sigma / alpha = exp(-lambda) (Karras et al. 2022).

Every grid is built in float64 through the schedule's exact ``log_snr`` / ``t_of_log_snr`` and
its end points are exactly t_start and t_end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..schedules import NoiseSchedule

__all__ = ["GRIDS", "grid_names", "make_grid", "KARRAS_RHO"]

KARRAS_RHO = 7.0


def _time_uniform(sch: NoiseSchedule, steps: int, t0: float, t1: float) -> Tensor:
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64)


def _logsnr(sch: NoiseSchedule, steps: int, t0: float, t1: float) -> Tensor:
    lam = torch.linspace(float(sch.log_snr(t0)), float(sch.log_snr(t1)), steps + 1, dtype=torch.float64)
    return sch.t_of_log_snr(lam)


def _time_quadratic(sch: NoiseSchedule, steps: int, t0: float, t1: float) -> Tensor:
    return torch.linspace(t0**0.5, t1**0.5, steps + 1, dtype=torch.float64) ** 2


def _karras(sch: NoiseSchedule, steps: int, t0: float, t1: float) -> Tensor:
    # (sigma / alpha)^(1 / rho) = exp(-lambda / rho), uniform between the end points.
    ends = torch.stack([sch.log_snr(t0), sch.log_snr(t1)]).to(torch.float64)
    hi, lo = torch.exp(-ends / KARRAS_RHO).tolist()
    ramp = torch.linspace(hi, lo, steps + 1, dtype=torch.float64)
    return sch.t_of_log_snr(-KARRAS_RHO * ramp.log())


GRIDS: dict[str, Callable[[NoiseSchedule, int, float, float], Tensor]] = {
    "time_uniform": _time_uniform,
    "logsnr": _logsnr,
    "time_quadratic": _time_quadratic,
    "karras": _karras,
}


def grid_names() -> list[str]:
    """The grid names ``core.sample(grid=...)`` accepts."""
    return list(GRIDS)


def make_grid(
    grid: str | Tensor,
    schedule: NoiseSchedule,
    steps: int,
    t_start: float,
    t_end: float,
) -> Tensor:
    """The grid's times, shape (steps + 1,), float64 on the CPU, from t_start down to t_end.

    ``grid`` is a name from :data:`GRIDS` or an explicit tensor of decreasing times (then
    ``steps``, ``t_start`` and ``t_end`` must agree with it; :func:`core.sample` checks).
    """
    if isinstance(grid, Tensor):
        return grid.detach().to("cpu", torch.float64).reshape(-1)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; expected one of {grid_names()} or a tensor of times")
    ts = GRIDS[grid](schedule, steps, float(t_start), float(t_end)).clone()
    ts[0], ts[-1] = t_start, t_end
    return ts
