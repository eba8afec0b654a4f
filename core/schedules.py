"""Noise schedules: the marginal x_t = alpha(t) x_0 + sigma(t) eps of every model family.

Continuous time t lies in [t_min, t_max]. Every schedule gives ``alpha``, ``sigma``, the
half log-SNR ``log_snr`` (lambda = log alpha - log sigma, decreasing in t) and its inverse
``t_of_log_snr``. Functions accept a float or a tensor of any shape and return a tensor of
the same shape; they compute in float64 and return the input's floating dtype (float64 for
a python float), so coefficients precomputed for a sampler are exact to double precision.

Discrete-time models (DDPM with integer steps 0..N-1) map onto continuous time in one place,
:meth:`VPSchedule.discrete`: step n sits at t_n = (n + 1) / N, log alpha is interpolated
piecewise-linearly in t between steps, and ``model_time(t) = N t - 1`` returns the (float)
step index the network was trained with.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = [
    "NoiseSchedule",
    "VPSchedule",
    "VESchedule",
    "LinearSchedule",
    "linear_betas",
    "cosine_betas",
]


def _as_f64(t: float | Tensor) -> tuple[Tensor, torch.dtype]:
    if isinstance(t, Tensor):
        out_dtype = t.dtype if t.is_floating_point() else torch.float64
        return t.to(torch.float64), out_dtype
    return torch.tensor(float(t), dtype=torch.float64), torch.float64


class NoiseSchedule(ABC):
    """Base class. Subclasses implement ``_log_alpha``, ``_log_sigma`` and ``_t_of_log_snr`` in float64."""

    t_min: float
    t_max: float

    @abstractmethod
    def _log_alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _log_sigma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _t_of_log_snr(self, lam: Tensor) -> Tensor: ...

    def log_alpha(self, t: float | Tensor) -> Tensor:
        t64, dt = _as_f64(t)
        return self._log_alpha(t64).to(dt)

    def alpha(self, t: float | Tensor) -> Tensor:
        """Signal scale alpha(t), same shape as ``t``."""
        t64, dt = _as_f64(t)
        return self._log_alpha(t64).exp().to(dt)

    def sigma(self, t: float | Tensor) -> Tensor:
        """Noise scale sigma(t), same shape as ``t``."""
        t64, dt = _as_f64(t)
        return self._log_sigma(t64).exp().to(dt)

    def log_snr(self, t: float | Tensor) -> Tensor:
        """Half log signal-to-noise ratio lambda(t) = log(alpha / sigma), decreasing in t."""
        t64, dt = _as_f64(t)
        return (self._log_alpha(t64) - self._log_sigma(t64)).to(dt)

    def t_of_log_snr(self, lam: float | Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`."""
        lam64, dt = _as_f64(lam)
        return self._t_of_log_snr(lam64).to(dt)

    def model_time(self, t: Tensor) -> Tensor:
        """The time input the network was trained with (identity for continuous-time models)."""
        return t

    def _dlog(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(d log alpha / dt, d log sigma / dt) in float64; exact autograd unless overridden."""
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            la, ls = self._log_alpha(tt), self._log_sigma(tt)
            dla, dls = (
                torch.autograd.grad(
                    v.sum(), tt, retain_graph=True, allow_unused=True, materialize_grads=True
                )[0]
                for v in (la, ls)
            )
        return dla, dls

    def derivatives(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """(d alpha / dt, d sigma / dt) at ``t``, same shape as ``t``, in closed form (float64)."""
        t64, dt = _as_f64(t)
        dla, dls = self._dlog(t64)
        return (dla * self._log_alpha(t64).exp()).to(dt), (dls * self._log_sigma(t64).exp()).to(dt)

    def values(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(alpha, sigma, lambda, d alpha / dt, d sigma / dt) at ``t`` in float64, in one pass.

        What a sampler precomputes on its grid; same shape as ``t``.
        """
        t64 = torch.as_tensor(t, dtype=torch.float64)
        la, ls = self._log_alpha(t64), self._log_sigma(t64)
        dla, dls = self._dlog(t64)
        a, s = la.exp(), ls.exp()
        return a, s, la - ls, dla * a, dls * s

    def prior_std(self) -> float:
        """Standard deviation of x at t_max when x_0 is ignored (the sampler's starting noise)."""
        return float(self.sigma(self.t_max))

    def sample_t(
        self, n: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Training times, shape (n,), float32: uniform on [t_min, t_max]."""
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return (self.t_min + (self.t_max - self.t_min) * u).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_min={self.t_min:g}, t_max={self.t_max:g})"


def _log_sigma_vp(log_alpha: Tensor) -> Tensor:
    # sigma = sqrt(1 - alpha^2), accurate for alpha -> 1 (expm1) and alpha -> 0.
    return 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))


def _log_alpha_vp_of_log_snr(lam: Tensor) -> Tensor:
    # alpha^2 = sigmoid(2 lambda)  =>  log alpha = -0.5 * softplus(-2 lambda)
    return -0.5 * torch.nn.functional.softplus(-2.0 * lam)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation with linear extrapolation; ``xp`` increasing, shape (K,)."""
    flat = x.reshape(-1)
    idx = torch.bucketize(flat.contiguous(), xp).clamp(1, xp.numel() - 1)  # = searchsorted(xp, flat)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    w = (flat - x0) / (x1 - x0)
    return (f0 + w * (f1 - f0)).reshape(x.shape)


def _slope(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Slope of :func:`_interp`'s piecewise-linear function at ``x`` (left segment at a knot)."""
    flat = x.reshape(-1)
    idx = torch.bucketize(flat.contiguous(), xp).clamp(1, xp.numel() - 1)  # = searchsorted(xp, flat)
    return ((fp[idx] - fp[idx - 1]) / (xp[idx] - xp[idx - 1])).reshape(x.shape)


def linear_betas(n: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Tensor:
    """DDPM's linear beta sequence, shape (n,), float64."""
    return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)


def cosine_betas(n: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved-DDPM's squared-cosine beta sequence, shape (n,), float64."""
    steps = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


class VPSchedule(NoiseSchedule):
    """Variance-preserving schedules: alpha^2 + sigma^2 = 1. Build with a classmethod."""

    def __init__(self, kind: str, t_min: float, t_max: float, **params) -> None:
        self.kind = kind
        self.t_min = float(t_min)
        self.t_max = float(t_max)
        self.params = params
        if kind == "discrete":
            self._t_grid: Tensor = params["t_grid"]
            self._log_alpha_grid: Tensor = params["log_alpha_grid"]
            self.num_steps = int(self._t_grid.numel())

    @classmethod
    def linear(
        cls, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0
    ) -> VPSchedule:
        """Continuous linear-beta VP SDE (score SDE / DPM-Solver): log alpha = -t^2 (b1-b0)/4 - t b0/2."""
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        return cls("linear", t_min, t_max, beta_min=float(beta_min), beta_max=float(beta_max))

    @classmethod
    def cosine(cls, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946) -> VPSchedule:
        """Continuous cosine schedule (Improved DDPM); t_max < 1 keeps lambda finite, as in DPM-Solver."""
        return cls("cosine", t_min, t_max, s=float(s))

    @classmethod
    def discrete(cls, betas: Tensor | list[float]) -> VPSchedule:
        """A discrete N-step DDPM schedule from its betas, shape (N,).

        Step n (0-based) sits at t_n = (n + 1) / N; t_min = 1/N, t_max = 1. The network receives
        ``model_time(t) = N t - 1``, its own (float) step index.
        """
        b = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
        if b.numel() < 2 or not torch.all((b > 0) & (b < 1)):
            raise ValueError("betas must be a sequence of at least 2 values in (0, 1)")
        n = b.numel()
        log_alpha = 0.5 * torch.cumsum(torch.log1p(-b), 0)
        t_grid = torch.arange(1, n + 1, dtype=torch.float64) / n
        return cls("discrete", 1.0 / n, 1.0, t_grid=t_grid, log_alpha_grid=log_alpha)

    # --- float64 internals -------------------------------------------------------------
    def _log_alpha(self, t: Tensor) -> Tensor:
        p = self.params
        if self.kind == "linear":
            b0, b1 = p["beta_min"], p["beta_max"]
            return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
        if self.kind == "cosine":
            s = p["s"]
            c0 = math.log(math.cos(s / (1 + s) * math.pi / 2))
            return torch.log(torch.cos((t + s) / (1 + s) * math.pi / 2)) - c0
        grid = self._t_grid.to(t.device)
        return _interp(t, grid, self._log_alpha_grid.to(t.device))

    def _log_sigma(self, t: Tensor) -> Tensor:
        return _log_sigma_vp(self._log_alpha(t))

    def _dlog(self, t: Tensor) -> tuple[Tensor, Tensor]:
        p = self.params
        if self.kind == "linear":
            dla = -0.5 * t * (p["beta_max"] - p["beta_min"]) - 0.5 * p["beta_min"]
        elif self.kind == "cosine":
            s = p["s"]
            dla = -torch.tan((t + s) / (1 + s) * math.pi / 2) * (math.pi / (2 * (1 + s)))
        else:
            dla = _slope(t, self._t_grid.to(t.device), self._log_alpha_grid.to(t.device))
        # sigma^2 = 1 - alpha^2  =>  d log sigma = -(alpha^2 / sigma^2) d log alpha
        la = self._log_alpha(t)
        return dla, -torch.exp(2.0 * (la - _log_sigma_vp(la))) * dla

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        log_alpha = _log_alpha_vp_of_log_snr(lam)
        p = self.params
        if self.kind == "linear":
            b0, b1 = p["beta_min"], p["beta_max"]
            big_l = -2.0 * log_alpha  # = t^2 (b1-b0)/2 + t b0
            return 2.0 * big_l / (b0 + torch.sqrt(b0**2 + 2.0 * (b1 - b0) * big_l))
        if self.kind == "cosine":
            s = p["s"]
            c0 = math.log(math.cos(s / (1 + s) * math.pi / 2))
            return 2.0 * (1 + s) / math.pi * torch.arccos(torch.exp(log_alpha + c0)) - s
        grid = self._t_grid.to(lam.device)
        la = self._log_alpha_grid.to(lam.device)
        return _interp(log_alpha, la.flip(0), grid.flip(0))

    def model_time(self, t: Tensor) -> Tensor:
        if self.kind == "discrete":
            return t * self.num_steps - 1.0
        return t

    def sample_t(
        self, n: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Training times, shape (n,), float32; a discrete schedule draws its own grid points."""
        if self.kind == "discrete":
            k = torch.randint(0, self.num_steps, (n,), generator=generator, device=device)
            return ((k + 1).double() / self.num_steps).float()
        return super().sample_t(n, device=device, generator=generator)

    def __repr__(self) -> str:
        extra = f", N={self.num_steps}" if self.kind == "discrete" else ""
        return f"VPSchedule.{self.kind}(t_min={self.t_min:g}, t_max={self.t_max:g}{extra})"


class VESchedule(NoiseSchedule):
    """Variance-exploding schedule: alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.t_min, self.t_max = 0.0, 1.0

    def _log_alpha(self, t: Tensor) -> Tensor:
        return t * 0.0  # stays in the autograd graph (the base class differentiates it)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + t * self._log_ratio

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def _dlog(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.full_like(t, self._log_ratio)


class LinearSchedule(NoiseSchedule):
    """Rectified flow / flow matching path x_t = (1 - t) x_0 + t eps.

    lambda = log((1-t)/t) is infinite at both ends, so the default sampling interval stops
    1e-3 short of each (``t_min``, ``t_max``); training times are drawn on the same interval.
    """

    def __init__(self, t_min: float = 1e-3, t_max: float = 1.0 - 1e-3) -> None:
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got {t_min}, {t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t)

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam)

    def _dlog(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return -1.0 / (1.0 - t), 1.0 / t
