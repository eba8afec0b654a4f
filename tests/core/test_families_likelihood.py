"""Likelihood families: exactness against closed forms, quadrature and autograd Jacobians."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from core.data import binarize
from core.families import (
    FVSBN,
    NADE,
    RNADE,
    VAE,
    ConvergenceError,
    ImpFlow,
    RealNVP,
    ResidualFlow,
    VFlow,
    bits_per_dim,
    count_parameters,
    dequantize,
    implicit_solve,
    iwae_loss,
    log_likelihood,
    residual_logdet,
    solve_fixed_point,
)
from core.families.flows import (
    AffineCoupling,
    LogitTransform,
    MultiScaleFlow,
    channel_mask,
    checkerboard_mask,
)


def _all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))


def _randomise(module: nn.Module, std: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


# --- autoregressive --------------------------------------------------------------------------
@pytest.mark.parametrize("model", [NADE(6, hidden=5), FVSBN(6)])
def test_autoregressive_probabilities_sum_to_one(model):
    _randomise(model, 1.0)
    p = model.log_prob(_all_binary(6)).double().exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (p > 0).all() and p.std() > 1e-3  # a non-trivial distribution


def test_nade_parameters_and_sampling_match_its_likelihood():
    d, h = 4, 3
    model = NADE(d, hidden=h)
    _randomise(model, 1.5)
    assert count_parameters(model) == 2 * h * d + h + d  # shared weights: O(HD)
    x = model.sample(20000)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    codes = (x * (2 ** torch.arange(d - 1, -1, -1))).sum(1).long()
    freq = torch.bincount(codes, minlength=2**d).double() / len(x)
    exact = model.log_prob(_all_binary(d)).double().exp()
    assert (freq - exact).abs().max() < 0.015


def test_rnade_density_integrates_to_one():
    model = RNADE(2, hidden=4, components=3)
    _randomise(model, 0.25)
    g = torch.linspace(-12, 12, 1001)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    dens = model.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).double().exp()
    step = (g[1] - g[0]).item()
    assert (dens.sum() * step * step).item() == pytest.approx(1.0, abs=1e-3)
    assert model.sample(5).shape == (5, 2)


def test_binary_models_reject_non_binary_data():
    with pytest.raises(ValueError, match="binary"):
        NADE(4, 3).log_prob(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="binary"):
        VAE((4,), latent_dim=2, hidden=8).elbo(torch.full((2, 4), 0.3))
    with pytest.raises(ValueError, match="dimensions"):
        NADE(4, 3).log_prob(torch.zeros(2, 5))


# --- VAE / IWAE ------------------------------------------------------------------------------
def _tiny_vae() -> VAE:
    torch.manual_seed(1)
    model = VAE((5,), latent_dim=1, hidden=8)
    _randomise(model, 0.8)
    with torch.no_grad():  # a broad proposal q(z|x) = N(0.3, 1.5^2): the estimator must still agree
        last = model.encoder[-1][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.3, math.log(1.5)]))
    return model


def _quadrature_log_px(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log int p(x|z) N(z; 0, 1) dz by the trapezoid rule on a fine grid (1-D latent)."""
    z = torch.linspace(-9, 9, 20001).unsqueeze(-1)
    log_pz = -0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    out = []
    for xb in x:
        lpx = model.log_px_given_z(xb.unsqueeze(0), z.unsqueeze(1))[:, 0] + log_pz
        out.append(torch.logsumexp(lpx.double(), 0) + math.log((z[1] - z[0]).item()))
    return torch.stack(out)


def test_importance_sampled_likelihood_matches_quadrature_and_bounds_tighten():
    model = _tiny_vae()
    x = _all_binary(5)[::3]
    with torch.no_grad():
        exact = _quadrature_log_px(model, x)
        est = log_likelihood(model, x, k=5000, chunk=1000).double()
        assert (est - exact).abs().max() < 0.02
        bounds = [torch.stack([model.iwae_bound(x, k) for _ in range(200)]).mean().item() for k in (1, 5, 50)]
        elbo = torch.stack([model.elbo(x) for _ in range(200)]).mean().item()
    assert bounds[0] < bounds[1] < bounds[2] < exact.mean().item() + 1e-3
    assert elbo == pytest.approx(bounds[0], abs=0.05)  # analytic-KL ELBO = L_1 in expectation


