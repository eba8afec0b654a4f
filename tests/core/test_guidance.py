"""Guidance proven exact where theory says it is, on the Gaussian-mixture oracle.

Each exact guide below is a closed-form energy E_t with exp(-E_t(x_t)) proportional to
p(condition | x_t), so the guided score is the exact score of q_t(x_t | condition) and every
sampler, run on the exact unconditional denoiser, samples the conditional law.
"""

import math

import pytest
import torch

import core
from core.guidance import (
    ClassifierFree,
    ClassifierGuidance,
    Energy,
    GuidanceError,
    Guide,
    Inpaint,
    Project,
    combine,
)
from core.oracle import GaussianMixture

# (method, kwargs) triples: a deterministic first-order, the default 2M, and the reverse SDE.
SOLVERS = [
    ("ddim", dict(steps=100)),
    ("dpm_solver++", dict(steps=25, order=2, multistep=True)),
    ("euler_maruyama", dict(steps=400)),
]
N = 2000


def labelled_mixture(schedule=None) -> GaussianMixture:
    """Four 2-D components, two per class, overlapping enough that guidance matters."""
    means = torch.tensor([[-2.0, 0.0], [0.0, 1.6], [2.0, 0.0], [0.0, -1.6]], dtype=torch.float64)
    covs = torch.tensor(
        [
            [[0.30, 0.10], [0.10, 0.20]],
            [[0.20, -0.05], [-0.05, 0.25]],
            [[0.25, 0.0], [0.0, 0.35]],
            [[0.30, 0.12], [0.12, 0.30]],
        ],
        dtype=torch.float64,
    )
    return GaussianMixture([0.3, 0.2, 0.3, 0.2], means, covs, labels=[0, 0, 1, 1], schedule=schedule)


def run(denoiser, n, method, kwargs, guide=None, cond=None, seed=0, **extra):
    g = torch.Generator().manual_seed(seed)
    x_T = denoiser.schedule.prior_std() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return core.sample(denoiser, x_T, method=method, guide=guide, cond=cond, generator=g, **kwargs, **extra)


def assert_moments(x, target: GaussianMixture, z: float = 4.5):
    """Sample mean and covariance within z standard errors of the target's (Gaussian approximation)."""
    n, mean, cov = x.shape[0], x.mean(0), torch.cov(x.T)
    c = target.covariance()
    d = c.diagonal()
    mean_se = (d / n).sqrt()
    cov_se = ((d[:, None] * d[None, :] + c**2) / n).sqrt()
    assert bool(((mean - target.mean()).abs() <= z * mean_se).all()), (mean, target.mean())
    assert bool(((cov - c).abs() <= z * cov_se).all()), (cov, c)


def class_of(gm: GaussianMixture, x0) -> torch.Tensor:
    """The most probable class of clean samples under the mixture."""
    return gm.class_log_posterior(x0, gm.schedule.t_min).argmax(1)


# --- 1. classifier guidance -----------------------------------------------------------------
@pytest.mark.parametrize("method,kwargs", SOLVERS)
def test_exact_classifier_guidance_samples_the_class_conditional(method, kwargs):
    gm = labelled_mixture()
    guide = ClassifierGuidance(lambda x, t, **cond: gm.class_log_posterior(x, t)[:, 1], scale=1.0)
    x = run(gm.as_denoiser(), N, method, kwargs, guide=guide)
    target = gm.condition(1)
    assert (class_of(gm, x) == 1).float().mean() >= 0.98
    assert_moments(x, target)


def test_classifier_guidance_scale_zero_is_unconditional_and_larger_scales_sharpen():
    gm = labelled_mixture()
    method, kwargs = SOLVERS[1]

    def entropy_of_class(scale):
        guide = ClassifierGuidance(lambda x, t, **cond: gm.class_log_posterior(x, t)[:, 1], scale=scale)
        x = run(gm.as_denoiser(), N, method, kwargs, guide=guide)
        p = gm.class_log_posterior(x, gm.schedule.t_min).exp()
        return x, -(p * p.clamp_min(1e-300).log()).sum(1).mean()

    x0, _ = entropy_of_class(0.0)
    assert_moments(x0, gm)
    _, h1 = entropy_of_class(1.0)
    _, h4 = entropy_of_class(4.0)
    assert h4 < 0.7 * h1


