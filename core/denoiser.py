"""The Denoiser: one network, every parameterisation.

A network ``net(x, t_model, **cond)`` predicts one of ``eps | x0 | v | score | velocity`` for the
state x_t = alpha(t) x_0 + sigma(t) eps. The Denoiser converts it, by exact closed forms
written once here, into all the others:

- eps      = (x - alpha x0) / sigma
- v        = alpha eps - sigma x0                      (Salimans & Ho)
- score    = -eps / sigma                              (grad log q_t(x))
- velocity = alpha'(t) x0 + sigma'(t) eps               (probability-flow ODE drift dx/dt)

so a flow-matching model (``LinearSchedule``, velocity prediction) runs through every
diffusion sampler and a diffusion model through every flow ODE solver.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .schedules import NoiseSchedule

__all__ = ["Denoiser", "PREDICTIONS", "dynamic_threshold"]

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")


def dynamic_threshold(x0: Tensor, percentile: float = 0.995, max_value: float = 1.0) -> Tensor:
    """Imagen's dynamic thresholding of x0, per sample: s = clamp(quantile(|x0|, p), 1, max_value),
    x0 <- clamp(x0, -s, s) / s. Shape preserved. Meant for images in [-1, 1]."""
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.float(), percentile, dim=1).to(x0.dtype).clamp(min=1.0, max=max_value)
    s = s.reshape(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _bcast(c: Tensor, x: Tensor) -> Tensor:
    """Coefficient of shape () or (B,) -> shape broadcastable against x (B, ...)."""
    return c.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype) if c.dim() else c.to(x.dtype)


class Denoiser(nn.Module):
    """Wraps ``net`` under ``schedule``; ``prediction`` names what the network outputs.

    Args:
        net: module called as ``net(x, t_model, **cond)`` with x of shape (B, ...), t_model of
            shape (B,) (``schedule.model_time(t)``), returning a tensor shaped like x.
        schedule: the noise schedule the network was trained under.
        prediction: one of ``eps | x0 | v | score | velocity``.
        thresholding: optional callable applied to x0 (e.g. :func:`dynamic_threshold`); off by
            default, since clipping ruins non-image data.
    """

    def __init__(
        self,
        net: nn.Module | Callable[..., Tensor],
        schedule: NoiseSchedule,
        prediction: str = "eps",
        thresholding: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.thresholding = thresholding

    # --- time handling -----------------------------------------------------------------
    def _time(self, x: Tensor, t: float | Tensor) -> Tensor:
        """t as float64 of shape (B,) on x's device."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.dim() == 0:
            return t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t.to(torch.float64)

    def coefficients(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) at t, broadcastable against x, in x's dtype."""
        tt = self._time(x, t)
        return _bcast(self.schedule.alpha(tt), x), _bcast(self.schedule.sigma(tt), x)

    def forward(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """The raw network output at continuous time t, shape like x."""
        tt = self._time(x, t)
        t_model = self.schedule.model_time(tt).to(x.dtype if x.is_floating_point() else torch.float32)
        out = self.net(x, t_model, **cond)
        if out.shape != x.shape:
            raise ValueError(
                f"network output shape {tuple(out.shape)} differs from its input shape {tuple(x.shape)}"
            )
        return out

    # --- conversions -------------------------------------------------------------------
    def x0_eps_from(self, out: Tensor, x: Tensor, t: float | Tensor, prediction: str | None = None):
        """Convert a raw prediction ``out`` (of kind ``prediction``) into (x0, eps), exactly."""
        kind = prediction or self.prediction
        a, s = self.coefficients(x, t)
        if kind == "eps":
            eps = out
            x0 = (x - s * eps) / a
        elif kind == "x0":
            x0 = out
            eps = (x - a * x0) / s
        elif kind == "v":
            norm = a * a + s * s
            x0 = (a * x - s * out) / norm
            eps = (s * x + a * out) / norm
        elif kind == "score":
            eps = -s * out
            x0 = (x - s * eps) / a
        elif kind == "velocity":
            da, ds = self.schedule.derivatives(self._time(x, t))
            da, ds = _bcast(da, x), _bcast(ds, x)
            det = a * ds - s * da
            x0 = (ds * x - s * out) / det
            eps = (a * out - da * x) / det
        else:
            raise ValueError(f"unknown prediction {kind!r}; expected one of {PREDICTIONS}")
        if self.thresholding is not None:
            x0 = self.thresholding(x0)
            eps = (x - a * x0) / s
        return x0, eps

    def x0_eps(self, x: Tensor, t: float | Tensor, **cond) -> tuple[Tensor, Tensor]:
        """(x0, eps) predictions at (x, t), each shaped like x."""
        return self.x0_eps_from(self(x, t, **cond), x, t)

    def eps(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """Noise prediction, shape like x."""
        return self.x0_eps(x, t, **cond)[1]

    def x0(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """Data prediction E[x_0 | x_t], shape like x."""
        return self.x0_eps(x, t, **cond)[0]

    def v(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """v-prediction alpha eps - sigma x0, shape like x."""
        x0, eps = self.x0_eps(x, t, **cond)
        a, s = self.coefficients(x, t)
        return a * eps - s * x0

    def score(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """Score grad_x log q_t(x) = -eps / sigma, shape like x."""
        _, s = self.coefficients(x, t)
        return -self.eps(x, t, **cond) / s

    def velocity(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """Probability-flow ODE drift dx/dt = alpha'(t) x0 + sigma'(t) eps, shape like x."""
        x0, eps = self.x0_eps(x, t, **cond)
        da, ds = self.schedule.derivatives(self._time(x, t))
        return _bcast(da, x) * x0 + _bcast(ds, x) * eps
