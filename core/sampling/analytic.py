"""Analytic-DPM (Bao, Li, Zhu & Zhang, ICLR 2022): the optimal reverse variance in closed form.

Notation of the paper, for one step of a (possibly shortened) trajectory from time t (its step
n) to the next time s < t (step n - 1): ab_n = alpha-bar_n = alpha_t^2, bb_n = beta-bar_n =
sigma_t^2, alpha_n = ab_n / ab_{n-1}. The forward family q_lambda(x_{n-1} | x_n, x_0) has mean

    mu~_n(x_n, x_0) = sqrt(ab_{n-1}) x_0 + sqrt(bb_{n-1} - lambda_n^2) (x_n - sqrt(ab_n) x_0) / sqrt(bb_n)

and variance lambda_n^2: lambda_n^2 = beta~_n = bb_{n-1} beta_n / bb_n is DDPM, lambda_n = 0 is
DDIM (here lambda_n^2 = eta^2 beta~_n). The reverse step p(x_{n-1} | x_n) = N(mu_n(x_n),
sigma_n^2 I) with mean mu~_n(x_n, x0-hat(x_n)) has the optimal (KL- and ELBO-minimising)
variance (Theorem 1)

    sigma*_n^2 = lambda_n^2 + (sqrt(bb_n / alpha_n) - sqrt(bb_{n-1} - lambda_n^2))^2 (1 - Gamma_n),
    Gamma_n    = E_{q_n} ||eps-hat(x_n, n)||^2 / d            (= bb_n E ||grad log q_n(x_n)||^2 / d),

estimated once by Monte Carlo (:func:`estimate_gamma`). Theorem 2 bounds it:

    lambda_n^2 <= sigma*_n^2 <= lambda_n^2 + (sqrt(bb_n / alpha_n) - sqrt(bb_{n-1} - lambda_n^2))^2,

and, for data in [a, b]^d,

    sigma*_n^2 <= lambda_n^2
                  + (sqrt(ab_{n-1}) - sqrt(bb_{n-1} - lambda_n^2) sqrt(ab_n / bb_n))^2 ((b - a) / 2)^2;

the estimate is clipped into these bounds (the paper's bias reduction). For any schedule we
write them with c_x0 = alpha_s - sqrt(sigma_s^2 - lambda^2) alpha_t / sigma_t (the x_0
coefficient of mu~): sigma*^2 = lambda^2 + c_x0^2 (sigma_t / alpha_t)^2 (1 - Gamma_t), since
E tr Cov[x_0 | x_t] / d = (sigma_t / alpha_t)^2 (1 - Gamma_t).

Samplers ``analytic_ddpm`` and ``analytic_ddim`` take ``gamma=`` (a :class:`GammaTable` or any
callable t -> Gamma(t)) through ``core.sample``; like ``ddpm`` they add noise on every step,
the last included.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..denoiser import Denoiser
from ..files import atomic_write
from ..schedules import NoiseSchedule
from .registry import SamplerContext, register

__all__ = [
    "GammaTable",
    "analytic_ddim",
    "analytic_ddpm",
    "analytic_variance",
    "estimate_gamma",
    "gamma_cache_key",
    "load_gamma",
    "save_gamma",
    "step_coefficients",
]


# --- Gamma ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GammaTable:
    """Monte-Carlo moments Gamma(t) = E_{q_t} ||eps-hat(x_t, t)||^2 / d at increasing ``times``.

    Attributes:
        times: shape (M,), float64, strictly increasing.
        gamma: shape (M,), float64.
        key: the JSON cache key it was computed under ("" when not cached).

    Calling it at times t (any shape) interpolates piecewise-linearly in t (exact at the table's
    own times, e.g. every step of a discrete schedule); times outside the table raise.
    """

    times: Tensor
    gamma: Tensor
    key: str = ""

    def __post_init__(self) -> None:
        t, g = self.times, self.gamma
        if t.dim() != 1 or g.shape != t.shape or t.numel() < 1:
            raise ValueError(
                f"times and gamma must be 1-D of equal length, got {tuple(t.shape)}, {tuple(g.shape)}"
            )
        if t.numel() > 1 and not bool((t[1:] > t[:-1]).all()):
            raise ValueError("GammaTable times must be strictly increasing")

    def __call__(self, t: Tensor | float) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64)
        times, gam = self.times.to(tt.device), self.gamma.to(tt.device)
        tol = 1e-9 * max(1.0, float(times.abs().max()))
        lo, hi = float(times[0]), float(times[-1])
        if bool(((tt < lo - tol) | (tt > hi + tol)).any()):
            raise ValueError(
                f"Gamma is tabulated on [{lo:g}, {hi:g}]; "
                f"asked for times in [{float(tt.min()):g}, {float(tt.max()):g}]"
            )
        if times.numel() == 1:
            return gam.expand(tt.shape).clone()
        flat = tt.reshape(-1).clamp(lo, hi)
        idx = torch.searchsorted(times, flat).clamp(1, times.numel() - 1)
        w = (flat - times[idx - 1]) / (times[idx] - times[idx - 1])
        return (gam[idx - 1] + w * (gam[idx] - gam[idx - 1])).reshape(tt.shape)


def gamma_cache_key(schedule: NoiseSchedule, times: Tensor, model_id: str, n_samples: int) -> dict:
    """The cache key: the model id, the sample count, and hashes of the times and of the schedule's
    (alpha, sigma) at those times (so two schedules that agree there share an estimate)."""
    t64 = torch.as_tensor(times, dtype=torch.float64).reshape(-1).cpu()
    sched = torch.stack([schedule.alpha(t64), schedule.sigma(t64)]).numpy().tobytes()
    return {
        "model_id": str(model_id),
        "n_samples": int(n_samples),
        "n_times": int(t64.numel()),
        "schedule": repr(schedule),
        "times_sha256": hashlib.sha256(t64.numpy().tobytes()).hexdigest(),
        "schedule_sha256": hashlib.sha256(sched).hexdigest(),
    }


def _key_json(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def save_gamma(table: GammaTable, path: str | os.PathLike) -> Path:
    """Write ``table`` as safetensors (``times``, ``gamma``) with its JSON key in the metadata,
    atomically (a temporary file beside ``path``, then one rename). Returns the path."""
    path = Path(path)
    tensors = {
        "times": table.times.detach().cpu().contiguous(),
        "gamma": table.gamma.detach().cpu().contiguous(),
    }
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"key": table.key})
    return path


def load_gamma(path: str | os.PathLike, key: dict | None = None) -> GammaTable:
    """Read a table written by :func:`save_gamma`; with ``key``, raise if it was computed under another."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Gamma table at {path}")
    with safe_open(str(path), framework="pt") as f:
        stored = (f.metadata() or {}).get("key", "")
        table = GammaTable(f.get_tensor("times").double(), f.get_tensor("gamma").double(), stored)
    if key is not None and stored != _key_json(key):
        raise ValueError(f"the Gamma table at {path} was computed under key {stored}, not {_key_json(key)}")
    return table


