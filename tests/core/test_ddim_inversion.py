"""DDIM inversion against closed forms: the probability-flow ODE map of Gaussian data, and
reconstruction by DDIM sampling on the same grid (first order in the step count)."""

import pytest
import torch

from core import ddim_invert, sample
from core.guidance import ClassifierFree
from core.oracle import GaussianMixture
from core.schedules import VPSchedule

torch.set_num_threads(1)


def _gaussian():
    means = torch.tensor([[1.5, -0.5, 0.25]], dtype=torch.float64)
    variances = torch.tensor([[0.3, 2.0, 0.05]], dtype=torch.float64)
    return GaussianMixture([1.0], means, variances, schedule=VPSchedule.linear()), means[0], variances[0]


def _flow_map(x, t0, t1, sch, m, c):
    """The PF-ODE map of N(m, diag c) data: the standardised value is conserved."""
    a0, s0, a1, s1 = sch.alpha(t0), sch.sigma(t0), sch.alpha(t1), sch.sigma(t1)
    z = (x - a0 * m) / torch.sqrt(a0**2 * c + s0**2)
    return a1 * m + torch.sqrt(a1**2 * c + s1**2) * z


def test_inversion_follows_the_exact_flow_map_to_first_order():
    gm, m, c = _gaussian()
    den = gm.as_denoiser("eps")
    sch = gm.schedule
    x = gm.sample(64, generator=torch.Generator().manual_seed(0))
    exact = _flow_map(x, sch.t_min, sch.t_max, sch, m, c)
    errors = []
    for steps in (100, 400):
        z = ddim_invert(den, x, steps=steps, grid="logsnr")
        errors.append(float((z - exact).abs().max()))
    assert errors[1] < 0.025
    # first order: four times the steps, a quarter of the error
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_inversion_then_ddim_sampling_returns_the_data():
    gm = GaussianMixture.random(4, k=3, seed=1)
    den = gm.as_denoiser("eps")
    x = gm.sample(32, generator=torch.Generator().manual_seed(2))
    errors = []
    for steps in (50, 200):
        z, traj = ddim_invert(den, x, steps=steps, grid="time_uniform", return_trajectory=True)
        assert traj.shape == (steps + 1, *x.shape) and torch.equal(traj[0], x) and torch.equal(traj[-1], z)
        back = sample(den, z, method="ddim", steps=steps, grid="time_uniform")
        errors.append(float((back - x).abs().max()))
    assert errors[1] < 0.1
    assert 3.0 < errors[0] / errors[1] < 5.0


def test_inversion_accepts_a_guide_and_keeps_the_grid_of_sampling():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    gm = GaussianMixture([0.5, 0.5], means, torch.full((2, 2), 0.2, dtype=torch.float64), labels=[0, 1])
    den = gm.as_denoiser("eps", conditional=True)
    y = torch.tensor([0, 1, 1])
    x = gm.condition(0).sample(3, generator=torch.Generator().manual_seed(4))
    guide = ClassifierFree(3.0, {"y": -1})
    errors = []
    for steps in (100, 400):
        z = ddim_invert(den, x, steps=steps, guide=guide, cond={"y": y})
        back = sample(den, z, method="ddim", steps=steps, guide=guide, cond={"y": y})
        errors.append(float((back - x).abs().max()))
    assert errors[1] < 0.2 and errors[0] / errors[1] > 3.0
    # the guided trajectory differs from the unguided one
    z_plain = ddim_invert(den, x, steps=400, cond={"y": y})
    assert float((z - z_plain).abs().max()) > 0.1


def test_inversion_rejects_bad_input():
    gm, _, _ = _gaussian()
    den = gm.as_denoiser("eps")
    with pytest.raises(ValueError, match="x must be"):
        ddim_invert(den, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="need t_end < t_start"):
        ddim_invert(den, torch.zeros(2, 3), t_start=0.2, t_end=0.5)
