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


class _CachedTime:
    """Schedule values at one cached time (see :meth:`Denoiser.cache_times`)."""

    __slots__ = ("t", "t_model", "dtype", "ndim", "values", "mix", "scales", "_tensors")

    def __init__(self, t: Tensor, t_model: Tensor, like: Tensor, values: list[float], mix, scales) -> None:
        self.t, self.t_model, self.dtype, self.ndim = t, t_model, like.dtype, like.dim()
        self.values = values  # alpha, sigma, alpha', sigma' (python floats, float64)
        self.mix = mix  # see _mix
        self.scales = scales  # mix[0], mix[2] as 0-d tensors; None where the output passes through
        self._tensors: tuple[Tensor, ...] | None = None

    def convert(self, x: Tensor, out: Tensor, need: str = "both") -> tuple[Tensor | None, Tensor | None]:
        """(x0, eps) from the raw prediction ``out`` at this time: at most four tensor ops.

        ``need="x0"`` or ``"eps"`` skips the other conversion (returned as None). A 0-d tensor
        scale is about twice as fast as a Python scalar on CPU (no wrapped number).
        """
        s0, s2 = self.scales
        x0 = eps = None
        if need != "eps":
            x0 = out if s0 is None else (x * s0).add_(out, alpha=self.mix[1])
        if need != "x0":
            eps = out if s2 is None else (x * s2).add_(out, alpha=self.mix[3])
        return x0, eps

    def tensors(self, x: Tensor) -> tuple[Tensor, ...]:
        """(alpha, sigma, alpha', sigma') as tensors shaped (B, 1, ..., 1) in x's dtype, built once."""
        if self._tensors is None:
            v = torch.tensor(self.values, dtype=x.dtype, device=x.device)
            shape = (x.shape[0], *([1] * (x.dim() - 1)))
            self._tensors = tuple(c.expand(shape) for c in v.reshape(4, *([1] * x.dim())).unbind(0))
        return self._tensors


def _mix(kind: str, a: float, s: float, da: float, ds: float) -> tuple[float, float, float, float]:
    """(x0, eps) = (m0 x + m1 out, m2 x + m3 out) for a raw prediction ``out`` of ``kind``."""
    if kind == "eps":
        return 1.0 / a, -s / a, 0.0, 1.0
    if kind == "x0":
        return 0.0, 1.0, 1.0 / s, -a / s
    if kind == "v":
        n = a * a + s * s
        return a / n, -s / n, s / n, a / n
    if kind == "score":
        return 1.0 / a, s * s / a, 0.0, -s
    det = a * ds - s * da  # velocity
    return ds / det, -s / det, -da / det, a / det


