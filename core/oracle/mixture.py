"""An exact oracle: a Gaussian-mixture data distribution with closed-form noised marginals.

Data x_0 ~ sum_k w_k N(m_k, S_k). Under a schedule (alpha_t, sigma_t) the noised marginal is

    q_t(x) = sum_k w_k N(x; alpha_t m_k, C_k(t)),   C_k(t) = alpha_t^2 S_k + sigma_t^2 I,

so the log-density, the score, the posterior mean E[x_0 | x_t] (the ideal denoiser), the
component and class posteriors and the probability-flow ODE are all available exactly. Every
S_k is eigendecomposed once, S_k = U_k diag(s_k) U_k^T; then C_k(t) = U_k diag(alpha^2 s_k +
sigma^2) U_k^T for every t, and one call costs two (B, D) x (D, K D) products in float64
(diagonal covariances skip the products). Samplers run the oracle through
:meth:`GaussianMixture.as_denoiser`, which separates solver error from network error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor, nn

from ..denoiser import PREDICTIONS, Denoiser
from ..schedules import NoiseSchedule, VPSchedule

__all__ = ["GaussianMixture", "ExactNet"]

_LOG_2PI = math.log(2.0 * math.pi)


def _time_from_model(schedule: NoiseSchedule, t_model: Tensor) -> Tensor:
    """Invert ``schedule.model_time`` (affine for every schedule here) in float64."""
    probe = torch.tensor([0.25, 0.75], dtype=torch.float64)
    m = schedule.model_time(probe)
    slope = (m[1] - m[0]) / 0.5
    offset = m[0] - slope * 0.25
    return (t_model.to(torch.float64) - offset) / slope


class GaussianMixture:
    """A Gaussian mixture sum_k w_k N(m_k, S_k) in R^D and its exact noised marginals.

    Args:
        weights: mixture weights, shape (K,), positive (normalised here).
        means: component means m_k, shape (K, D).
        covs: covariances S_k, shape (K, D, D) (symmetric PSD) or (K, D) for diagonal ones.
        labels: optional integer class of each component, shape (K,), values 0..C-1.
        schedule: the noise schedule of x_t = alpha_t x_0 + sigma_t eps
            (default ``VPSchedule.linear()``).

    All computations are float64. Methods taking ``x`` of shape (B, D) and ``t`` (a float, a
    0-d tensor or shape (B,)) return float64 tensors on x's device.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor | Sequence,
        covs: Tensor | Sequence,
        labels: Tensor | Sequence[int] | None = None,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        m = torch.as_tensor(means, dtype=torch.float64)
        c = torch.as_tensor(covs, dtype=torch.float64)
        if m.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(m.shape)}")
        k, d = m.shape
        if w.shape != (k,) or not bool(torch.all(w > 0)):
            raise ValueError(f"weights must be positive with shape ({k},), got {tuple(w.shape)}")
        if c.shape == (k, d):
            if not bool(torch.all(c >= 0)):
                raise ValueError("diagonal covariances must be non-negative")
            self.diagonal = True
            self._evals = c.clone()
            self._evecs = None
        elif c.shape == (k, d, d):
            if not torch.allclose(c, c.transpose(1, 2), atol=1e-10):
                raise ValueError("covariances must be symmetric")
            evals, evecs = torch.linalg.eigh(c)
            if float(evals.min()) < -1e-10 * max(1.0, float(evals.max())):
                raise ValueError(f"covariances must be PSD; smallest eigenvalue {float(evals.min()):.3g}")
            self.diagonal = False
            self._evals = evals.clamp(min=0.0)
            self._evecs = evecs  # (K, D, E): columns are eigenvectors
        else:
            raise ValueError(f"covs must have shape ({k}, {d}, {d}) or ({k}, {d}), got {tuple(c.shape)}")
        self.weights = w / w.sum()
        self.means = m
        self.covs = c
        self.schedule = schedule if schedule is not None else VPSchedule.linear()
        if labels is not None:
            lab = torch.as_tensor(labels, dtype=torch.long)
            if lab.shape != (k,) or int(lab.min()) < 0:
                raise ValueError(f"labels must be non-negative integers of shape ({k},), got {lab.tolist()}")
            self.labels: Tensor | None = lab
            self.num_classes = int(lab.max()) + 1
        else:
            self.labels = None
            self.num_classes = 0
        self._cache: dict[torch.device, dict[str, Tensor]] = {}

    # --- construction ------------------------------------------------------------------
    @classmethod
    def random(
        cls,
        dim: int,
        k: int = 8,
        seed: int = 0,
        schedule: NoiseSchedule | None = None,
        num_classes: int = 2,
        mean_scale: float = 1.0,
        std_range: tuple[float, float] = (0.1, 0.4),
        diagonal: bool = False,
    ) -> GaussianMixture:
        """A reproducible test mixture with well-separated means and random SPD covariances.

        In 2-D the means sit on a circle of radius ``2 * mean_scale``; in higher dimensions they
        are N(0, mean_scale^2 I) draws (pairwise distances ~ mean_scale sqrt(2 D)). Component
        standard deviations along random orthogonal axes are uniform in ``std_range``; weights
        are Dirichlet(5); component j has label ``j % num_classes``.
        """
        if dim < 1 or k < 1:
            raise ValueError(f"need dim >= 1 and k >= 1, got dim={dim}, k={k}")
        g = torch.Generator().manual_seed(seed)
        if dim == 2:
            phase = 2 * math.pi * torch.rand((), generator=g, dtype=torch.float64)
            ang = phase + 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
            means = 2.0 * mean_scale * torch.stack([ang.cos(), ang.sin()], 1)
        else:
            means = mean_scale * torch.randn(k, dim, generator=g, dtype=torch.float64)
        lo, hi = std_range
        std = lo + (hi - lo) * torch.rand(k, dim, generator=g, dtype=torch.float64)
        if diagonal:
            covs = std**2
        else:
            q, r = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
            q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
            covs = (q * std.unsqueeze(1) ** 2) @ q.transpose(1, 2)
            covs = 0.5 * (covs + covs.transpose(1, 2))
        # Gamma(5, 1) draws as sums of five exponentials -> Dirichlet(5) weights.
        weights = -torch.rand(k, 5, generator=g, dtype=torch.float64).log().sum(1)
        labels = torch.arange(k) % max(num_classes, 1) if num_classes > 0 else None
        return cls(weights, means, covs, labels=labels, schedule=schedule)

    # --- properties --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def condition(self, c: int) -> GaussianMixture:
        """The class-conditional mixture p(x_0 | c): the components labelled c, renormalised."""
        if self.labels is None:
            raise ValueError("this mixture has no labels")
        sel = self.labels == int(c)
        if not bool(sel.any()):
            raise ValueError(f"no component has label {c}; labels are {self.labels.tolist()}")
        return GaussianMixture(
            self.weights[sel], self.means[sel], self.covs[sel], self.labels[sel], self.schedule
        )

    def mean(self) -> Tensor:
        """E[x_0], shape (D,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x_0], shape (D, D)."""
        full = torch.diag_embed(self.covs) if self.diagonal else self.covs
        mu = self.mean()
        dm = self.means - mu
        return torch.einsum("k,kij->ij", self.weights, full + dm[:, :, None] * dm[:, None, :])

    # --- sampling ----------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n draws of x_0, shape (n, D), float64 (and the components' labels, shape (n,), if asked)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        scaled = z * self._evals[comp].sqrt()
        if not self.diagonal:
            scaled = torch.einsum("nde,ne->nd", self._evecs[comp], scaled)
        x = self.means[comp] + scaled
        if return_labels:
            if self.labels is None:
                raise ValueError("this mixture has no labels")
            return x, self.labels[comp]
        return x

    def sample_marginal(self, n: int, t: float, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws of x_t ~ q_t, shape (n, D), float64."""
        x0 = self.sample(n, generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        a, s = self.schedule.alpha(float(t)), self.schedule.sigma(float(t))
        return a * x0 + s * eps

    # --- the closed forms --------------------------------------------------------------
    def _params(self, device: torch.device) -> dict[str, Tensor]:
        p = self._cache.get(device)
        if p is None:
            k, d = self.means.shape
            p = {
                "log_w": self.weights.log().to(device),
                "means": self.means.to(device),
                "evals": self._evals.to(device),
            }
            if not self.diagonal:
                u = self._evecs.to(device)
                p["U_fwd"] = u.permute(1, 0, 2).reshape(d, k * d)  # x @ U_fwd -> (B, K*E)
                p["U_bwd"] = u.permute(0, 2, 1).reshape(k * d, d)  # g @ U_bwd -> (B, D)
                p["mU"] = torch.einsum("kd,kde->ke", p["means"], u)
            else:
                p["mU"] = p["means"]
            self._cache[device] = p
        return p

    def _prepare(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        x64 = x.to(torch.float64)
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if tt.dim() == 0:
            tt = tt.expand(x.shape[0])
        elif tt.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(tt.shape)}")
        return x64, self.schedule.alpha(tt), self.schedule.sigma(tt)

    def _stats(
        self,
        x: Tensor,
        t: float | Tensor,
        log_w: Tensor | None = None,
        want_x0: bool = True,
        want_score: bool = True,
    ) -> dict[str, Tensor]:
        """Component log-densities, responsibilities, score and posterior mean at (x, t)."""
        x64, a, s = self._prepare(x, t)
        p = self._params(x.device)
        b, (k, d) = x64.shape[0], self.means.shape
        xu = x64[:, None, :] if self.diagonal else (x64 @ p["U_fwd"]).reshape(b, k, d)
        if bool(
            (a == a[0]).all() and (s == s[0]).all()
        ):  # one time for the whole batch: per-time terms are (K, D)
            a3, s3 = a[0], s[0]
        else:
            a3, s3 = a[:, None, None], s[:, None, None]
        z = xu - a3 * p["mU"]  # residual in each component's eigenbasis, (B, K, D)
        var = a3**2 * p["evals"] + s3**2
        g = z / var
        log_n = -0.5 * ((z * g).sum(-1) + var.log().sum(-1) + d * _LOG_2PI)  # (B, K)
        logits = (p["log_w"] if log_w is None else log_w) + log_n
        log_q = torch.logsumexp(logits, dim=1)
        log_r = logits - log_q[:, None]
        r = log_r.exp()
        out = {"log_n": log_n, "log_q": log_q, "log_r": log_r, "alpha": a, "sigma": s}
        # score = -sum_k r_k U_k g_k;  x0 = sum_k r_k (m_k + alpha U_k diag(s_k) g_k).
        gr = r[:, :, None] * g
        if want_score:
            out["score"] = -gr.sum(1) if self.diagonal else -(gr.reshape(b, k * d) @ p["U_bwd"])
        if want_x0:
            hr = gr * (a3 * p["evals"])
            back = hr.sum(1) if self.diagonal else hr.reshape(b, k * d) @ p["U_bwd"]
            out["x0"] = r @ p["means"] + back
        return out

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log q_t(x), shape (B,); differentiable in x."""
        return self._stats(x, t, want_x0=False)["log_q"]

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """grad_x log q_t(x), shape (B, D)."""
        return self._stats(x, t, want_x0=False)["score"]

    def x0(self, x: Tensor, t: float | Tensor) -> Tensor:
        """E[x_0 | x_t = x], shape (B, D)."""
        return self._stats(x, t, want_score=False)["x0"]

    def eps(self, x: Tensor, t: float | Tensor) -> Tensor:
        """E[eps | x_t = x] = -sigma_t * score, shape (B, D)."""
        st = self._stats(x, t, want_x0=False)
        return -st["sigma"][:, None] * st["score"]

    def x0_eps(self, x: Tensor, t: float | Tensor, log_w: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(E[x_0 | x_t], E[eps | x_t]), each (B, D); ``log_w`` (B, K) overrides the log weights."""
        st = self._stats(x, t, log_w=log_w)
        return st["x0"], -st["sigma"][:, None] * st["score"]

    def component_posterior(self, x: Tensor, t: float | Tensor) -> Tensor:
        """p(k | x_t = x), shape (B, K); rows sum to one."""
        return self._stats(x, t, want_x0=False)["log_r"].exp()

    def class_log_posterior(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log p(c | x_t = x) = logsumexp over components of class c, shape (B, C)."""
        if self.labels is None:
            raise ValueError("this mixture has no labels")
        log_r = self._stats(x, t, want_x0=False)["log_r"]
        onehot = torch.nn.functional.one_hot(self.labels.to(x.device), self.num_classes).bool()
        masked = torch.where(onehot.T[None], log_r[:, None, :], torch.tensor(-math.inf, device=x.device))
        return torch.logsumexp(masked, dim=2)

    def class_log_weights(self, y: Tensor, null_label: int = -1) -> Tensor:
        """Per-sample log weights (B, K): components of class y_i keep theirs, the others -inf;
        rows with ``y_i == null_label`` keep all components (the unconditional mixture)."""
        if self.labels is None:
            raise ValueError("this mixture has no labels")
        y = y.to(torch.long).reshape(-1)
        bad = (y != null_label) & ((y < 0) | (y >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"labels must be in 0..{self.num_classes - 1} or {null_label}, got {y[bad].tolist()}"
            )
        labels = self.labels.to(y.device)
        keep = (labels[None, :] == y[:, None]) | (y[:, None] == null_label)
        log_w = self.weights.log().to(y.device)
        return torch.where(
            keep, log_w[None, :], torch.tensor(-math.inf, dtype=torch.float64, device=y.device)
        )

    # --- the network view --------------------------------------------------------------
    def as_denoiser(
        self, prediction: str = "eps", conditional: bool = False, null_label: int = -1
    ) -> Denoiser:
        """A :class:`core.Denoiser` whose network is exact, under this mixture's schedule.

        The network takes ``(x, t_model)`` (``t_model = schedule.model_time(t)``, inverted here)
        and returns the exact ``prediction`` (any of ``eps | x0 | v | score | velocity``) in x's
        dtype. With ``conditional=True`` it also takes ``y`` (B,) labels: the class-conditional
        prediction, and the unconditional one where ``y == null_label`` (classifier-free tests).
        """
        return Denoiser(ExactNet(self, prediction, conditional, null_label), self.schedule, prediction)

    # --- the probability-flow ODE ------------------------------------------------------
    def reference_solution(
        self,
        x_T: Tensor,
        t_start: float | None = None,
        t_end: float | None = None,
        rtol: float = 1e-12,
        atol: float = 1e-12,
        method: str = "DOP853",
        y: Tensor | None = None,
    ) -> Tensor:
        """High-accuracy solution of the probability-flow ODE from ``t_start`` to ``t_end``.

        Integrates u = x / sigma in lambda = log(alpha / sigma): du/dlambda = e^lambda E[x_0 | x],
        exact for every schedule and non-stiff (its Jacobian has eigenvalues in [0, 1]), with
        scipy's ``method`` at (rtol, atol), vectorised over the batch. ``x_T`` has shape (B, D);
        ``y`` (B,) optionally conditions each trajectory on a class. Returns float64 (B, D).
        """
        sch = self.schedule
        t_start = sch.t_max if t_start is None else float(t_start)
        t_end = sch.t_min if t_end is None else float(t_end)
        if not t_end < t_start:
            raise ValueError(f"need t_end < t_start, got t_start={t_start}, t_end={t_end}")
        x64 = x_T.detach().to("cpu", torch.float64)
        if x64.dim() != 2 or x64.shape[1] != self.dim:
            raise ValueError(f"x_T must have shape (B, {self.dim}), got {tuple(x_T.shape)}")
        b, d = x64.shape
        log_w = None if y is None else self.class_log_weights(y.to("cpu"))
        lam0, lam1 = float(sch.log_snr(t_start)), float(sch.log_snr(t_end))

        def rhs(lam: float, u: np.ndarray) -> np.ndarray:
            t = sch.t_of_log_snr(torch.tensor(lam, dtype=torch.float64))
            s = sch.sigma(t)
            x = torch.from_numpy(u).reshape(b, d) * s
            x0 = self._stats(x, t, log_w=log_w, want_score=False)["x0"]
            return (math.exp(lam) * x0).reshape(-1).numpy()

        u0 = (x64 / sch.sigma(t_start)).reshape(-1).numpy()
        sol = solve_ivp(rhs, (lam0, lam1), u0, method=method, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference ODE solve failed: {sol.message}")
        u1 = torch.from_numpy(sol.y[:, -1].copy()).reshape(b, d)
        return (u1 * sch.sigma(t_end)).to(x_T.device)

    def __repr__(self) -> str:
        kind = "diagonal" if self.diagonal else "full"
        return (
            f"GaussianMixture(K={self.num_components}, D={self.dim}, {kind} covs, "
            f"classes={self.num_classes}, schedule={self.schedule!r})"
        )


class ExactNet(nn.Module):
    """The oracle as a network ``net(x, t_model, y=None)`` predicting ``prediction`` exactly."""

    def __init__(
        self,
        mixture: GaussianMixture,
        prediction: str = "eps",
        conditional: bool = False,
        null_label: int = -1,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        if conditional and mixture.labels is None:
            raise ValueError("a conditional oracle needs a mixture with labels")
        self.mixture = mixture
        self.prediction = prediction
        self.conditional = conditional
        self.null_label = null_label

    def forward(self, x: Tensor, t_model: Tensor, y: Tensor | None = None) -> Tensor:
        mix = self.mixture
        sch = mix.schedule
        t = _time_from_model(sch, torch.as_tensor(t_model, device=x.device))
        if y is not None and not self.conditional:
            raise ValueError("this oracle is unconditional; build it with conditional=True to pass y")
        log_w = mix.class_log_weights(y, self.null_label) if y is not None else None
        x0, eps = mix.x0_eps(x, t, log_w=log_w)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        a, s = sch.alpha(t)[:, None], sch.sigma(t)[:, None]
        kind = self.prediction
        if kind == "eps":
            out = eps
        elif kind == "x0":
            out = x0
        elif kind == "v":
            out = a * eps - s * x0
        elif kind == "score":
            out = -eps / s
        else:
            da, ds = sch.derivatives(t)
            out = da[:, None] * x0 + ds[:, None] * eps
        return out.to(x.dtype)
