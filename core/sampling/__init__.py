"""Samplers: one entry point, ``sample``, over a registry of plain solver functions.

Importing this package registers every built-in method (the imports below run the
``@register`` decorators).
"""

from . import analytic, consistency, ddpm, dpm_solver, ode, sde  # noqa: F401  (registration)
from .counting import CountingNet
from .grids import GRIDS, grid_names, make_grid
from .inversion import ddim_invert
from .registry import METHODS, Method, SamplerContext, gaussian_noise, get_method, method_names, register
from .sample import DEFAULT_GRID, DEFAULT_METHOD, DEFAULT_STEPS, sample

__all__ = [
    "sample",
    "ddim_invert",
    "gaussian_noise",
    "CountingNet",
    "register",
    "get_method",
    "method_names",
    "grid_names",
    "make_grid",
    "METHODS",
    "GRIDS",
    "Method",
    "SamplerContext",
    "DEFAULT_METHOD",
    "DEFAULT_GRID",
    "DEFAULT_STEPS",
]