# --- 2. classifier-free guidance --------------------------------------------------------------
class CountingNet(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, t, y=None):
        self.calls += 1
        return self.net(x, t, y=y)


@pytest.mark.parametrize("method,kwargs", SOLVERS[:2])
def test_exact_classifier_free_guidance_scale_one_is_conditional_with_one_call_per_step(method, kwargs):
    gm = labelled_mixture()
    exact = gm.as_denoiser(conditional=True, null_label=-1)
    counting = CountingNet(exact.net)
    denoiser = core.Denoiser(counting, gm.schedule, exact.prediction)
    guide = ClassifierFree(1.0, uncond={"y": -1})
    y = torch.zeros(N, dtype=torch.long)
    x = run(denoiser, N, method, kwargs, guide=guide, cond={"y": y})
    assert counting.calls == kwargs["steps"]  # both branches in one batched call per NFE
    assert (class_of(gm, x) == 0).float().mean() >= 0.98
    assert_moments(x, gm.condition(0))


def test_classifier_free_guidance_scale_zero_is_the_unconditional_model():
    gm = labelled_mixture()
    guide = ClassifierFree(0.0, uncond={"y": -1})
    x = run(gm.as_denoiser(conditional=True), N, *SOLVERS[1], guide=guide, cond={"y": torch.zeros(N).long()})
    assert_moments(x, gm)


# --- 3. energy guidance: a quadratic energy on Gaussian data -----------------------------------
def gaussian_posterior(gm: GaussianMixture, x, t):
    """Posterior of x0 given x_t for a one-component mixture: mean (B, D), covariance (D, D)."""
    sch = gm.schedule
    t = torch.as_tensor(t).reshape(-1)[0]  # samplers pass one time for the whole batch
    a, s = sch.alpha(t).to(torch.float64), sch.sigma(t).to(torch.float64)
    m, cov = gm.means[0], gm.covs[0]
    eye = torch.eye(gm.dim, dtype=torch.float64)
    gain = a * cov @ torch.linalg.inv(a**2 * cov + s**2 * eye)  # (D, D)
    return m + (x - a * m) @ gain.T, cov - a * gain @ cov


def tilted_energy(gm, anchor, tau):
    """E_t(x) = -log E[exp(-|x0 - a|^2 / (2 tau^2)) | x_t = x]: exact guidance to p0(x) N(x; a, tau^2)."""

    def energy(x, t, **cond):
        mean, cov = gaussian_posterior(gm, x, t)
        c = cov + tau**2 * torch.eye(gm.dim, dtype=torch.float64)
        r = mean - anchor
        return 0.5 * (r @ torch.linalg.inv(c) * r).sum(1)

    return energy


@pytest.mark.parametrize("method,kwargs", SOLVERS)
def test_quadratic_energy_on_gaussian_data_gives_the_product_gaussian(method, kwargs):
    cov = torch.tensor([[0.6, 0.25], [0.25, 0.4]], dtype=torch.float64)
    gm = GaussianMixture([1.0], [[0.5, -0.3]], cov[None])
    anchor, tau = torch.tensor([1.5, 1.0], dtype=torch.float64), 0.5
    x = run(gm.as_denoiser(), N, method, kwargs, guide=Energy(tilted_energy(gm, anchor, tau), 1.0))
    prec = torch.linalg.inv(cov) + torch.eye(2, dtype=torch.float64) / tau**2
    target_cov = torch.linalg.inv(prec)
    target_mean = target_cov @ (torch.linalg.inv(cov) @ gm.means[0] + anchor / tau**2)
    assert_moments(x, GaussianMixture([1.0], target_mean[None], target_cov[None]))


def test_energy_through_x0_uses_the_network_gradient():
    """on="x0" differentiates E(x0(x_t)) through the denoiser: compare with autograd by hand."""
    gm = labelled_mixture()
    d = gm.as_denoiser()
    fn = lambda x0, t: (x0**2).sum(1)
    guide = Energy(fn, scale=0.7, on="x0")
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    _, eps = core.guidance.model_fn(d, guide)(x, t)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(d.x0(xr, t), t).sum(), xr)
    assert torch.allclose(eps, d.eps(x, t) + 0.7 * gm.schedule.sigma(t) * g, atol=1e-10)


