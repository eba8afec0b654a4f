"""The guides: energies, classifiers, classifier-free guidance, projections, and their combination.

User callables take the conditioning given to ``core.sample`` as keyword arguments, like the
network does: ``fn(x, t, **cond)`` (write ``def energy(x, t, **cond)`` to ignore it, or name
the keys it reads, e.g. ``def energy(x, t, mask, **cond)``).

Sign convention: an energy E(x, t) tilts the model's density by exp(-scale * E), so the score
gains -scale * grad_x E and the noise prediction eps = -sigma_t * score gains
+scale * sigma_t * grad_x E. A classifier's log-probability is a negative energy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .base import Guide

__all__ = [
    "Energy",
    "ClassifierGuidance",
    "ClassifierFree",
    "Inpaint",
    "Project",
    "Combined",
    "combine",
]


def _finite_scale(scale: float, name: str = "scale") -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {scale!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {scale!r}")
    return value


def _per_sample(c: Tensor, like: Tensor) -> Tensor:
    """A 0-d or (B,) tensor reshaped to broadcast against ``like`` of shape (B, ...)."""
    c = torch.as_tensor(c, device=like.device)
    return c.reshape(-1, *([1] * (like.dim() - 1))) if c.dim() else c


class Energy(Guide):
    """Energy guidance: score <- score - scale * grad_x E.

    Args:
        fn: ``fn(x, t, **cond) -> (B,)`` energy per sample; ``x`` of shape (B, ...), ``t`` a 0-d
            or (B,) tensor of continuous times, ``cond`` the conditioning given to the sampler.
        scale: guidance strength s (a finite number).
        on: ``"x_t"`` evaluates E on the noisy state; ``"x0"`` evaluates it on the denoised
            estimate x0(x_t) with the gradient taken through the network (the DPS form).
    """

    def __init__(self, fn: Callable[..., Tensor], scale: float = 1.0, on: str = "x_t") -> None:
        if on not in ("x_t", "x0"):
            raise ValueError(f"on must be 'x_t' or 'x0', got {on!r}")
        self.fn = fn
        self.scale = _finite_scale(scale)
        self.on = on
        self.needs_network_grad = on == "x0"

    def energy_grad(self, x: Tensor, t: Tensor, x0: Tensor, cond: dict | None = None) -> Tensor:
        """grad_x E, shape like x. With ``on="x0"``, ``x0`` must carry the graph from ``x``."""
        with torch.enable_grad():
            if self.on == "x0":
                wrt, arg = x, x0
            else:
                wrt = x.detach().requires_grad_(True)
                arg = wrt
            e = self.fn(arg, t, **(cond or {}))
            if not isinstance(e, Tensor) or e.shape != (x.shape[0],):
                shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
                raise ValueError(
                    f"energy must return one value per sample, shape ({x.shape[0]},); got {shape}"
                )
            (grad,) = torch.autograd.grad(e.sum(), wrt, retain_graph=self.on == "x0")
        return grad

    def correction(
        self, x: Tensor, t: Tensor, x0: Tensor, eps: Tensor, denoiser: Denoiser, cond: dict | None = None
    ) -> Tensor:
        _, sigma = denoiser.coefficients(x, t)
        return self.scale * sigma * self.energy_grad(x, t, x0, cond)


class ClassifierGuidance(Energy):
    """Classifier guidance: score <- score + scale * grad_x log p(c | x_t).

    ``log_prob_fn(x, t, **cond) -> (B,)`` is the (noisy) classifier's log-probability of the
    wanted class for each sample (the class may come from ``cond``). Scale 1 with the exact
    posterior samples the class-conditional law.
    """

    def __init__(self, log_prob_fn: Callable[..., Tensor], scale: float = 1.0, on: str = "x_t"):
        super().__init__(lambda x, t, **cond: -log_prob_fn(x, t, **cond), scale, on)


class ClassifierFree(Guide):
    """Classifier-free guidance: out = out_u + scale * (out_c - out_u), one batched network call.

    The conditional branch uses the ``cond`` given to the sampler; the unconditional one
    replaces each key of ``uncond`` (a tensor broadcastable to the conditional value, or a
    scalar such as the null class index). Scale 1 is the conditional model, 0 the unconditional.
    """

    def __init__(self, scale: float, uncond: dict[str, Tensor | float | int]) -> None:
        if not uncond:
            raise ValueError("uncond must name at least one conditioning input and its null value")
        self.scale = _finite_scale(scale)
        self.uncond = dict(uncond)

    def predict(self, denoiser: Denoiser, x: Tensor, t: Tensor, cond: dict) -> tuple[Tensor, Tensor]:
        missing = [k for k in self.uncond if k not in cond]
        if missing:
            raise ValueError(f"classifier-free guidance needs cond[{missing[0]!r}]; got keys {sorted(cond)}")
        both = {}
        for key, value in cond.items():
            if key in self.uncond and isinstance(value, Tensor):
                null = torch.as_tensor(self.uncond[key], dtype=value.dtype, device=value.device)
                both[key] = torch.cat([value, null.expand_as(value)])
            elif isinstance(value, Tensor) and value.dim() and value.shape[0] == x.shape[0]:
                both[key] = torch.cat([value, value])
            else:
                both[key] = value
        t = torch.as_tensor(t, device=x.device)
        t2 = torch.cat([t, t]) if t.dim() else t
        out_c, out_u = denoiser(torch.cat([x, x]), t2, **both).chunk(2)
        return denoiser.x0_eps_from(out_u + self.scale * (out_c - out_u), x, t)


class Project(Guide):
    """Apply ``fn(x, t, **cond) -> x`` to the state after every solver step (and to the initial
    state); ``cond`` is the conditioning given to the sampler."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn = fn

    def project(self, x: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        out = self.fn(x, t, **(cond or {}))
        if out.shape != x.shape:
            raise ValueError(
                f"projection changed the state's shape from {tuple(x.shape)} to {tuple(out.shape)}"
            )
        return out

    @classmethod
    def box(cls, low: float | Tensor, high: float | Tensor) -> Project:
        """Clamp every coordinate into [low, high]."""
        return cls(lambda x, t, **cond: torch.clamp(x, low, high))

    @classmethod
    def zero_mean(cls, dim: int | tuple[int, ...]) -> Project:
        """Remove the mean over ``dim`` (e.g. the centre of mass of a point cloud)."""
        return cls(lambda x, t, **cond: x - x.mean(dim=dim, keepdim=True))


class Inpaint(Guide):
    """Overwrite known entries with given values after every step (Diffuser's conditioning).

    Args:
        mask: bool tensor broadcastable to the state, True where the value is known.
        values: tensor broadcastable to the state holding the known values (clean data).

    The fixed entries are exact at every step. Overwriting with clean values is a heuristic
    for the free entries (the network sees the clean known part next to a noisy free part);
    for the exact conditional, add the energy -log p(known | x_t) (see the README).
    """

    def __init__(self, mask: Tensor, values: Tensor) -> None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, values.shape)
        except RuntimeError:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} and values shape {tuple(values.shape)} do not broadcast"
            ) from None
        self.mask = mask
        self.values = values

    def project(self, x: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        try:
            shape = torch.broadcast_shapes(x.shape, self.mask.shape, self.values.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"inpainting mask {tuple(self.mask.shape)} / values {tuple(self.values.shape)} "
                f"do not broadcast to the state's shape {tuple(x.shape)}"
            )
        return torch.where(self.mask.to(x.device), self.values.to(device=x.device, dtype=x.dtype), x)


class Combined(Guide):
    """Several guides at once; build it with :func:`combine`."""

    def __init__(
        self,
        guides: Sequence[Guide],
        weights: Sequence[float],
        windows: Sequence[tuple[float, float] | None],
        clip_norm: float | None,
    ) -> None:
        overriding = [g for g in guides if type(g).predict is not Guide.predict]
        if len(overriding) > 1:
            raise ValueError("at most one guide may replace the network call (e.g. one ClassifierFree)")
        self.guides = list(guides)
        self.weights = list(weights)
        self.windows = list(windows)
        self.clip_norm = clip_norm
        self._predictor = overriding[0] if overriding else None
        self.needs_network_grad = any(g.needs_network_grad for g in guides)

    def predict(self, denoiser: Denoiser, x: Tensor, t: Tensor, cond: dict):
        return None if self._predictor is None else self._predictor.predict(denoiser, x, t, cond)

    def correction(
        self, x: Tensor, t: Tensor, x0: Tensor, eps: Tensor, denoiser: Denoiser, cond: dict | None = None
    ) -> Tensor | None:
        total = None
        for guide, w, window in zip(self.guides, self.weights, self.windows, strict=True):
            delta = guide.correction(x, t, x0, eps, denoiser, cond)
            if delta is None:
                continue
            if self.clip_norm is not None:
                norm = delta.reshape(delta.shape[0], -1).norm(dim=1).clamp(min=1e-12)
                delta = delta * _per_sample((self.clip_norm / norm).clamp(max=1.0), delta)
            delta = w * delta
            if window is not None:
                tt = torch.as_tensor(t, device=x.device)
                inside = ((tt >= window[0]) & (tt <= window[1])).to(delta.dtype)
                delta = delta * _per_sample(inside, delta)
            total = delta if total is None else total + delta
        return total

    def project(self, x: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        for guide in self.guides:
            x = guide.project(x, t, cond)
        return x


def combine(
    *guides: Guide,
    weights: Sequence[float] | None = None,
    windows: Sequence[tuple[float, float] | None] | None = None,
    clip_norm: float | None = None,
) -> Combined:
    """Compose guides: corrections add (times ``weights``), projections apply in order.

    Args:
        guides: the guides; at most one may replace the network call (ClassifierFree).
        weights: one finite multiplier per guide's correction (default 1).
        windows: per guide, None (always on) or (a, b): the correction acts only for t in [a, b].
        clip_norm: if given, each guide's correction is rescaled per sample to norm <= clip_norm
            (before its weight).
    """
    if not guides or not all(isinstance(g, Guide) for g in guides):
        raise ValueError("combine needs one or more Guide instances")
    n = len(guides)
    weights = [1.0] * n if weights is None else [_finite_scale(w, "weight") for w in weights]
    windows = [None] * n if windows is None else list(windows)
    if len(weights) != n or len(windows) != n:
        raise ValueError(f"got {n} guides but {len(weights)} weights and {len(windows)} windows")
    for w in windows:
        if w is not None and not (len(w) == 2 and w[0] <= w[1]):
            raise ValueError(f"a time window must be (a, b) with a <= b, got {w!r}")
    if clip_norm is not None and not (_finite_scale(clip_norm, "clip_norm") > 0):
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    return Combined(guides, weights, windows, clip_norm)
