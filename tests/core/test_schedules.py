"""Schedules: inverse log-SNR, safe end points, closed-form derivatives, the discrete mapping."""

import pytest
import torch

from core import LinearSchedule, VESchedule, VPSchedule
from core.schedules import NoiseSchedule, cosine_betas, linear_betas

SCHEDULES = {
    "vp_linear": VPSchedule.linear(),
    "vp_cosine": VPSchedule.cosine(),
    "vp_discrete": VPSchedule.discrete(linear_betas(1000)),
    "vp_discrete_cosine": VPSchedule.discrete(cosine_betas(1000)),
    "ve": VESchedule(),
    "linear": LinearSchedule(),
}


def _times(sch, n=101):
    return torch.linspace(sch.t_min, sch.t_max, n, dtype=torch.float64)


@pytest.mark.parametrize("name", SCHEDULES)
def test_log_snr_round_trip_and_monotone(name):
    sch = SCHEDULES[name]
    t = _times(sch)
    lam = sch.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    assert torch.allclose(sch.t_of_log_snr(lam), t, rtol=1e-9, atol=1e-12)
    assert torch.allclose(lam, torch.log(sch.alpha(t) / sch.sigma(t)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_end_points_finite(name):
    sch = SCHEDULES[name]
    for t in (sch.t_min, sch.t_max, torch.tensor([sch.t_min, sch.t_max])):
        vals = [sch.alpha(t), sch.sigma(t), sch.log_snr(t), *sch.derivatives(t)]
        assert all(bool(torch.isfinite(v).all()) for v in vals), name
        assert bool((sch.sigma(t) > 0).all() and (sch.alpha(t) > 0).all())


@pytest.mark.parametrize("name", SCHEDULES)
def test_closed_form_derivatives_match_autograd(name):
    sch = SCHEDULES[name]
    t = _times(sch, 57)[1:-1] + 1e-5  # off the discrete knots, where the slope is unique
    da, ds = sch.derivatives(t)
    dla, dls = NoiseSchedule._dlog(sch, t)  # the generic autograd path
    assert torch.allclose(da, dla * sch.alpha(t), rtol=1e-9, atol=1e-12)
    assert torch.allclose(ds, dls * sch.sigma(t), rtol=1e-9, atol=1e-12)


def test_vp_is_variance_preserving_and_dtype_follows_input():
    sch = VPSchedule.linear()
    t = torch.rand(50, dtype=torch.float64) * (sch.t_max - sch.t_min) + sch.t_min
    assert torch.allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones_like(t), atol=1e-14)
    assert sch.alpha(t.float()).dtype == torch.float32
    assert sch.alpha(0.5).dtype == torch.float64


def test_discrete_grid_and_model_time():
    betas = linear_betas(1000)
    sch = VPSchedule.discrete(betas)
    n = torch.arange(1000)
    t = (n + 1).double() / 1000
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    assert torch.allclose(sch.alpha(t) ** 2, alphas_cumprod, rtol=1e-12)
    assert torch.allclose(sch.model_time(t), n.double(), atol=1e-9)
    assert (sch.t_min, sch.t_max) == (1e-3, 1.0)


def test_discrete_reproduces_diffusers_alphas_cumprod():
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod
    sch = VPSchedule.discrete(linear_betas(1000))
    ours = sch.alpha((torch.arange(1000) + 1).double() / 1000) ** 2
    assert torch.allclose(ours, ref.double(), rtol=2e-6, atol=0)  # diffusers works in float32
    ref_cos = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"
    ).alphas_cumprod
    ours_cos = VPSchedule.discrete(cosine_betas(1000)).alpha((torch.arange(1000) + 1).double() / 1000) ** 2
    assert torch.allclose(ours_cos, ref_cos.double(), rtol=1e-5, atol=1e-9)


def test_bad_parameters():
    with pytest.raises(ValueError, match="beta_min"):
        VPSchedule.linear(beta_min=2.0, beta_max=1.0)
    with pytest.raises(ValueError, match="betas"):
        VPSchedule.discrete([0.5])
    with pytest.raises(ValueError, match="sigma_min"):
        VESchedule(1.0, 0.5)
    with pytest.raises(ValueError, match="t_min"):
        LinearSchedule(0.0, 1.0)