@pytest.mark.parametrize("arch,decoder", [("mlp", "gaussian"), ("conv", "bernoulli")])
def test_vae_architectures_train_and_sample(arch, decoder):
    model = VAE((1, 8, 8), latent_dim=3, hidden=16, decoder=decoder, arch=arch)
    x = torch.rand(4, 1, 8, 8)
    x = x.round() if decoder == "bernoulli" else x
    loss = iwae_loss(3)(model, (x,))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.sample(2).shape == (2, 1, 8, 8)


def test_k_below_one_is_rejected():
    model = VAE((4,), latent_dim=2, hidden=8)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            model.iwae_bound(torch.zeros(1, 4), bad)
    with pytest.raises(ValueError, match="must be an int >= 1"):
        iwae_loss(0)
    with pytest.raises(ValueError, match="must be an int >= 1"):
        VFlow((1, 4, 4), hidden=4).log_prob_bound(torch.rand(1, 1, 4, 4), 0)


# --- coupling flows --------------------------------------------------------------------------
def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    out = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda z: fn(z.unsqueeze(0))[0], xb)
        out.append(torch.linalg.slogdet(jac.reshape(xb.numel(), xb.numel()))[1])
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["affine", "additive"])
@pytest.mark.parametrize("mask", [checkerboard_mask((2, 4, 4), 1), channel_mask((2, 4, 4))])
def test_coupling_logdet_matches_autograd_jacobian(kind, mask):
    layer = AffineCoupling(mask, hidden=6, coupling=kind).double()
    _randomise(layer)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    y, ld = layer(x)
    torch.testing.assert_close(ld, _jacobian_logdet(lambda z: layer(z)[0], x))
    torch.testing.assert_close(layer.inverse(y), x)
    assert torch.equal(y * mask, x * mask)  # the conditioning half passes through


def test_multiscale_flow_logdet_and_inverse_are_exact():
    flow = MultiScaleFlow((1, 4, 4), num_scales=2, hidden=4, couplings=2).double()
    _randomise(flow, 0.2)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    z, ld = flow(x)
    torch.testing.assert_close(ld, _jacobian_logdet(lambda v: flow(v)[0].reshape(v.shape), x))
    torch.testing.assert_close(flow.inverse(z), x)
    logit = LogitTransform().double()
    u = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(logit(u)[1], _jacobian_logdet(lambda v: logit(v)[0], u))


def test_realnvp_and_nice_sample_and_reject_wrong_shapes():
    for kind in ("affine", "additive"):
        model = RealNVP((1, 8, 8), hidden=4, coupling=kind)
        s = model.sample(3)
        assert s.shape == (3, 1, 8, 8) and 0 <= s.min() and s.max() <= 1
        assert torch.isfinite(model.log_prob(s.clamp(0, 0.999))).all()
    with pytest.raises(ValueError, match="masks are for inputs"):
        RealNVP((1, 8, 8), hidden=4).log_prob(torch.rand(2, 1, 6, 6))
    with pytest.raises(ValueError, match="mask has shape"):
        AffineCoupling(checkerboard_mask((1, 4, 4)), 4)(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="squeezed"):
        RealNVP((1, 6, 6), num_scales=3)


def test_dequantisation_and_bits_per_dim():
    levels = torch.randint(0, 256, (4, 1, 3, 3)).float()
    y = dequantize(levels, generator=torch.Generator().manual_seed(0))
    assert ((y * 256).floor() == levels).all()
    # the uniform density on [0, 1)^D is the uniform distribution over 256 levels: 8 bits per dim
    assert bits_per_dim(torch.zeros(4), 9).tolist() == pytest.approx([8.0] * 4)
    with pytest.raises(ValueError, match="levels"):
        dequantize(torch.tensor([0.5]))


