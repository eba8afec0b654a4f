"""DPM-Solver++ (Lu et al. 2022b): exponential integrator on the data prediction x0.

Orders 1-3: 2S / 3S singlestep (NFE = order * steps) and 2M / 3M multistep (NFE = steps;
the default is 2M). Order 1 is DDIM. See :mod:`core.sampling._exponential` for the formulas
and for ``corrected``, the third-order fix of the shipped 3M update (off by default: the
shipped form is only second order asymptotically but more accurate at NFE <= 50).
"""

from __future__ import annotations

from torch import Tensor

from . import _exponential
from .dpm_solver import check_corrected, nfe
from .registry import SamplerContext, register

__all__ = ["dpm_solver_pp"]


@register(
    "dpm_solver++",
    orders=(1, 2, 3),
    multistep=(False, True),
    default_order=2,
    default_multistep=True,
    nfe=nfe,
    need="x0",
)
def dpm_solver_pp(ctx: SamplerContext, x: Tensor, *, corrected: bool = False) -> Tensor:
    """DPM-Solver++ (data prediction); ``corrected`` fixes the shipped 3M D2 term."""
    check_corrected(ctx, corrected)
    if ctx.multistep:
        return _exponential.multistep(ctx, x, data=True, corrected=corrected)
    return _exponential.singlestep(ctx, x, data=True)
