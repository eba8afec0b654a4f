"""Samplers: every method on every schedule, flows through DPM-Solver++, trajectories, guides,
progress bars and every bad input. (Convergence orders live in test_convergence.py.)"""

import pytest
import torch

from core import LinearSchedule, VESchedule, VPSchedule
from core.guidance import Guide
from core.sampling import (
    DEFAULT_GRID,
    DEFAULT_METHOD,
    get_method,
    grid_names,
    make_grid,
    method_names,
    sample,
)
from core.schedules import linear_betas
from core.testing import GaussianMixture

from . import test_sampler_battery as battery

SCHEDULES = {
    "vp_linear": VPSchedule.linear(),
    "vp_cosine": VPSchedule.cosine(),
    "vp_discrete": VPSchedule.discrete(linear_betas(1000)),
    "ve": VESchedule(sigma_min=0.01, sigma_max=20.0),
    "linear": LinearSchedule(),
}
# every (method, order, multistep) the registry declares; options a method requires (the
# Analytic-DPM Gamma table) come from the shared battery's helper
CONFIGS = battery.CONFIGS


def _oracle(name, prediction="eps", dim=2):
    sch = SCHEDULES[name]
    gm = GaussianMixture.random(dim, k=4, seed=0, schedule=sch)
    return gm, gm.as_denoiser(prediction)


def _x_T(sch, b=8, d=2, seed=1):
    return sch.prior_std() * torch.randn(
        b, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("method,order,multistep", CONFIGS)
@pytest.mark.parametrize("grid", ["logsnr", "karras"])
def test_every_method_runs_on_every_schedule(name, method, order, multistep, grid):
    gm, den = _oracle(name, "velocity" if name == "linear" else "eps")
    x_T = _x_T(den.schedule)
    x = sample(
        den,
        x_T,
        method=method,
        steps=6,
        order=order,
        multistep=multistep,
        grid=grid,
        generator=torch.Generator().manual_seed(0),
        **battery._options(method),
    )
    assert x.shape == x_T.shape and x.dtype == x_T.dtype and bool(torch.isfinite(x).all())
    if method != "euler_maruyama":  # explicit EM is unstable near t_max of VE / flow paths at 6 steps
        assert float(x.abs().max()) < 10.0  # the data lie within radius ~3


@pytest.mark.parametrize("name", ["vp_linear", "vp_discrete", "ve"])
def test_grids_follow_their_definitions(name):
    """Each grid is uniform in its own variable, checked through the schedule's log-SNR:
    t, lambda = log(alpha / sigma), sqrt(t) (time_quadratic) and (sigma / alpha)^(1 / 7) (EDM's
    Karras spacing with rho = 7), from t_start exactly to t_end exactly."""
    sch = SCHEDULES[name]
    t0, t1, n = sch.t_max, max(sch.t_min, 2e-3), 9
    variables = {
        "time_uniform": lambda t: t,
        "logsnr": lambda t: sch.log_snr(t),
        "time_quadratic": lambda t: t.sqrt(),
        "karras": lambda t: torch.exp(-sch.log_snr(t) / 7.0),
    }
    assert sorted(variables) == sorted(grid_names())
    for grid, var in variables.items():
        ts = make_grid(grid, sch, n, t0, t1)
        assert ts.dtype == torch.float64 and ts.shape == (n + 1,)
        assert float(ts[0]) == t0 and float(ts[-1]) == t1 and bool((ts.diff() < 0).all())
        u = var(ts)
        step = (u[-1] - u[0]) / n
        assert torch.allclose(u.diff(), step.expand(n), rtol=1e-9, atol=1e-12), grid


@pytest.mark.parametrize("grid", grid_names())
def test_float32_state_matches_float64(grid):
    _, den = _oracle("vp_linear")
    x_T = _x_T(den.schedule)
    x32 = sample(den, x_T.float(), steps=8, grid=grid)
    assert x32.dtype == torch.float32
    assert torch.allclose(x32.double(), sample(den, x_T, steps=8, grid=grid), rtol=0, atol=1e-4)


def test_deterministic_solvers_agree_with_the_reference():
    gm, den = _oracle("vp_linear")
    x_T = _x_T(den.schedule, b=16)
    ref = gm.reference_solution(x_T)
    for method, steps in [("dpm_solver", 40), ("dpm_solver++", 40), ("heun", 60), ("ddim", 500)]:
        err = float((sample(den, x_T, method=method, steps=steps) - ref).norm(dim=1).median())
        assert err < 5e-3, (method, err)


def test_flow_matching_through_dpm_solver_pp_equals_heun():
    gm, den = _oracle("linear", "velocity")
    x_T = _x_T(den.schedule, b=16)
    a = sample(den, x_T, method="dpm_solver++", steps=200)
    b = sample(den, x_T, method="heun", steps=200)
    assert float((a - b).norm(dim=1).max()) < 1e-3
    assert float((a - gm.reference_solution(x_T)).norm(dim=1).max()) < 2e-3


def test_stochastic_methods_are_reproducible_and_sample_the_marginal():
    gm, den = _oracle("vp_linear")
    x_T = _x_T(den.schedule, b=2000)
    for method in ("ddpm", "euler_maruyama"):
        runs = [
            sample(den, x_T, method=method, steps=30, generator=torch.Generator().manual_seed(3))
            for _ in range(2)
        ]
        assert torch.equal(runs[0], runs[1])
    x = sample(
        den, x_T, method="ddpm", steps=100, variance="beta", generator=torch.Generator().manual_seed(4)
    )
    assert torch.allclose(x.mean(0), gm.mean(), atol=0.15)
    y = sample(den, x_T, method="ddim", eta=1.0, steps=100, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(y.mean(0), gm.mean(), atol=0.15)


def test_trajectory_and_progress_bar(capsys):
    _, den = _oracle("vp_linear")
    x_T = _x_T(den.schedule)
    x, traj = sample(den, x_T, method="heun", steps=5, return_trajectory=True, progress=True)
    assert traj.shape == (6, *x_T.shape) and torch.equal(traj[0], x_T) and torch.equal(traj[-1], x)
    assert "heun" in capsys.readouterr().err
    assert torch.equal(x, sample(den, x_T, method="heun", steps=5))


class Recorder(Guide):
    """Projects onto x[:, 0] = 0 and records every call."""

    def __init__(self):
        self.projected, self.corrected = [], 0

    def correction(self, x, t, x0, eps, denoiser, cond=None):
        self.corrected += 1
        return torch.zeros_like(x)

    def project(self, x, t, cond=None):
        self.projected.append(float(t[0]))
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:]], 1)