def test_static_binarisation_is_deterministic():
    x = torch.rand(10, 1, 4, 4) * 2 - 1
    assert torch.equal(binarize(x, 3), binarize(x, 3)) and not torch.equal(binarize(x, 3), binarize(x, 4))
    assert set(binarize(x, 0).unique().tolist()) <= {0.0, 1.0}


def test_vflow_bound_is_below_its_importance_weighted_bound():
    torch.manual_seed(0)
    model = VFlow((1, 4, 4), hidden=4, q_hidden=4)
    _randomise(model.q_net, 0.3)
    x = torch.rand(6, 1, 4, 4)
    with torch.no_grad():
        l1 = torch.stack([model.log_prob_bound(x, 1) for _ in range(30)]).mean()
        l20 = torch.stack([model.log_prob_bound(x, 20) for _ in range(30)]).mean()
    assert l1 < l20
    assert model.sample(2).shape == (2, 1, 4, 4)


# --- residual flows, ImpFlow -----------------------------------------------------------------
def test_power_series_estimator_is_unbiased_on_a_contraction():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    a = 0.7 * a / torch.linalg.matrix_norm(a, 2)
    g = lambda x: x @ a.T  # noqa: E731  J_g = A, Lip 0.7
    x = torch.zeros(1, 4, dtype=torch.float64)
    exact = torch.linalg.slogdet(torch.eye(4, dtype=torch.float64) + a)[1].item()
    gen = torch.Generator().manual_seed(1)
    # exact traces isolate the Russian roulette; Hutchinson probes (one per row of a 500-row batch
    # sharing one truncation draw) add the trace noise. Each call's batch mean is one sample.
    for hutch, rows, n in ((False, 1, 1500), (True, 500, 400)):
        xs = x.expand(rows, 4)
        draws = torch.stack(
            [
                residual_logdet(g, xs, n_exact=1, p=0.5, hutchinson=hutch, generator=gen)[1].mean()
                for _ in range(n)
            ]
        )
        se = draws.std().item() / math.sqrt(n)
        assert se > 1e-4  # a random estimate, not a deterministic truncation
        assert abs(draws.mean().item() - exact) < 4 * se


def _contraction(dim: int = 3) -> nn.Module:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, dim)).double()
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.mul_(0.8 / torch.linalg.matrix_norm(layer.weight, 2))
    return net


@pytest.mark.parametrize("method", ["fixed_point", "broyden"])
def test_implicit_gradients_match_an_unrolled_solve(method):
    g = _contraction()
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64)
    y = implicit_solve(g, z, method=method, tol=1e-12, max_iter=200)
    assert (y + g(y) - z).abs().max() < 1e-9
    grads = torch.autograd.grad((y * w).sum(), [z, *g.parameters()])
    y_unrolled = z.clone()
    for _ in range(200):
        y_unrolled = z - g(y_unrolled)
    ref = torch.autograd.grad((y_unrolled * w).sum(), [z, *g.parameters()])
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    # and against finite differences in one parameter
    p = g[0].bias
    eps = 1e-6
    with torch.no_grad():
        p[0] += eps
        up = (solve_fixed_point(g, z.detach(), tol=1e-13, max_iter=400)[0] * w).sum()
        p[0] -= 2 * eps
        down = (solve_fixed_point(g, z.detach(), tol=1e-13, max_iter=400)[0] * w).sum()
        p[0] += eps
    assert grads[2][0].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5)


