"""Denoiser: exact conversions between all five predictions, the time cache, bad output shapes."""

import pytest
import torch

from core import Denoiser, LinearSchedule, VESchedule, VPSchedule
from core.denoiser import PREDICTIONS
from core.schedules import linear_betas

SCHEDULES = {
    "vp_linear": VPSchedule.linear(),
    "vp_cosine": VPSchedule.cosine(),
    "vp_discrete": VPSchedule.discrete(linear_betas(1000)),
    "ve": VESchedule(),
    "linear": LinearSchedule(),
}


def _truth(sch, x0, eps, t):
    """Every prediction's exact value for x_t = alpha x0 + sigma eps, plus x_t itself."""
    a, s = sch.alpha(t)[:, None], sch.sigma(t)[:, None]
    da, ds = (d[:, None] for d in sch.derivatives(t))
    x = a * x0 + s * eps
    return x, {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s, "velocity": da * x0 + ds * eps}


class Lookup(torch.nn.Module):
    """A 'network' returning a fixed tensor (the exact prediction of some kind)."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.calls = 0
        self.t_seen = None

    def forward(self, x, t):
        self.calls += 1
        self.t_seen = t
        return self.out


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_round_trip_all_predictions(name, kind):
    sch = SCHEDULES[name]
    g = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 3, generator=g, dtype=torch.float64),
    )
    t = sch.t_min + (sch.t_max - sch.t_min) * torch.tensor(
        [0.0, 0.01, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64
    )
    x, truth = _truth(sch, x0, eps, t)
    den = Denoiser(Lookup(truth[kind]), sch, kind)
    for other in PREDICTIONS:
        got = getattr(den, other)(x, t)
        assert torch.allclose(got, truth[other], rtol=1e-9, atol=1e-9), (kind, other)
    x0_hat, eps_hat = den.x0_eps(x, t)
    assert torch.allclose(x0_hat, x0, rtol=1e-9, atol=1e-9) and torch.allclose(
        eps_hat, eps, rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_cached_times_give_the_same_predictions(kind):
    sch = VPSchedule.discrete(linear_betas(1000))
    x0, eps = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    ts = torch.tensor([0.9, 0.4, 0.0123], dtype=torch.float64)
    for tv in ts:
        t = tv.expand(5)
        x, truth = _truth(sch, x0, eps, t)
        den = Denoiser(Lookup(truth[kind]), sch, kind)
        plain = den.x0_eps(x, t)
        (tc,) = den.cache_times(tv.reshape(1), x)
        cached = den.x0_eps(x, tc)
        assert torch.allclose(den.net.t_seen, sch.model_time(t))
        for p, c in zip(plain, cached, strict=True):
            assert torch.allclose(p, c, rtol=1e-12, atol=1e-12)
        for p, c in zip(den.coefficients(x, t), den.coefficients(x, tc), strict=True):
            assert p.shape == c.shape and torch.allclose(p, c, rtol=1e-12)
        assert torch.allclose(den.velocity(x, tc), truth["velocity"], rtol=1e-9, atol=1e-9)
        den.release_times([tc])
        assert not den._time_cache


def test_network_time_input_is_at_least_float32():
    sch = VPSchedule.discrete(linear_betas(1000))
    net = Lookup(torch.zeros(2, 3, dtype=torch.bfloat16))
    Denoiser(net, sch)(torch.zeros(2, 3, dtype=torch.bfloat16), 1.0)
    assert net.t_seen.dtype == torch.float32 and float(net.t_seen[0]) == 999.0


def test_bad_output_shape_and_prediction():
    den = Denoiser(Lookup(torch.zeros(4, 2)), VPSchedule.linear())
    with pytest.raises(ValueError, match=r"output shape \(4, 2\) differs from its input shape \(4, 3\)"):
        den.x0_eps(torch.zeros(4, 3), 0.5)
    with pytest.raises(ValueError, match="unknown prediction"):
        Denoiser(Lookup(None), VPSchedule.linear(), "noise")
    with pytest.raises(ValueError, match="t must be a scalar"):
        den(torch.zeros(4, 2), torch.zeros(3))
