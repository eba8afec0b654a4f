"""The exact Gaussian-mixture oracle against brute force, autograd and closed-form ODE solutions."""

import math

import pytest
import torch

from core import LinearSchedule, VESchedule, VPSchedule
from core.denoiser import PREDICTIONS
from core.metrics import sliced_wasserstein
from core.oracle import GaussianMixture
from core.schedules import linear_betas


def _brute_force(gm: GaussianMixture, x: torch.Tensor, t: float):
    """log q_t and E[x0 | x_t] from explicit covariance matrices and linear solves."""
    a, s = float(gm.schedule.alpha(t)), float(gm.schedule.sigma(t))
    covs = torch.diag_embed(gm.covs) if gm.diagonal else gm.covs
    c = a**2 * covs + s**2 * torch.eye(gm.dim, dtype=torch.float64)
    comps = torch.distributions.MultivariateNormal(a * gm.means, covariance_matrix=c)
    logits = gm.weights.log() + comps.log_prob(x[:, None, :])
    r = torch.softmax(logits, 1)
    resid = x[:, None, :] - a * gm.means  # (B, K, D)
    sol = torch.linalg.solve(c[None], resid.unsqueeze(-1)).squeeze(-1)
    x0_k = gm.means + a * torch.einsum("kij,bkj->bki", covs, sol)
    return torch.logsumexp(logits, 1), (r[:, :, None] * x0_k).sum(1)


