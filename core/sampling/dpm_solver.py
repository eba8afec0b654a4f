"""DPM-Solver (Lu et al. 2022a): exponential integrator on the noise prediction.

Orders 1-3, multistep (NFE = steps; default order 3, i.e. DPM-Solver-3M, ``core.sample``'s
default) or singlestep (NFE = order * steps).
Order 1 is DDIM. See :mod:`core.sampling._exponential` for the update formulas.
"""

from __future__ import annotations

from torch import Tensor

from . import _exponential
from .registry import SamplerContext, register

__all__ = ["dpm_solver"]


def nfe(steps: int, order: int, multistep: bool) -> int:
    """Network evaluations of DPM-Solver(++) for ``steps`` grid intervals."""
    return steps if multistep else order * steps


def check_corrected(ctx: SamplerContext, corrected: bool) -> None:
    if corrected and not (ctx.multistep and ctx.order == 3):
        raise ValueError("corrected=True applies to the third-order multistep solver only")


@register(
    "dpm_solver",
    orders=(1, 2, 3),
    multistep=(False, True),
    default_order=3,
    default_multistep=True,
    nfe=nfe,
    need="eps",
)
def dpm_solver(ctx: SamplerContext, x: Tensor, *, corrected: bool = False) -> Tensor:
    """DPM-Solver (noise prediction); ``corrected`` fixes the shipped 3rd-order multistep D2 term."""
    check_corrected(ctx, corrected)
    if ctx.multistep:
        return _exponential.multistep(ctx, x, data=False, corrected=corrected)
    return _exponential.singlestep(ctx, x, data=False)