# --- 4. inpainting ---------------------------------------------------------------------------
def mixture_3d() -> GaussianMixture:
    means = torch.tensor([[-1.0, 0.5, 0.0], [1.0, -0.5, 1.0], [0.0, 1.5, -1.0]], dtype=torch.float64)
    a = torch.tensor([[0.5, 0.2, 0.1], [0.0, 0.4, 0.2], [0.0, 0.0, 0.3]], dtype=torch.float64)
    covs = torch.stack([a @ a.T, a.T @ a, 0.15 * torch.eye(3, dtype=torch.float64)])
    return GaussianMixture([0.4, 0.35, 0.25], means, covs)


def known_coordinate_energy(gm: GaussianMixture, known: torch.Tensor, value: torch.Tensor):
    """-log p(x0[known] = value | x_t): the exact reconstruction energy of a mixture."""
    sch = gm.schedule
    eye = torch.eye(gm.dim, dtype=torch.float64)

    def energy(x, t, **cond):
        t0 = torch.as_tensor(t).reshape(-1)[0]  # samplers pass one time for the whole batch
        a, s = sch.alpha(t0).to(torch.float64), sch.sigma(t0).to(torch.float64)
        log_r = gm.component_posterior(x, t).clamp_min(1e-300).log()  # (B, K)
        terms = []
        for k in range(gm.num_components):
            m, c = gm.means[k], gm.covs[k]
            gain = a * c @ torch.linalg.inv(a**2 * c + s**2 * eye)
            mean = (m + (x - a * m) @ gain.T)[:, known]
            cov = (c - a * gain @ c)[known][:, known]
            dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
            terms.append(dist.log_prob(value.expand_as(mean)))
        return -torch.logsumexp(log_r + torch.stack(terms, 1), dim=1)

    return energy


def conditional_of_free(gm: GaussianMixture, known, free, value) -> GaussianMixture:
    """The oracle's conditional law of x0[free] given x0[known] = value."""
    w, means, covs = [], [], []
    for k in range(gm.num_components):
        m, c = gm.means[k], gm.covs[k]
        ckk, cfk = c[known][:, known], c[free][:, known]
        gain = cfk @ torch.linalg.inv(ckk)
        lik = torch.distributions.MultivariateNormal(m[known], covariance_matrix=ckk).log_prob(value)
        w.append(gm.weights[k].log() + lik)
        means.append(m[free] + gain @ (value - m[known]))
        covs.append(c[free][:, free] - gain @ cfk.T)
    return GaussianMixture(torch.stack(w).softmax(0), torch.stack(means), torch.stack(covs))


@pytest.mark.parametrize("method,kwargs", SOLVERS[:2])
def test_inpainting_fixes_known_entries_and_samples_the_exact_conditional(method, kwargs):
    gm = mixture_3d()
    known, free = torch.tensor([0, 2]), torch.tensor([1])
    value = torch.tensor([0.2, 0.3], dtype=torch.float64)
    mask = torch.zeros(3, dtype=torch.bool)
    mask[known] = True
    values = torch.zeros(3, dtype=torch.float64)
    values[known] = value
    guide = combine(Inpaint(mask, values), Energy(known_coordinate_energy(gm, known, value), 1.0))
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(N, 3, generator=g, dtype=torch.float64)
    x, traj = core.sample(gm.as_denoiser(), x_T, method=method, guide=guide, return_trajectory=True, **kwargs)
    assert torch.equal(traj[:, :, known], value.expand(traj.shape[0], N, 2))  # exact at every step
    assert_moments(x[:, free], conditional_of_free(gm, known, free, value))


def test_inpaint_alone_keeps_entries_fixed_for_every_sampler():
    gm = mixture_3d()
    mask = torch.tensor([True, False, False])
    values = torch.tensor([0.7, 0.0, 0.0], dtype=torch.float64)
    for method in core.sampling.method_names():
        if method.startswith("analytic"):
            continue
        x_T = torch.randn(16, 3, dtype=torch.float64)
        _, traj = core.sample(
            gm.as_denoiser(), x_T, method=method, steps=6, guide=Inpaint(mask, values), return_trajectory=True
        )
        assert bool((traj[..., 0] == 0.7).all()), method