@pytest.mark.parametrize("dim,diagonal", [(2, False), (2, True), (16, False)])
@pytest.mark.parametrize("t", [1e-3, 0.3, 1.0])
def test_closed_forms_match_brute_force(dim, diagonal, t):
    gm = GaussianMixture.random(dim, 5, seed=1, diagonal=diagonal)
    x = gm.sample_marginal(32, t, torch.Generator().manual_seed(0))
    lq, x0 = _brute_force(gm, x, t)
    torch.testing.assert_close(gm.log_prob(x, t), lq, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(gm.x0(x, t), x0, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dim", [2, 64])
def test_score_is_gradient_and_tweedie_holds(dim):
    gm = GaussianMixture.random(dim, 8, seed=0)
    t = torch.rand(16, dtype=torch.float64) * 0.999 + 1e-3  # per-sample times
    x = gm.sample(16) * gm.schedule.alpha(t)[:, None] + torch.randn(16, dim, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(xr, t).sum(), xr)
    score = gm.score(x, t)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    a, s = gm.schedule.alpha(t)[:, None], gm.schedule.sigma(t)[:, None]
    x0, eps = gm.x0_eps(x, t)
    torch.testing.assert_close(x0, (x + s**2 * score) / a, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(eps, (x - a * x0) / s, rtol=1e-8, atol=1e-8)


def test_posteriors_normalise_and_condition():
    gm = GaussianMixture.random(2, 6, seed=2, num_classes=3)
    x = gm.sample_marginal(64, 0.4)
    comp = gm.component_posterior(x, 0.4)
    torch.testing.assert_close(comp.sum(1), torch.ones(64, dtype=torch.float64))
    logc = gm.class_log_posterior(x, 0.4)
    assert logc.shape == (64, 3)
    torch.testing.assert_close(logc.exp().sum(1), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(logc.exp()[:, 1], comp[:, gm.labels == 1].sum(1))
    # Bayes: log q_t(x | c) = log q_t(x) + log p(c | x) - log p(c).
    sub = gm.condition(1)
    prior_c = gm.weights[gm.labels == 1].sum()
    torch.testing.assert_close(sub.log_prob(x, 0.4), gm.log_prob(x, 0.4) + logc[:, 1] - prior_c.log())


def test_conditional_denoiser_uses_class_and_null_label():
    gm = GaussianMixture.random(2, 6, seed=3, num_classes=2)
    den = gm.as_denoiser("eps", conditional=True)
    x = gm.sample_marginal(8, 0.5)
    y = torch.tensor([0, 1, -1, 0, 1, -1, 0, 1])
    eps = den.eps(x, 0.5, y=y)
    for c in (0, 1):
        torch.testing.assert_close(eps[y == c], gm.condition(c).eps(x[y == c], 0.5))
    torch.testing.assert_close(eps[y == -1], gm.eps(x[y == -1], 0.5))
    with pytest.raises(ValueError, match="labels must be in"):
        den.eps(x, 0.5, y=torch.full((8,), 7))


SCHEDULES = {
    "vp_linear": VPSchedule.linear(),
    "vp_cosine": VPSchedule.cosine(),
    "vp_discrete": VPSchedule.discrete(linear_betas(1000)),
    "ve": VESchedule(0.01, 20.0),
    "flow": LinearSchedule(),
}


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_denoiser_view_is_exact_for_every_schedule_and_prediction(name, prediction):
    sch = SCHEDULES[name]
    gm = GaussianMixture.random(3, 4, seed=4, schedule=sch)
    den = gm.as_denoiser(prediction)
    t = torch.tensor([sch.t_min, 0.5 * (sch.t_min + sch.t_max), sch.t_max], dtype=torch.float64)
    x = gm.sample(3) * sch.alpha(t)[:, None] + sch.sigma(t)[:, None] * torch.randn(3, 3, dtype=torch.float64)
    x0, eps = den.x0_eps(x, t)
    x0_true, eps_true = gm.x0_eps(x, t)
    torch.testing.assert_close(x0, x0_true, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(eps, eps_true, rtol=1e-7, atol=1e-7)
    assert den.eps(x.float(), t).dtype == torch.float32


def test_reference_solution_matches_closed_form_for_one_gaussian():
    # One Gaussian: along the probability-flow ODE each eigen-coordinate of x - alpha m scales
    # by sqrt(var_t / var_s), var = alpha^2 s_k + sigma^2.
    base = GaussianMixture.random(8, 1, seed=5)
    gm = GaussianMixture(torch.ones(1), base.means, base.covs)
    sch = gm.schedule
    x_T = torch.randn(64, 8, dtype=torch.float64)
    t0, t1 = 1.0, 1e-3
    evals, evecs = torch.linalg.eigh(gm.covs[0])
    a0, s0, a1, s1 = (float(f(t)) for t in (t0, t1) for f in (sch.alpha, sch.sigma))
    scale = ((a1**2 * evals + s1**2) / (a0**2 * evals + s0**2)).sqrt()
    exact = a1 * gm.means[0] + ((x_T - a0 * gm.means[0]) @ evecs * scale) @ evecs.T
    ref = gm.reference_solution(x_T, t0, t1)
    assert (ref - exact).abs().max() < 1e-9


def test_reference_solution_is_converged_for_a_mixture():
    gm = GaussianMixture.random(2, 8, seed=0)
    x_T = torch.randn(64, 2, dtype=torch.float64)
    tight = gm.reference_solution(x_T, 1.0, 1e-3)
    loose = gm.reference_solution(x_T, 1.0, 1e-3, rtol=1e-10, atol=1e-10)
    assert (tight - loose).abs().max() < 1e-8
    # An ODE transports q_1 to q_eps: the endpoints are close in distribution to the data.
    x_T = gm.sample_marginal(1000, 1.0, torch.Generator().manual_seed(1))
    out = gm.reference_solution(x_T, 1.0, 1e-3, rtol=1e-6, atol=1e-6)
    data = gm.sample(1000, torch.Generator().manual_seed(2))
    floor = gm.sample(1000, torch.Generator().manual_seed(3))  # sampling noise of SW at n = 1000
    sw = float(sliced_wasserstein(out, data, generator=torch.Generator().manual_seed(0)))
    sw_floor = float(sliced_wasserstein(floor, data, generator=torch.Generator().manual_seed(0)))
    assert sw < 2.0 * sw_floor


def test_sample_moments():
    gm = GaussianMixture.random(3, 4, seed=6)
    x = gm.sample(40000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), atol=0.05, rtol=0)


def test_sliced_wasserstein_of_shifted_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(3000, 4, generator=g, dtype=torch.float64) + torch.tensor([2.0, 0, 0, 0])
    # SW_2^2 of a shift v is E_theta (theta.v)^2 = |v|^2 / D.
    sw = float(sliced_wasserstein(x, y, n_projections=500, generator=g))
    assert abs(sw - 2.0 / math.sqrt(4)) < 0.05


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([1.0, -1.0], torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture([1.0], torch.zeros(1, 2), torch.ones(1, 3))
    gm = GaussianMixture.random(2, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        gm.score(torch.zeros(4, 3), 0.5)
    with pytest.raises(ValueError, match="t_end < t_start"):
        gm.reference_solution(torch.zeros(4, 2), 0.1, 0.5)
