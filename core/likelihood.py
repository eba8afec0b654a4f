"""The discrete-time variational bound (negative ELBO) of a diffusion model, in bits per dimension.

For noise levels t_K > ... > t_1 > 0 (a trajectory; the data sit at alpha = 1, sigma = 0) and
the DDPM forward process restricted to them (Markov: q(x_{t_{k-1}} | x_{t_k}, x_0) is the
Gaussian posterior with variance beta~_k),

    L = L_K + sum_{k=2..K} L_{k-1} + L_0,
    L_K     = KL(q(x_{t_K} | x_0) || N(0, (alpha_K^2 + sigma_K^2) I))     (N(0, I) under VP),
    L_{k-1} = KL(q(x_{t_{k-1}} | x_{t_k}, x_0) || N(mu~(x_{t_k}, x0-hat), sigma_k^2 I)),
    L_0     = -log p(x_0 | x_{t_1}),

with the reverse mean mu~(x_t, x0-hat(x_t, t)) and a reverse variance per step: ``"beta"``
(the forward transition's), ``"beta_tilde"`` (the posterior's), ``"analytic"`` (Analytic-DPM,
:func:`core.sampling.analytic.analytic_variance`) or an explicit tensor. Every expectation is a
Monte-Carlo average over x_0 and one noise draw per term.

Decoder L_0 (the step from x_{t_1} to the data), mean x0-hat(x_{t_1}, t_1):

- ``"gaussian"``: N(x_0; x0-hat, sigma_1^2 I), for continuous data. The bound is then on the
  differential entropy (it can be negative). beta gives sigma_1^2 = sigma_{t_1}^2; analytic
  gives (sigma_{t_1} / alpha_{t_1})^2 (1 - Gamma_1), the optimal isotropic decoder; beta~ is 0
  there, so, as DDPM's clipped log-variance does, it takes beta~ of the step t_2 -> t_1.
- ``"discretized"``: DDPM's discretised Gaussian for data quantised to ``bins`` levels in
  [-1, 1] (images): the bound is on the discrete NLL, comparable to published bits/dim.

All terms are reported in bits per dimension (nats / (d ln 2)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser
from .sampling.analytic import GammaTable, _clipped, step_coefficients

__all__ = ["VLB", "nll_bound", "nll_bounds"]

VARIANCES = ("beta", "beta_tilde", "analytic")
DECODERS = ("gaussian", "discretized")


@dataclass
class VLB:
    """A variational bound in bits/dim: ``total = prior + sum(steps) + decoder``.

    Attributes:
        total, prior, decoder: floats, bits per dimension (averaged over x_0).
        steps: shape (K - 1,), the terms L_{k-1} for the steps t_K -> t_{K-1}, ..., t_2 -> t_1.
        variances: shape (K,), the reverse variances used (last one: the decoder's).
    """

    total: float
    prior: float
    decoder: float
    steps: Tensor
    variances: Tensor


def _kl_iso(var_q: Tensor, var_p: Tensor, sq_mean_diff: Tensor, d: int) -> Tensor:
    """KL(N(mu_q, var_q I) || N(mu_p, var_p I)) summed over d dims; sq_mean_diff = |mu_q - mu_p|^2 per row."""
    return 0.5 * (d * (torch.log(var_p / var_q) + var_q / var_p - 1.0) + sq_mean_diff / var_p)


def _discretized_nll(x0: Tensor, mean: Tensor, var: Tensor, bins: int) -> Tensor:
    """-log P(x_0) per row under DDPM's discretised Gaussian on ``bins`` levels in [-1, 1]."""
    if float(x0.min()) < -1 - 1e-6 or float(x0.max()) > 1 + 1e-6:
        raise ValueError("the discretized decoder needs data in [-1, 1]")
    std = var.sqrt()
    half = 1.0 / (bins - 1)
    normal = torch.distributions.Normal(torch.zeros((), dtype=x0.dtype), torch.ones((), dtype=x0.dtype))
    upper = normal.cdf((x0 - mean + half) / std)
    lower = normal.cdf((x0 - mean - half) / std)
    prob = torch.where(x0 < -1 + 1e-3, upper, torch.where(x0 > 1 - 1e-3, 1 - lower, upper - lower))
    return -prob.clamp(min=1e-12).log().reshape(x0.shape[0], -1).sum(1)


def _variance_table(
    kind: str | Tensor,
    c: dict[str, Tensor],
    gamma: Tensor | None,
    data_range: tuple[float, float] | None,
) -> Tensor:
    """Reverse variances (K,) for the steps t_K -> ... -> t_1 -> data, from the coefficient table."""
    if isinstance(kind, Tensor):
        var = kind.to(torch.float64).reshape(-1)
        if var.shape != c["beta"].shape or not bool((var > 0).all()):
            raise ValueError(f"explicit variances must be positive with shape {tuple(c['beta'].shape)}")
        return var
    if kind == "beta":
        return c["beta"].clone()
    if kind == "beta_tilde":
        var = c["beta_tilde"].clone()
        if var.numel() < 2:
            raise ValueError("beta_tilde needs at least 2 times (the decoder borrows the last step's)")
        var[-1] = var[-2]
        return var
    if kind == "analytic":
        if gamma is None:
            raise ValueError(
                "variance='analytic' needs gamma (a GammaTable or a tensor of Gamma at the times)"
            )
        return _clipped(c, gamma, data_range, False)
    raise ValueError(f"unknown variance {kind!r}; expected one of {VARIANCES} or a tensor")


@torch.no_grad()
def nll_bounds(
    denoiser: Denoiser,
    x0: Tensor,
    times: Tensor,
    variances: Sequence[str | Tensor] = VARIANCES,
    *,
    gamma: GammaTable | Tensor | None = None,
    decoder: str = "gaussian",
    bins: int = 256,
    data_range: tuple[float, float] | None = None,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> list[VLB]:
    """The bound of several reverse variances from one set of network evaluations.

    Args:
        denoiser: the model.
        x0: data, shape (N, ...).
        times: the noise levels t_K > ... > t_1 > 0, shape (K,), on the schedule.
        variances: each ``"beta" | "beta_tilde" | "analytic"`` or a tensor (K,) of variances
            (entry k: the step from times[k] to times[k + 1], the last one the decoder's).
        gamma: Gamma at the times (a :class:`GammaTable` or a tensor (K,)); for ``"analytic"``.
        decoder: ``"gaussian"`` or ``"discretized"`` (see the module docstring).
        bins: quantisation levels of the discretised decoder.
        data_range: (a, b) for the analytic variance's data-range clipping bound.
        batch_size: x_0 rows per network call.
        generator: noise generator (the same draws serve every variance: common random numbers).

    Returns:
        One :class:`VLB` per entry of ``variances``.
    """
    ts = torch.as_tensor(times, dtype=torch.float64).reshape(-1).cpu()
    sch = denoiser.schedule
    if ts.numel() < 1 or not bool((ts[1:] < ts[:-1]).all()) or float(ts[-1]) <= 0:
        raise ValueError("times must be strictly decreasing and positive (t_K > ... > t_1 > 0)")
    if float(ts[-1]) < sch.t_min - 1e-12 or float(ts[0]) > sch.t_max + 1e-12:
        raise ValueError(
            f"times must lie in [{sch.t_min:g}, {sch.t_max:g}], got [{float(ts[-1]):g}, {float(ts[0]):g}]"
        )
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0 must have shape (N, ...) with N >= 1, got {tuple(x0.shape)}")
    k = ts.numel()
    at, st = sch.alpha(ts), sch.sigma(ts)
    a_next = torch.cat([at[1:], torch.ones(1, dtype=torch.float64)])
    s_next = torch.cat([st[1:], torch.zeros(1, dtype=torch.float64)])
    c = step_coefficients(at, st, a_next, s_next, eta=1.0)
    g = None
    if gamma is not None:
        g = (
            gamma(ts)
            if isinstance(gamma, GammaTable)
            else torch.as_tensor(gamma, dtype=torch.float64).reshape(-1)
        )
        if g.shape != (k,):
            raise ValueError(f"gamma must give {k} values at the times, got shape {tuple(g.shape)}")
    tables = [_variance_table(v, c, g, data_range) for v in variances]
    n, d = x0.shape[0], x0[0].numel()
    # Per step k: sum over rows of |x0 - x0_hat|^2 (transitions) or the decoder's per-row NLL.
    sq = torch.zeros(k, dtype=torch.float64)
    dec = torch.zeros(len(tables), dtype=torch.float64)
    prior_var = float(at[0] ** 2 + st[0] ** 2)
    prior = 0.0
    for lo in range(0, n, batch_size):
        xb = x0[lo : lo + batch_size]
        x64 = xb.double().reshape(xb.shape[0], -1)
        q_var = torch.full((), float(st[0] ** 2), dtype=torch.float64)
        prior += float(
            _kl_iso(
                q_var, torch.tensor(prior_var, dtype=torch.float64), float(at[0]) ** 2 * x64.pow(2).sum(1), d
            ).sum()
        )
        for j in range(k):
            tj = ts[j].to(xb.device).expand(xb.shape[0])
            noise = torch.randn(xb.shape, generator=generator, device=xb.device, dtype=xb.dtype)
            xt = float(at[j]) * xb + float(st[j]) * noise
            x0_hat = denoiser.x0(xt, tj).double().reshape(xb.shape[0], -1)
            if j < k - 1 or decoder == "gaussian":
                sq[j] += (x64 - x0_hat).pow(2).sum().cpu()
            else:
                for i, var in enumerate(tables):
                    dec[i] += _discretized_nll(x64, x0_hat, var[-1], bins).sum().cpu()
    to_bits = 1.0 / (n * d * math.log(2.0))
    out = []
    for i, var in enumerate(tables):
        beta_t = c["beta_tilde"][:-1]
        steps = _kl_iso(beta_t, var[:-1], c["c_x0"][:-1] ** 2 * sq[:-1] / n, d) * n * to_bits
        if decoder == "gaussian":
            nll0 = 0.5 * (sq[-1] / var[-1] + n * d * torch.log(2 * math.pi * var[-1])) * to_bits
        else:
            nll0 = dec[i] * to_bits
        p = prior * to_bits
        out.append(VLB(float(p + steps.sum() + nll0), p, float(nll0), steps, var))
    return out


def nll_bound(
    denoiser: Denoiser,
    x0: Tensor,
    times: Tensor,
    variance: str | Tensor = "analytic",
    **kwargs,
) -> VLB:
    """The bound under one reverse variance; see :func:`nll_bounds` for the arguments."""
    return nll_bounds(denoiser, x0, times, (variance,), **kwargs)[0]