# --- 5. the same guides on a flow-matching (LinearSchedule) oracle ----------------------------
@pytest.mark.parametrize("method,kwargs", [("heun", dict(steps=40)), ("dpm_solver++", dict(steps=25))])
def test_guides_work_unchanged_on_a_flow_matching_model(method, kwargs):
    gm = labelled_mixture(core.LinearSchedule())
    velocity_model = gm.as_denoiser(prediction="velocity")
    guide = ClassifierGuidance(lambda x, t, **cond: gm.class_log_posterior(x, t)[:, 1], scale=1.0)
    x = run(velocity_model, N, method, kwargs, guide=guide)
    assert (class_of(gm, x) == 1).float().mean() >= 0.98
    assert_moments(x, gm.condition(1))


# --- plumbing: combination, windows, clipping, memory, bad input ------------------------------
def test_combine_weights_windows_and_clipping():
    gm = labelled_mixture()
    d = gm.as_denoiser()
    x = torch.randn(4, 2, dtype=torch.float64)
    lin = Energy(lambda x, t, **c: (x * torch.tensor([3.0, -4.0], dtype=x.dtype)).sum(1), 1.0)  # grad (3, -4)
    t_in, t_out = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    base = d.eps(x, t_in)
    sigma = gm.schedule.sigma(t_in)
    fn = core.guidance.model_fn(d, combine(lin, lin, weights=[2.0, 0.5], windows=[(0.0, 0.5), None]))
    assert torch.allclose(fn(x, t_in)[1] - base, 2.5 * sigma * torch.tensor([3.0, -4.0], dtype=x.dtype))
    out = fn(x, t_out)[1] - d.eps(x, t_out)
    assert torch.allclose(out, 0.5 * gm.schedule.sigma(t_out) * torch.tensor([3.0, -4.0], dtype=x.dtype))
    clipped = core.guidance.model_fn(d, combine(lin, clip_norm=1.0))(x, t_in)[1] - base
    assert torch.allclose(clipped.norm(dim=1), torch.full((4,), 1.0, dtype=x.dtype))
    # x0 and eps stay consistent: x = alpha x0 + sigma eps
    x0, eps = fn(x, t_in)
    assert torch.allclose(gm.schedule.alpha(t_in) * x0 + sigma * eps, x)


def test_guided_sampling_keeps_no_graph():
    gm = labelled_mixture()
    guide = Energy(lambda x, t, **cond: (x**2).sum(1), 0.5, on="x0")
    x = run(gm.as_denoiser(), 8, "dpm_solver++", dict(steps=5), guide=guide)
    assert x.grad_fn is None and not x.requires_grad


def test_projection_helpers():
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])
    assert torch.allclose(Project.zero_mean(1).project(x, 0.5).mean(1), torch.zeros(1, 2))
    assert float(Project.box(-1, 1).project(x, 0.5).max()) == 1.0


def test_bad_input_errors():
    gm = labelled_mixture()
    d = gm.as_denoiser()
    x_T = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="one value per sample"):
        core.sample(d, x_T, steps=3, guide=Energy(lambda x, t, **cond: x, 1.0))
    with pytest.raises(GuidanceError, match=r"step 0, t = 1"):
        core.sample(d, x_T, steps=3, guide=Energy(lambda x, t, **cond: (x * math.nan).sum(1), 1.0))
    with pytest.raises(ValueError, match="do not broadcast"):
        core.sample(d, x_T, steps=3, guide=Inpaint(torch.ones(3, dtype=torch.bool), torch.zeros(3)))
    with pytest.raises(ValueError, match="do not broadcast"):
        Inpaint(torch.ones(3, dtype=torch.bool), torch.zeros(2))
    with pytest.raises(ValueError, match="bool"):
        Inpaint(torch.ones(2), torch.zeros(2))
    for bad in (math.inf, math.nan, "strong", None):
        with pytest.raises(ValueError, match="finite number"):
            Energy(lambda x, t, **cond: x.sum(1), bad)
    with pytest.raises(ValueError, match="at most one"):
        combine(ClassifierFree(2.0, {"y": -1}), ClassifierFree(1.0, {"y": -1}))
    with pytest.raises(ValueError, match="needs cond"):
        core.sample(gm.as_denoiser(conditional=True), x_T, steps=2, guide=ClassifierFree(2.0, {"y": -1}))
    with pytest.raises(ValueError, match="Guide"):
        combine(lambda x, t: x)
    assert isinstance(combine(Guide()), Guide)