def _time_dtype(x: Tensor) -> torch.dtype:
    """The network's time-input dtype: x's float dtype, at least float32."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


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
        self._time_cache: dict[int, _CachedTime] = {}

    # --- time handling -----------------------------------------------------------------
    def _time(self, x: Tensor, t: float | Tensor) -> Tensor:
        """t as float64 of shape (B,) on x's device."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.dim() == 0:
            return t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t.to(torch.float64)

    def cache_times(self, t: Tensor, like: Tensor, values: tuple[Tensor, ...] | None = None) -> list[Tensor]:
        """Precompute the schedule at times ``t`` (K,) for states shaped like ``like`` (B, ...).

        Returns K time tensors, each (B,) float64. Calls made with exactly these tensor objects
        (``forward``, ``coefficients``, ``x0_eps``, ...) and a state of ``like``'s dtype and rank
        read alpha, sigma, their derivatives and the network's time input from the cache instead
        of evaluating the schedule, so a sampler's per-step cost is the network plus a few tensor
        ops. Results are identical up to rounding. Free them with :meth:`release_times`.
        ``values`` optionally passes ``schedule.values(t)`` when the caller has it already.
        """
        t64 = torch.as_tensor(t, dtype=torch.float64, device=like.device).reshape(-1)
        k, b = t64.numel(), like.shape[0]
        sch = self.schedule
        a, s, _, da, ds = sch.values(t64) if values is None else values
        values = torch.stack([a, s, da, ds], 1).tolist()
        times = t64.reshape(k, 1).expand(k, b).unbind(0)
        t_model = sch.model_time(t64).to(_time_dtype(like)).reshape(k, 1).expand(k, b).unbind(0)
        mixes = [_mix(self.prediction, *v) for v in values]
        scales = []
        for j in (0, 2):  # the x coefficient of x0 and of eps; None where the output passes through
            through = all(m[j] == 0.0 and m[j + 1] == 1.0 for m in mixes)
            col = torch.tensor([m[j] for m in mixes], dtype=like.dtype, device=like.device)
            scales.append([None] * k if through else col.unbind(0))
        cache = self._time_cache
        for i, (tk, tm, v, m) in enumerate(zip(times, t_model, values, mixes, strict=True)):
            cache[id(tk)] = _CachedTime(tk, tm, like, v, m, (scales[0][i], scales[1][i]))
        return list(times)

    def release_times(self, times: list[Tensor]) -> None:
        """Forget the cached times returned by :meth:`cache_times`."""
        cache = self._time_cache
        for tk in times:
            c = cache.get(id(tk))
            if c is not None and c.t is tk:
                del cache[id(tk)]

    def _cached(self, x: Tensor, t: float | Tensor) -> _CachedTime | None:
        if not self._time_cache:
            return None
        c = self._time_cache.get(id(t))
        if c is not None and c.t is t and c.dtype == x.dtype and c.ndim == x.dim():
            return c
        return None

    def coefficients(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) at t, broadcastable against x, in x's dtype."""
        c = self._cached(x, t)
        if c is not None:
            return c.tensors(x)[:2]
        tt = self._time(x, t)
        return _bcast(self.schedule.alpha(tt), x), _bcast(self.schedule.sigma(tt), x)

    def _derivatives(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        c = self._cached(x, t)
        if c is not None:
            return c.tensors(x)[2:]
        da, ds = self.schedule.derivatives(self._time(x, t))
        return _bcast(da, x), _bcast(ds, x)

    def forward(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        """The raw network output at continuous time t, shape like x.

        The network's time input ``schedule.model_time(t)`` has x's dtype, but at least float32
        (a bfloat16 step index 999 would round to 1000).
        """
        c = self._cached(x, t)
        if c is not None:
            t_model = c.t_model
        else:
            t_model = self.schedule.model_time(self._time(x, t)).to(_time_dtype(x))
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
        c = self._cached(x, t)
        if c is not None and kind == self.prediction and self.thresholding is None:
            return c.convert(x, out)
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
            da, ds = self._derivatives(x, t)
            det = a * ds - s * da
            x0 = (ds * x - s * out) / det
            eps = (a * out - da * x) / det
        else:
            raise ValueError(f"unknown prediction {kind!r}; expected one of {PREDICTIONS}")
        if self.thresholding is not None:
            x0 = self.thresholding(x0)
            eps = (x - a * x0) / s
        return x0, eps

    def x0_eps(self, x: Tensor, t: float | Tensor, need: str = "both", **cond) -> tuple[Tensor, Tensor]:
        """(x0, eps) predictions at (x, t), each shaped like x.

        At a cached time (:meth:`cache_times`) the network is called directly (no Denoiser-level
        module hooks) and converted with precomputed scalars: two tensor ops. There, ``need``
        (``"x0"`` or ``"eps"``) lets a sampler skip the conversion it does not use: that entry
        is then None.
        """
        if need not in ("both", "x0", "eps"):
            raise ValueError(f"need must be 'both', 'x0' or 'eps', got {need!r}")
        c = self._cached(x, t)
        if c is None or self.thresholding is not None:
            return self.x0_eps_from(self(x, t, **cond), x, t)
        out = self.net(x, c.t_model, **cond)
        if out.shape != x.shape:
            raise ValueError(
                f"network output shape {tuple(out.shape)} differs from its input shape {tuple(x.shape)}"
            )
        return c.convert(x, out, need)

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
        da, ds = self._derivatives(x, t)
        return da * x0 + ds * eps
