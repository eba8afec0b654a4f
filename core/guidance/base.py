"""The guide contract shared by every sampler.

A guide changes the model's prediction (an additive correction in noise space, i.e. a score
correction: eps <- eps + delta is score <- score - delta / sigma_t), may replace the network
call itself (classifier-free guidance), and may project the state after every solver step
(inpainting, fixed start/goal states, zero centre of mass, box constraints).

Samplers never look inside a guide: they build ``fn = model_fn(denoiser, guide, cond)`` once
and call ``x0, eps = fn(x, t, step)`` for every network evaluation and
``x = guide.project(x, t, cond)`` after every step (and once on the initial state). So every
solver is guided, identically, for free.

Every hook receives ``cond``, the conditioning dict given to ``core.sample`` (the same keyword
arguments the network gets as ``net(x, t, **cond)``), so a mask, a target or a class label
reaches an energy or a projection without closures. The user callables of the built-in guides
follow the network's convention: ``fn(x, t, **cond)``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from ..denoiser import Denoiser

__all__ = ["Guide", "model_fn", "GuidanceError"]


class GuidanceError(FloatingPointError):
    """A guide produced a non-finite correction."""


class Guide:
    """Base class; every hook defaults to "do nothing".

    Attributes:
        needs_network_grad: True when :meth:`correction` differentiates through the network's
            prediction (energies on the denoised estimate x0(x_t)); the network call then runs
            with autograd enabled on x.
    """

    needs_network_grad: bool = False

    def predict(self, denoiser: Denoiser, x: Tensor, t: Tensor, cond: dict) -> tuple[Tensor, Tensor] | None:
        """Replace the network call: return (x0, eps), each shaped like x, or None to keep it."""
        return None

    def correction(
        self, x: Tensor, t: Tensor, x0: Tensor, eps: Tensor, denoiser: Denoiser, cond: dict | None = None
    ) -> Tensor | None:
        """Additive noise-space correction delta (shape like x), or None for none."""
        return None

    def project(self, x: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        """Map the state after a solver step onto the constraint set (identity by default)."""
        return x


def model_fn(
    denoiser: Denoiser, guide: Guide | None = None, cond: dict | None = None, need: str = "both"
) -> Callable[..., tuple[Tensor, Tensor]]:
    """The guided prediction ``fn(x, t, step=None) -> (x0, eps)`` that samplers call.

    ``t`` is a 0-d or (B,) tensor of continuous times. No autograd graph survives the call:
    memory stays flat over the number of steps. A non-finite correction raises
    :class:`GuidanceError` naming the step and time. ``need`` (``"x0"`` or ``"eps"``) tells an
    unguided model which of the two the sampler uses, so the other may be returned as None.
    """
    cond = dict(cond or {})
    if guide is None:

        def plain(x: Tensor, t: Tensor, step: int | None = None) -> tuple[Tensor, Tensor]:
            return denoiser.x0_eps(x, t, need, **cond)

        return plain

    def guided(x: Tensor, t: Tensor, step: int | None = None) -> tuple[Tensor, Tensor]:
        grad_ctx = torch.enable_grad() if guide.needs_network_grad else nullcontext()
        with grad_ctx:
            xg = x.detach().requires_grad_(guide.needs_network_grad)
            pred = guide.predict(denoiser, xg, t, cond)
            x0, eps = pred if pred is not None else denoiser.x0_eps(xg, t, **cond)
            delta = guide.correction(xg, t, x0, eps, denoiser, cond)
        x0, eps = x0.detach(), eps.detach()
        if delta is None:
            return x0, eps
        delta = delta.detach()
        if not bool(torch.isfinite(delta).all()):
            tv = float(torch.as_tensor(t).reshape(-1)[0])
            where = f"step {step}, t = {tv:.6g}" if step is not None else f"t = {tv:.6g}"
            raise GuidanceError(f"guidance produced a non-finite correction at {where}")
        a, s = denoiser.coefficients(x, t)
        return x0 - (s / a) * delta, eps + delta

    return guided