def _batches(data: Tensor | Iterable) -> Iterable[Tensor]:
    """Endless stream of x_0 batches from a tensor (N, ...) or a re-iterable loader."""
    if isinstance(data, Tensor):
        while True:
            yield data
    while True:
        empty = True
        for item in data:
            x = item[0] if isinstance(item, list | tuple) else item
            if not isinstance(x, Tensor):
                raise TypeError(
                    f"the data loader must yield tensors or (x, ...) tuples, got {type(x).__name__}"
                )
            empty = False
            yield x
        if empty:
            raise ValueError("the data loader yielded no batches")


@torch.no_grad()
def estimate_gamma(
    denoiser: Denoiser,
    data: Tensor | Iterable,
    times: Tensor,
    n_samples: int = 100,
    *,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    cache_dir: str | os.PathLike | None = None,
    model_id: str | None = None,
) -> GammaTable:
    """Gamma_n = E_{q_n} ||eps-hat(x_n, t_n)||^2 / d by Monte Carlo, once, optionally cached.

    Args:
        denoiser: the model; its ``eps`` prediction is used.
        data: x_0 samples, a tensor (N, ...) or a loader yielding tensors or (x, label) tuples.
            The first ``n_samples`` x_0 are reused at every time with fresh noise.
        times: the times (any order, distinct) at which to estimate, shape (M,). The paper
            estimates every step of the discrete model once and reuses it for every trajectory.
        n_samples: Monte-Carlo samples per time (the paper uses 100 for CIFAR-10).
        batch_size: (time, sample) pairs per network call.
        generator: for the noise (on the data's device).
        cache_dir: if given, the table is read from / written to
            ``cache_dir/gamma-<hash>.safetensors``, keyed by :func:`gamma_cache_key`.
        model_id: the caller's identifier of the model's weights; required with ``cache_dir``.

    Returns:
        A :class:`GammaTable` on the sorted times.
    """
    t64 = torch.as_tensor(times, dtype=torch.float64).reshape(-1).cpu().sort().values
    if t64.numel() < 1 or (t64.numel() > 1 and not bool((t64[1:] > t64[:-1]).all())):
        raise ValueError("times must be a non-empty set of distinct times")
    sch = denoiser.schedule
    if float(t64[0]) < sch.t_min - 1e-12 or float(t64[-1]) > sch.t_max + 1e-12:
        raise ValueError(
            f"times must lie in [{sch.t_min:g}, {sch.t_max:g}], got [{float(t64[0]):g}, {float(t64[-1]):g}]"
        )
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    path = key = None
    if cache_dir is not None:
        if not model_id:
            raise ValueError("a Gamma cache needs model_id (an identifier of the model's weights)")
        key = gamma_cache_key(sch, t64, model_id, n_samples)
        digest = hashlib.sha256(_key_json(key).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"gamma-{digest}.safetensors"
        if path.is_file():
            return load_gamma(path, key)

    x0 = _take(data, n_samples)
    d = x0[0].numel()
    m = t64.numel()
    sums = torch.zeros(m, dtype=torch.float64)
    pair_t = t64.repeat_interleave(n_samples)  # (M * n,)
    pair_i = torch.arange(n_samples).repeat(m)
    for lo in range(0, m * n_samples, batch_size):
        tb = pair_t[lo : lo + batch_size].to(x0.device)
        xb = x0[pair_i[lo : lo + batch_size].to(x0.device)]
        noise = torch.randn(xb.shape, generator=generator, device=xb.device, dtype=xb.dtype)
        a, s = denoiser.coefficients(xb, tb)
        eps = denoiser.eps(a * xb + s * noise, tb)
        sq = eps.double().reshape(eps.shape[0], -1).pow(2).sum(1) / d
        sums.index_add_(0, torch.arange(lo, lo + sq.numel()) // n_samples, sq.cpu())
    table = GammaTable(t64, sums / n_samples, _key_json(key) if key is not None else "")
    if path is not None:
        save_gamma(table, path)
    return table


def _take(data: Tensor | Iterable, n: int) -> Tensor:
    got, have = [], 0
    for x in _batches(data):
        got.append(x[: n - have])
        have += got[-1].shape[0]
        if have >= n:
            break
    x0 = torch.cat(got)
    if not x0.is_floating_point():
        raise ValueError(f"data must be floating point, got {x0.dtype}")
    return x0


# --- the variance -------------------------------------------------------------------------
def step_coefficients(
    alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor, eta: float = 1.0
) -> dict[str, Tensor]:
    """Per-step coefficients of the q_lambda family from t to s < t (float64 tensors, any shape).

    Returns ``lambda2`` (lambda^2 = eta^2 beta~), ``beta`` (the forward variance sigma_{t|s}^2 =
    sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2), ``beta_tilde``, ``c_eps`` = sqrt(sigma_s^2 -
    lambda^2) (mean = alpha_s x0-hat + c_eps eps-hat), ``c_x0`` = alpha_s - c_eps alpha_t / sigma_t
    and ``cov_scale`` = (sigma_t / alpha_t)^2 (so E tr Cov[x_0 | x_t] / d = cov_scale (1 - Gamma)).
    s may be the data level (alpha_s = 1, sigma_s = 0).
    """
    alpha_t, sigma_t, alpha_s, sigma_s = (
        torch.as_tensor(v, dtype=torch.float64) for v in (alpha_t, sigma_t, alpha_s, sigma_s)
    )
    # 1 - (alpha_t sigma_s / (sigma_t alpha_s))^2 = 1 - e^{-2h}, h = lambda_s - lambda_t >= 0
    ratio = (alpha_t * sigma_s) / (sigma_t * alpha_s)
    one_minus = -torch.expm1(2.0 * torch.log(ratio))
    beta = sigma_t**2 * one_minus
    beta_tilde = sigma_s**2 * one_minus
    lambda2 = eta**2 * beta_tilde
    c_eps = (sigma_s**2 - lambda2).clamp(min=0.0).sqrt()
    return {
        "lambda2": lambda2,
        "beta": beta,
        "beta_tilde": beta_tilde,
        "c_eps": c_eps,
        "c_x0": alpha_s - c_eps * alpha_t / sigma_t,
        "cov_scale": (sigma_t / alpha_t) ** 2,
    }


def analytic_variance(
    schedule: NoiseSchedule,
    t: Tensor,
    s: Tensor,
    gamma: Tensor,
    eta: float = 1.0,
    data_range: tuple[float, float] | None = None,
    return_bounds: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """The clipped optimal reverse variance sigma*^2 for steps t -> s (Theorems 1 and 2).

    Args:
        schedule: the noise schedule.
        t, s: step start and end times, shape (K,), s < t; ``s`` may hold 0 for "the data"
            (alpha = 1, sigma = 0), the last step of a likelihood bound.
        gamma: Gamma at ``t``, shape (K,).
        eta: lambda^2 = eta^2 beta~: 1 for Analytic-DDPM, 0 for Analytic-DDIM.
        data_range: (a, b) when the data lie in [a, b]^d: adds the tighter upper bound.
        return_bounds: also return the (lower, upper) clipping bounds.

    Returns:
        sigma*^2, shape (K,), float64 (and the bounds, each (K,)).
    """
    t64 = torch.as_tensor(t, dtype=torch.float64)
    s64 = torch.as_tensor(s, dtype=torch.float64)
    g = torch.as_tensor(gamma, dtype=torch.float64)
    if not bool((s64 < t64).all()):
        raise ValueError("analytic_variance needs s < t for every step")
    at, st = schedule.alpha(t64), schedule.sigma(t64)
    data = s64 <= 0
    s_safe = torch.where(data, t64, s64)  # placeholder where s is the data level
    as_ = torch.where(data, torch.ones_like(s64), schedule.alpha(s_safe))
    ss = torch.where(data, torch.zeros_like(s64), schedule.sigma(s_safe))
    c = step_coefficients(at, st, as_, ss, eta)
    return _clipped(c, g, data_range, return_bounds)


def _clipped(c: dict[str, Tensor], gamma: Tensor, data_range, return_bounds: bool):
    lam2, cx2 = c["lambda2"], c["c_x0"] ** 2
    raw = lam2 + cx2 * c["cov_scale"] * (1.0 - gamma)
    upper_cov = c["cov_scale"]
    if data_range is not None:
        a, b = data_range
        if not b > a:
            raise ValueError(f"data_range must be (a, b) with b > a, got {data_range}")
        upper_cov = upper_cov.clamp(max=((b - a) / 2.0) ** 2)
    lower, upper = lam2, lam2 + cx2 * upper_cov
    var = torch.minimum(torch.maximum(raw, lower), upper)
    return (var, lower, upper) if return_bounds else var


# --- samplers -----------------------------------------------------------------------------
def _gamma_on_grid(ctx: SamplerContext, gamma: GammaTable | Callable | None) -> Tensor:
    if gamma is None:
        raise ValueError(
            "analytic samplers need gamma=: a GammaTable from "
            "core.sampling.analytic.estimate_gamma(denoiser, data, times)"
        )
    if not callable(gamma):
        raise TypeError(f"gamma must be a GammaTable or a callable t -> Gamma(t), got {type(gamma).__name__}")
    g = torch.as_tensor(gamma(ctx.ts[:-1].cpu()), dtype=torch.float64).reshape(-1)
    if g.numel() != ctx.steps or not bool(torch.isfinite(g).all()):
        raise ValueError(f"gamma must give {ctx.steps} finite values on the grid, got {g.tolist()}")
    return g.to(ctx.ts.device)


def _analytic(ctx: SamplerContext, x: Tensor, gamma, eta: float, data_range) -> Tensor:
    a, s = ctx.alpha, ctx.sigma
    c = step_coefficients(a[:-1], s[:-1], a[1:], s[1:], eta)
    var = _clipped(c, _gamma_on_grid(ctx, gamma), data_range, False)
    c_x0, c_eps, c_z = (ctx.per_step(v) for v in (a[1:], c["c_eps"], var.sqrt()))
    for i in range(ctx.steps):
        x0, eps = ctx.model(x, ctx.times[i], i)
        x = torch.add(torch.add(x0 * c_x0[i], eps, alpha=c_eps[i]), ctx.noise(), alpha=c_z[i])
        x = ctx.done(i, x)
    return x


@register("analytic_ddpm")
def analytic_ddpm(
    ctx: SamplerContext,
    x: Tensor,
    *,
    gamma: GammaTable | Callable[[Tensor], Tensor] | None = None,
    data_range: tuple[float, float] | None = None,
) -> Tensor:
    """Analytic-DDPM: the DDPM posterior mean with the clipped optimal variance (lambda^2 = beta~)."""
    return _analytic(ctx, x, gamma, 1.0, data_range)


@register("analytic_ddim")
def analytic_ddim(
    ctx: SamplerContext,
    x: Tensor,
    *,
    gamma: GammaTable | Callable[[Tensor], Tensor] | None = None,
    eta: float = 0.0,
    data_range: tuple[float, float] | None = None,
) -> Tensor:
    """Analytic-DDIM: the DDIM mean (lambda^2 = eta^2 beta~, eta = 0 in the paper) with the
    clipped optimal variance, which adds a little noise even at eta = 0."""
    return _analytic(ctx, x, gamma, eta, data_range)