@pytest.mark.parametrize(
    "method,order,multistep",
    [("ddpm", 1, False), ("heun", 1, False), ("dpm_solver++", 3, False), ("dpm_solver", 3, True)],
)
def test_guide_projects_every_step_and_corrects_every_evaluation(method, order, multistep):
    _, den = _oracle("vp_linear")
    g = Recorder()
    steps = 5
    x = sample(
        den,
        _x_T(den.schedule),
        method=method,
        order=order,
        multistep=multistep,
        steps=steps,
        guide=g,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(g.projected) == steps + 1 and g.projected[0] == pytest.approx(den.schedule.t_max)
    assert g.corrected == get_method(method).nfe(steps, order, multistep)
    assert bool((x[:, 0] == 0).all())


def test_no_grad_without_guide():
    _, den = _oracle("vp_linear")
    x_T = _x_T(den.schedule).requires_grad_(True)
    assert not sample(den, x_T, steps=3).requires_grad


def test_defaults():
    assert (DEFAULT_METHOD, DEFAULT_GRID) == ("dpm_solver", "logsnr")
    m = get_method(DEFAULT_METHOD)
    assert (m.default_order, m.default_multistep) == (3, True)
    assert {"ddpm", "ddim", "euler_maruyama", "euler", "heun", "dpm_solver", "dpm_solver++"} <= set(
        method_names()
    )
    assert get_method("heun").nfe(10, 1, False) == 19 and get_method("dpm_solver++").nfe(10, 3, False) == 30


def test_explicit_grid():
    gm, den = _oracle("vp_linear")
    ts = torch.linspace(1.0, 1e-3, 11, dtype=torch.float64)
    x_T = _x_T(den.schedule)
    assert torch.equal(sample(den, x_T, grid=ts), sample(den, x_T, grid="time_uniform", steps=10))


class Counting(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.calls = fn, 0

    def forward(self, x, t):
        self.calls += 1
        return self.fn(x)


def test_bad_inputs():
    _, den = _oracle("vp_linear")
    x_T = _x_T(den.schedule)
    cases = [
        (
            dict(method="dpm-solver"),
            ValueError,
            r"unknown sampling method 'dpm-solver'; expected one of \[.*'ddim'",
        ),
        (
            dict(grid="uniform"),
            ValueError,
            r"unknown grid 'uniform'; expected one of \['time_uniform', 'logsnr'",
        ),
        (dict(steps=0), ValueError, "steps must be an integer >= 1, got 0"),
        (dict(steps=2.5), ValueError, "steps must be an integer"),
        (dict(t_start=0.5, t_end=0.5), ValueError, "need t_end < t_start"),
        (dict(t_start=0.2, t_end=0.6), ValueError, "need t_end < t_start"),
        (dict(t_start=2.0), ValueError, r"times must lie in the schedule's \[t_min, t_max\]"),
        (dict(order=4), ValueError, "order must be 1, 2 or 3, got 4"),
        (dict(order=0), ValueError, "order must be 1, 2 or 3, got 0"),
        (dict(method="ddim", order=2), ValueError, r"method 'ddim' supports order \[1\], got 2"),
        (dict(method="heun", multistep=True), ValueError, r"method 'heun' supports multistep in \[False\]"),
        (dict(method="heun", eta=0.5), ValueError, "method 'heun' has no eta"),
        (dict(method="ddim", eta=1.5), ValueError, r"eta must be a number in \[0, 1\], got 1.5"),
        (dict(method="ddpm", variance="large"), ValueError, "variance must be 'beta' or 'beta_tilde'"),
        (dict(method="ddim", colour=1), TypeError, r"unknown option\(s\) \['colour'\] for method 'ddim'"),
        (dict(method="dpm_solver++", corrected=True), ValueError, "third-order multistep solver only"),
        (dict(grid=torch.tensor([1.0, 0.5, 0.7])), ValueError, "strictly decreasing"),
        (dict(grid=torch.tensor([1.0, 0.5]), steps=3), ValueError, "disagrees with the explicit grid"),
        (dict(lower_order_final="yes"), ValueError, "lower_order_final must be a bool"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            sample(den, x_T, **kwargs)
    with pytest.raises(ValueError, match="x_T must be a floating-point tensor"):
        sample(den, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="must be a core.Denoiser"):
        sample(den.net, x_T)


@pytest.mark.parametrize("method", ["ddpm", "heun", "dpm_solver", "dpm_solver++"])
def test_bad_network_shape_fails_on_the_first_call(method):
    from core import Denoiser

    net = Counting(lambda x: x[:, :1])
    den = Denoiser(net, VPSchedule.linear())
    x_T = torch.randn(4, 2)
    with pytest.raises(
        ValueError, match=r"network output shape \(4, 1\) differs from its input shape \(4, 2\)"
    ):
        sample(den, x_T, method=method, steps=5)
    assert net.calls == 1 and not den._time_cache


def test_consistency_method_is_the_consistency_model_renoised():
    """method="consistency" evaluates ConsistencyModel f at each grid time and re-noises with
    the same draws in between; f at the boundary is the identity and one step from the exact
    oracle is its DDIM jump to t_min."""
    from core.objectives import ConsistencyModel

    _, den = _oracle("vp_linear")
    sch = den.schedule
    f = ConsistencyModel(den)
    x_T = _x_T(sch, b=16)
    grid = torch.tensor([sch.t_max, 0.6, 0.2, sch.t_min], dtype=torch.float64)
    ours = sample(den, x_T, method="consistency", grid=grid, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    x = f(x_T, grid[0])
    for tau in grid[1:-1]:
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = f(sch.alpha(tau) * x + sch.sigma(tau) * z, tau)
    assert torch.allclose(ours, x, rtol=0, atol=1e-12)
    assert torch.equal(f(x_T, sch.t_min), x_T)
    one = sample(den, x_T, method="consistency", steps=1)
    assert torch.allclose(one, sample(den, x_T, method="ddim", steps=1), rtol=0, atol=1e-12)
    assert get_method("consistency").nfe(3, 1, False) == 3
