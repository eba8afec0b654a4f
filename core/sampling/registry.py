"""The sampler registry and the context every sampler function receives.

A sampler is a plain function registered under a name::

    @register("my_method", orders=(1, 2), multistep=(False,), nfe=lambda steps, order, multistep: steps)
    def my_method(ctx: SamplerContext, x: Tensor, *, my_option: float = 1.0) -> Tensor:
        ...

Its signature is ``fn(ctx, x, **options) -> Tensor``:

- ``ctx`` (:class:`SamplerContext`): the guided model, the grid and its float64 schedule values,
  the chosen order / multistep / lower-order-final policy, the generator, and ``ctx.done``;
- ``x``: the initial state at ``ctx.ts[0]`` (already projected by the guide), shape (B, ...);
- ``options``: keyword-only parameters with defaults, the method's own knobs (``eta`` for DDIM,
  ``variance`` for DDPM, ...). ``core.sample`` forwards its extra keyword arguments to them and
  rejects unknown ones; ``eta`` is forwarded only to methods that declare it.

It returns the state at ``ctx.ts[-1]``. The contract:

- compute every coefficient once, before the loop, vectorised in float64 from ``ctx.alpha /
  ctx.sigma / ctx.lam`` (or the schedule), then turn each per-step vector into Python floats
  with :meth:`SamplerContext.scalars` and use them as op scalars (``torch.add(x, y, alpha=c)``,
  ``x * c``), or into 0-d tensors with :meth:`SamplerContext.per_step`;
- call the network only as ``x0, eps = ctx.model(x, ctx.times[i], i)`` (``ctx.times`` are cached
  grid times; intermediate times come from :meth:`SamplerContext.cache_times`);
- after step i (i = 0 .. steps - 1) call ``x = ctx.done(i, x)``: it projects the state onto the
  guide's constraints, records the trajectory and advances the progress bar;
- no ``.item()``, ``float(tensor)`` or Python branching on tensor values inside the loop;
- draw noise only with :meth:`SamplerContext.noise` (it honours ``generator`` and the caller's
  ``noise_fn``).

The first ``ctx.model`` call of step i must be at the state at ``ctx.ts[i]`` and pass ``i``:
``core.sample``'s per-step callback reports that state and its denoised estimate.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import NoiseSchedule

__all__ = [
    "SamplerContext",
    "Method",
    "register",
    "get_method",
    "METHODS",
    "method_names",
    "gaussian_noise",
]

ModelFn = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]
NoiseFn = Callable[..., Tensor]


def gaussian_noise(like: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
    """The default ``noise_fn``: i.i.d. standard normal noise shaped like ``like`` (its dtype and
    device), drawn with ``generator``; ``cond`` is ignored.

    A custom ``noise_fn(like, generator, **cond) -> Tensor`` returns noise of the same shape,
    dtype and device (e.g. zero centre of mass, masked entries, correlated across frames); only
    ``like``'s shape, dtype and device may be used, not its values.
    """
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


@dataclass
class SamplerContext:
    """Everything a sampler needs; built by ``core.sample``.

    Attributes:
        model: the guided prediction ``model(x, t, step) -> (x0, eps)``, each shaped like x.
        denoiser: the wrapped model (for schedule-level information only; call ``model``).
        schedule: its noise schedule.
        ts: grid times, shape (steps + 1,), float64, strictly decreasing, on x's device.
        times: ``steps + 1`` cached time tensors, each (B,) float64, for ``model`` calls at the grid.
        alpha, sigma, lam: schedule values on the grid, each (steps + 1,), float64.
        dalpha, dsigma: their time derivatives on the grid, each (steps + 1,), float64.
        order, multistep, lower_order_final: the solver configuration (validated).
        generator: the random generator for stochastic methods (or None).
        dtype: the state dtype (x_T's); coefficients are cast to it.
        noise_fn: ``noise_fn(like, generator, **cond)``, the noise every stochastic step adds.
        cond: the conditioning given to ``core.sample`` (passed to ``noise_fn``).
    """

    model: ModelFn
    denoiser: Denoiser
    schedule: NoiseSchedule
    ts: Tensor
    times: list[Tensor]
    alpha: Tensor
    sigma: Tensor
    lam: Tensor
    dalpha: Tensor
    dsigma: Tensor
    order: int
    multistep: bool
    lower_order_final: bool
    generator: torch.Generator | None
    dtype: torch.dtype
    done: Callable[[int, Tensor], Tensor]
    _like: Tensor = field(repr=False)
    noise_fn: NoiseFn = gaussian_noise
    cond: dict = field(default_factory=dict)
    _cached: list[Tensor] = field(default_factory=list, repr=False)

    @property
    def steps(self) -> int:
        """Number of grid intervals."""
        return self.ts.numel() - 1

    def scalars(self, c: Tensor) -> list[float]:
        """A float64 coefficient vector (K,) -> K Python floats (float64), the fastest op scalars.

        Tensor ops cast a Python scalar to the state dtype inside the kernel, so no per-step
        indexing, cast or host-device transfer happens in the loop; the one transfer is here.
        """
        return c.tolist()

    def per_step(self, c: Tensor) -> list[Tensor]:
        """A float64 coefficient vector (K,) -> K 0-d tensors in the state dtype (for tensor-only
        ops such as ``torch.addcmul``; :meth:`scalars` is cheaper where a Python scalar works)."""
        return list(c.to(self.dtype).unbind())

    def cache_times(self, t: Tensor, values: tuple[Tensor, ...] | None = None) -> list[Tensor]:
        """Cached model times for extra (off-grid) points ``t`` (K,) float64, e.g. singlestep stages;
        ``values`` = ``schedule.values(t)`` if already computed."""
        out = self.denoiser.cache_times(t, self._like, values)
        self._cached.extend(out)
        return out

    def noise(self) -> Tensor:
        """Noise shaped like the state from ``noise_fn`` (default i.i.d. standard normal), drawn
        with ``generator``."""
        like = self._like
        if self.noise_fn is gaussian_noise:
            return gaussian_noise(like, self.generator)
        z = self.noise_fn(like, self.generator, **self.cond)
        ok = isinstance(z, Tensor) and (z.shape, z.dtype, z.device) == (like.shape, like.dtype, like.device)
        if not ok:
            got = (tuple(z.shape), z.dtype, str(z.device)) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"noise_fn must return a tensor of shape {tuple(like.shape)}, dtype {like.dtype} on "
                f"{like.device}; got {got}"
            )
        return z


SamplerFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Method:
    """A registered sampler and what it supports."""

    name: str
    fn: SamplerFn
    orders: tuple[int, ...]
    multistep: tuple[bool, ...]
    default_order: int
    default_multistep: bool
    nfe: Callable[[int, int, bool], int]
    options: dict[str, object]
    need: str = "both"


METHODS: dict[str, Method] = {}


def register(
    name: str,
    *,
    orders: tuple[int, ...] = (1,),
    multistep: tuple[bool, ...] = (False,),
    default_order: int | None = None,
    default_multistep: bool | None = None,
    nfe: Callable[[int, int, bool], int] | None = None,
    need: str = "both",
) -> Callable[[SamplerFn], SamplerFn]:
    """Register ``fn(ctx, x, **options) -> Tensor`` under ``name`` (see the module docstring).

    Args:
        orders: the orders the method supports (``core.sample(order=...)``).
        multistep: the supported values of ``multistep``.
        default_order, default_multistep: used when the caller passes None (default: the first).
        nfe: network evaluations as a function of (steps, order, multistep); default ``steps``.
        need: ``"x0"`` or ``"eps"`` when the sampler reads only that half of ``ctx.model``'s
            output (without a guide the other half may then be None); default ``"both"``.
    """
    if need not in ("both", "x0", "eps"):
        raise ValueError(f"need must be 'both', 'x0' or 'eps', got {need!r}")
    if name in METHODS:
        raise ValueError(f"a sampler named {name!r} is already registered")

    def deco(fn: SamplerFn) -> SamplerFn:
        params = list(inspect.signature(fn).parameters.values())[2:]
        bad = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is p.empty]
        if bad:
            raise TypeError(f"sampler {name!r}: options {bad} must be keyword-only with defaults")
        METHODS[name] = Method(
            name=name,
            fn=fn,
            orders=tuple(orders),
            multistep=tuple(multistep),
            default_order=orders[0] if default_order is None else default_order,
            default_multistep=multistep[0] if default_multistep is None else default_multistep,
            nfe=nfe or (lambda steps, order, multistep: steps),
            options={p.name: p.default for p in params},
            need=need,
        )
        return fn

    return deco


def method_names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; a ValueError lists the valid names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown sampling method {name!r}; expected one of {method_names()}")
    return METHODS[name]