def test_implicit_gradients_by_broyden_need_no_contraction():
    """Broyden solves y + A y = z and its adjoint for a linear map with |A| = 1.3 > 1, where
    plain fixed-point iteration diverges; the gradient is the closed form (I + A^T)^-1 w."""
    torch.manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    g = nn.Linear(4, 4, bias=False).double()
    with torch.no_grad():
        g.weight.copy_(1.3 * q)
    z = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.float64)
    y = implicit_solve(g, z, method="broyden", tol=1e-12, max_iter=50)
    m = torch.eye(4, dtype=torch.float64) + g.weight.detach().T  # y (I + W^T) = z, row-wise
    torch.testing.assert_close(y, torch.linalg.solve(m, z.detach(), left=False))
    (grad_z,) = torch.autograd.grad((y * w).sum(), z)
    torch.testing.assert_close(grad_z, torch.linalg.solve(m.T, w, left=False))
    with pytest.raises(ConvergenceError):
        implicit_solve(g, z, method="fixed_point", tol=1e-12, max_iter=50)


def test_diverging_solve_reports_residual_and_iterations():
    with pytest.raises(ConvergenceError, match=r"residual .* after 30 iterations"):
        solve_fixed_point(lambda y: 2.0 * y, torch.ones(2, 3), max_iter=30)
    with pytest.raises(ConvergenceError, match="after"):
        solve_fixed_point(lambda y: -1.5 * y + torch.sin(y), torch.ones(2, 3), method="broyden", max_iter=3)
    with pytest.raises(ValueError, match="unknown solver"):
        solve_fixed_point(lambda y: y, torch.ones(1), method="newton")


@pytest.mark.parametrize("cls,blocks", [(ResidualFlow, 2), (ImpFlow, 1)])
def test_residual_and_implicit_flows_estimate_the_exact_log_density(cls, blocks):
    torch.manual_seed(0)
    model = cls((1, 4, 4), blocks=blocks, hidden=8).double().eval()
    _randomise(model, 0.5)
    model.train()  # the spectral normalisation re-estimates sigma for the new weights
    for m in model.modules():
        if hasattr(m, "_power_iteration"):
            m._power_iteration(200)
            m._seen_version = m.conv.weight._version
    model.eval()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    exact = model.log_prob(x, exact=True)
    with torch.no_grad():
        est = torch.stack([model.log_prob(x) for _ in range(80)])
    assert (est.mean(0) - exact).abs().max() < 4 * est.std(0).max() / math.sqrt(80) + 1e-4
    # invertibility: the model's sample path inverts its forward map
    y = torch.nn.functional.pixel_unshuffle(model.logit(x)[0], 2)
    for block in model.blocks:
        block.tol = 1e-10
        y_next, _ = block(y, exact=True)
        torch.testing.assert_close(block.inverse(y_next), y, rtol=1e-4, atol=1e-5)
        y = y_next
    with pytest.raises(ValueError, match="built for inputs"):
        model.log_prob(torch.rand(1, 1, 6, 6, dtype=torch.float64))


def test_spectral_norm_state_resumes_exactly():
    """A flow restored from a state dict continues training exactly as the uninterrupted one."""

    def step(model, opt, seed):
        torch.manual_seed(seed)
        loss = -model.log_prob(torch.rand(4, 1, 4, 4) * 0.9 + 0.05).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(0)
    a = ImpFlow((1, 4, 4), blocks=1, hidden=4)
    opt_a = torch.optim.Adam(a.parameters(), 1e-2)
    step(a, opt_a, 1)
    state, opt_state = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict())
    b = ImpFlow((1, 4, 4), blocks=1, hidden=4)
    b.load_state_dict(state)
    opt_b = torch.optim.Adam(b.parameters(), 1e-2)
    opt_b.load_state_dict(opt_state)
    step(a, opt_a, 2)
    step(b, opt_b, 2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_residual_and_implicit_flows_train_one_step():
    for model in (ResidualFlow((1, 4, 4), blocks=2, hidden=4), ImpFlow((1, 4, 4), blocks=1, hidden=4)):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        loss = -model.log_prob(torch.rand(4, 1, 4, 4)).mean()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        assert model.sample(2).shape == (2, 1, 4, 4)
