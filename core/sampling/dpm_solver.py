"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b): the exponential integrators
on the noise prediction (``dpm_solver``) and on the data prediction x0 (``dpm_solver++``).

Both have orders 1-3, multistep (NFE = steps) or singlestep (NFE = order * steps; 2S / 3S).
Order 1 of either is DDIM. Defaults: ``dpm_solver`` is third-order multistep (DPM-Solver-3M,
``core.sample``'s default method), ``dpm_solver++`` second-order multistep (2M), whose data
prediction stays bounded under strong guidance. ``corrected=True`` (third-order multistep only)
doubles the shipped D2 term, restoring third order; see :mod:`core.sampling._exponential` for
the update formulas and why the shipped form stays the default.
"""

from __future__ import annotations

from torch import Tensor

from . import _exponential
from .registry import SamplerContext, register

__all__ = ["dpm_solver", "dpm_solver_pp", "nfe"]


def nfe(steps: int, order: int, multistep: bool) -> int:
    """Network evaluations of DPM-Solver(++) for ``steps`` grid intervals."""
    return steps if multistep else order * steps


def _solve(ctx: SamplerContext, x: Tensor, data: bool, corrected: bool) -> Tensor:
    if corrected and not (ctx.multistep and ctx.order == 3):
        raise ValueError("corrected=True applies to the third-order multistep solver only")
    if ctx.multistep:
        return _exponential.multistep(ctx, x, data=data, corrected=corrected)
    return _exponential.singlestep(ctx, x, data=data)


_KINDS = dict(orders=(1, 2, 3), multistep=(False, True), default_multistep=True, nfe=nfe)


@register("dpm_solver", default_order=3, need="eps", **_KINDS)
def dpm_solver(ctx: SamplerContext, x: Tensor, *, corrected: bool = False) -> Tensor:
    """DPM-Solver (noise prediction)."""
    return _solve(ctx, x, data=False, corrected=corrected)


@register("dpm_solver++", default_order=2, need="x0", **_KINDS)
def dpm_solver_pp(ctx: SamplerContext, x: Tensor, *, corrected: bool = False) -> Tensor:
    """DPM-Solver++ (data prediction)."""
    return _solve(ctx, x, data=True, corrected=corrected)
