"""Flow matching, reflow, consistency distillation and score distillation on tiny problems."""

import math

import pytest
import torch
from torch import nn

from core import Denoiser, LinearSchedule, VESchedule, VPSchedule
from core.nets.mlp import MLPConfig, MLPNet
from core.objectives.consistency import (
    ConsistencyDistillation,
    ConsistencyModel,
    consistency_sample,
    karras_times,
)
from core.objectives.flow import flow_matching_loss, ot_pair, reflow_pairs, straightness
from core.objectives.score_distillation import (
    add_lora,
    lora_copy,
    particle_loss,
    sds_gradient,
    sds_loss,
    vsd_gradient,
    vsd_loss,
)


class GaussEps(nn.Module):
    """Exact noise prediction for data N(mu, s^2 I) under ``schedule`` (continuous time)."""

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x, t):
        a = self.schedule.alpha(t.double()).reshape(-1, *([1] * (x.dim() - 1)))
        sg = self.schedule.sigma(t.double()).reshape(-1, *([1] * (x.dim() - 1)))
        return (sg * (x.double() - a * self.mu) / (a**2 * self.s**2 + sg**2)).to(x.dtype)


def _mlp(dim=2, hidden=32, depth=2):
    return MLPNet(MLPConfig(dim=dim, hidden=hidden, depth=depth))


def _first_last(losses, k=10):
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


# --- flow matching -------------------------------------------------------------------------------
def test_flow_matching_loss_decreases():
    den = Denoiser(_mlp(), LinearSchedule(), prediction="velocity")
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        x0 = torch.randn(256, 2, generator=g) * 0.3 + torch.tensor([2.0, -1.0])
        loss = flow_matching_loss(den, x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = _first_last(losses)
    assert last < 0.6 * first, (first, last)


def test_flow_matching_target_is_path_velocity():
    """With the exact velocity of a Dirac data distribution the loss is ~0 on a coupled pair."""
    c = torch.tensor([1.0, -2.0])
    den = Denoiser(lambda x, t: (x - c) / t[:, None], LinearSchedule(), prediction="velocity")
    x0 = c.expand(8, 2)
    assert flow_matching_loss(den, x0).item() < 1e-10
    with pytest.raises(ValueError, match="needs a LinearSchedule"):
        flow_matching_loss(Denoiser(_mlp(), VPSchedule.linear()), x0)


def test_ot_pair_and_reflow_pairs():
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    zp = ot_pair(x0, z)
    assert sorted(map(tuple, zp.tolist())) == sorted(map(tuple, z.tolist()))
    assert (x0 - zp).pow(2).sum() < (x0 - z).pow(2).sum()
    noise, samples = reflow_pairs(
        lambda z, y=None: 2 * z + y[:, None], z, labels=torch.arange(32), batch_size=5
    )
    assert noise is z and torch.equal(samples, 2 * z + torch.arange(32)[:, None])
    with pytest.raises(ValueError, match="sample_fn returned shape"):
        reflow_pairs(lambda z: z[:, :1], z)


def test_straightness_zero_for_straight_flow_positive_for_curved():
    c = torch.tensor([1.0, -2.0])
    straight = Denoiser(lambda x, t: (x - c) / t[:, None], LinearSchedule(), prediction="velocity")
    z = torch.randn(16, 2, dtype=torch.float64)
    assert straightness(straight, z, steps=20).abs().max() < 1e-9
    sch = LinearSchedule()
    mixture = Denoiser(GaussEps(sch, 0.0, 0.1), sch, prediction="eps")  # curved: sigma_data != 1
    assert straightness(mixture, z, steps=20).mean() > 1e-3


# --- consistency -----------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [VPSchedule.linear(), LinearSchedule(), VESchedule(0.002, 80.0)])
def test_consistency_boundary_condition_exact(schedule):
    cm = ConsistencyModel(Denoiser(_perturbed_mlp(), schedule, prediction="x0"))
    x = torch.randn(7, 2)
    assert torch.equal(cm(x, schedule.t_min), x)
    c_skip, c_out = cm.scalings(torch.tensor([schedule.t_min, schedule.t_max], dtype=torch.float64))
    assert c_skip[0] == 1 and c_out[0] == 0 and c_skip[1] < 0.3 and c_out[1] > 0.8
    assert not torch.allclose(cm(x, 0.5 * (schedule.t_min + schedule.t_max)), x)


def test_consistency_model_starts_as_the_teachers_ddim_jump():
    """A student with the teacher's weights maps x_t to the teacher's DDIM step to t_min."""
    sch = VPSchedule.linear()
    teacher = Denoiser(GaussEps(sch, 0.7, 0.4), sch)
    cm = ConsistencyModel(teacher)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    t = torch.full((9,), 0.6, dtype=torch.float64)
    eps = torch.tensor(sch.t_min, dtype=torch.float64)
    x0, noise = teacher.x0(x, t), teacher.eps(x, t)
    torch.testing.assert_close(cm(x, t), sch.alpha(eps) * x0 + sch.sigma(eps) * noise)


def _perturbed_mlp():
    net = _mlp()
    nn.init.normal_(net.out.weight, std=0.1)
    return net


def _gauss_pf_ode(x, t, s_time, sch, mu, s):
    """Exact probability-flow ODE map for data N(mu, s^2) from time t to s_time."""
    a_t, a_s = sch.alpha(t), sch.alpha(s_time)
    st, ss = sch.sigma(t) / a_t, sch.sigma(s_time) / a_s
    return a_s * (mu + (x / a_t - mu) * math.sqrt((s**2 + ss**2) / (s**2 + st**2)))


def test_teacher_step_matches_exact_ode():
    """Local errors against the exact Gaussian ODE map: O(h^2) for ddim, O(h^3) for heun."""
    sch = VPSchedule.linear()
    mu, s = 0.7, 0.4
    teacher = Denoiser(GaussEps(sch, mu, s), sch)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    errs = {}
    for solver in ("ddim", "heun"):
        cd = ConsistencyDistillation(ConsistencyModel(Denoiser(_mlp(1), sch, "x0")), teacher, solver=solver)
        for h in (0.05, 0.025):
            t, u = torch.full((9,), 0.5, dtype=torch.float64), torch.full((9,), 0.5 - h, dtype=torch.float64)
            exact = _gauss_pf_ode(x, 0.5, 0.5 - h, sch, mu, s)
            errs[solver, h] = float((cd.teacher_step(x, t, u) - exact).abs().max())
    assert errs["ddim", 0.05] < 5e-3 and errs["heun", 0.05] < 0.5 * errs["ddim", 0.05]
    assert errs["ddim", 0.05] / errs["ddim", 0.025] > 3.0  # local order 2
    assert errs["heun", 0.05] / errs["heun", 0.025] > 6.0  # local order 3


def test_consistency_distillation_trains():
    torch.manual_seed(0)
    sch = VPSchedule.linear()
    mu, s = torch.tensor([1.0, -0.5]), 0.5
    teacher = Denoiser(GaussEps(sch, mu, s), sch)
    student = ConsistencyModel(Denoiser(_mlp(hidden=64), sch, prediction="x0"))
    cd = ConsistencyDistillation(student, teacher, num_steps=18, ema_decay=0.9)
    assert not any(p.requires_grad for p in cd.target.parameters())
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2048, 2, generator=g)

    def one_step_error():
        x = consistency_sample(student, z)
        return float((x.mean(0) - mu).norm() + (x.std(0) - s).abs().sum())

    before = one_step_error()
    losses = []
    for _ in range(300):
        x0 = mu + s * torch.randn(256, 2, generator=g)
        loss = cd(x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cd.update_target()
        losses.append(loss.item())
    after = one_step_error()
    assert after < 0.1 * before, (before, after)
    two = consistency_sample(student, z, [sch.t_max, 0.5], generator=g)
    assert two.shape == z.shape and torch.isfinite(two).all()
    ts = karras_times(sch, 18)
    assert ts[0] == sch.t_min and ts[-1] == sch.t_max and bool((ts.diff() > 0).all())
    assert cd.times.shape == (18,)


def test_consistency_distillation_bad_args():
    sch = VPSchedule.linear()
    student = ConsistencyModel(Denoiser(_mlp(), sch, "x0"))
    teacher = Denoiser(_mlp(), sch)
    with pytest.raises(ValueError, match="unknown solver"):
        ConsistencyDistillation(student, teacher, solver="rk4")
    with pytest.raises(ValueError, match="unknown weighting"):
        ConsistencyDistillation(student, teacher, weighting="snr")
    with pytest.raises(ValueError, match="teacher schedule"):
        ConsistencyDistillation(student, Denoiser(_mlp(), LinearSchedule()))
    with pytest.raises(ValueError, match="strictly decreasing"):
        consistency_sample(student, torch.randn(2, 2), [0.5, 0.9])


def test_ict_weighting_favours_the_fine_low_noise_intervals():
    sch = VPSchedule.linear()
    cd = ConsistencyDistillation(
        ConsistencyModel(Denoiser(_mlp(), sch, "x0")), Denoiser(_mlp(), sch), num_steps=10, weighting="ict"
    )
    w = cd.weights.double()
    assert w.shape == (9,) and abs(float(w.mean()) - 1.0) < 1e-6 and bool((w.diff() < 0).all())
    sig = torch.exp(-sch.log_snr(cd.times.double()))
    torch.testing.assert_close(w[0] / w[-1], (sig[-1] - sig[-2]) / (sig[1] - sig[0]), rtol=1e-5, atol=0)


def test_pseudo_huber_distance_is_its_formula():
    """With one sample, l2 = |d|^2 / D and pseudo-Huber = sqrt(|d|^2 + c^2) - c, c = 0.00054 sqrt(D)
    (improved consistency training), for the same draws."""
    sch = VPSchedule.linear()
    student = ConsistencyModel(Denoiser(_mlp(), sch, "x0"))
    teacher = Denoiser(GaussEps(sch, 0.0, 1.0), sch)
    losses = {}
    for d in ("l2", "pseudo_huber"):
        losses[d] = ConsistencyDistillation(student, teacher, distance=d, num_steps=10)
        with torch.no_grad():  # a target away from the student: |d| of order 0.01 - 1
            for p in losses[d].target.parameters():
                p.add_(0.05)
    c = 0.00054 * math.sqrt(2)
    for seed in range(4):
        x0 = torch.randn(1, 2, generator=torch.Generator().manual_seed(seed))
        l2, ph = (losses[d](x0, generator=torch.Generator().manual_seed(seed)) for d in losses)
        sq = 2 * float(l2.detach())
        assert sq > 1e-6
        assert float(ph.detach()) == pytest.approx(math.sqrt(sq + c * c) - c, rel=1e-5)
    ph.backward()
    assert all(p.grad is not None for p in student.parameters())


# --- denoising_loss targets ------------------------------------------------------------------------
def _vp_closed_form(t):
    """alpha, sigma and their time derivatives of VPSchedule.linear() (beta 0.1 -> 20), written out."""
    b0, b1 = 0.1, 20.0
    log_a = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    a = torch.exp(log_a)
    s = torch.sqrt(1 - a**2)
    da = a * (-0.5 * t * (b1 - b0) - 0.5 * b0)
    return a, s, da, -a * da / s


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score", "velocity"])
def test_denoising_loss_targets_are_the_textbook_ones(prediction):
    """A network that outputs the exact target, written out here (eps; x0; v = alpha eps - sigma x0
    (Salimans & Ho); score = -eps / sigma; velocity = alpha' x0 + sigma' eps), has zero loss for
    its own target and for every other one; the wrong sign of any target does not."""
    from core.objectives import denoising_loss

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 3, dtype=torch.float64, generator=g)
    noise = torch.randn(8, 3, dtype=torch.float64, generator=g)
    t = torch.rand(8, dtype=torch.float64, generator=g) * 0.9 + 0.05
    a, s, da, ds = (c[:, None] for c in _vp_closed_form(t))
    truth = {
        "eps": noise,
        "x0": x0,
        "v": a * noise - s * x0,
        "score": -noise / s,
        "velocity": da * x0 + ds * noise,
    }
    for sign in (1.0, -1.0):
        den = Denoiser(lambda x, tt, sign=sign: sign * truth[prediction], VPSchedule.linear(), prediction)
        for target in truth:
            loss = float(denoising_loss(den, x0, target=target, t=t, noise=noise))
            if sign == 1.0:
                assert loss < 1e-20, (prediction, target, loss)
            elif target == prediction:  # own target: the loss is exactly mean((2 target)^2)
                assert loss == pytest.approx(float((2 * truth[target]).pow(2).mean()), rel=1e-12)
            else:
                assert loss > 1e-3, (prediction, target, loss)


# --- score distillation -----------------------------------------------------------------------------
MU, S = 1.0, 0.5


def _prior():
    sch = VPSchedule.linear()
    return Denoiser(GaussEps(sch, MU, S), sch)


def _expected(grad_fn, x_value, n=20000):
    x = torch.full((n, 1), x_value, dtype=torch.float64)
    return float(grad_fn(x, generator=torch.Generator().manual_seed(0)).mean())


def test_sds_gradient_sign_and_mode_seeking():
    prior = _prior()
    assert _expected(lambda x, **k: sds_gradient(prior, x, **k), MU + 1.0) > 0  # descent moves left
    assert _expected(lambda x, **k: sds_gradient(prior, x, **k), MU - 1.0) < 0  # descent moves right
    x = torch.randn(256, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    opt = torch.optim.SGD([x], lr=2.0 * x.shape[0])  # the surrogate divides by the batch size
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        opt.zero_grad()
        sds_loss(prior, x, generator=g).backward()
        opt.step()
    x = x.detach()
    assert abs(float(x.mean()) - MU) < 0.05
    assert float(x.std()) < 0.3 * S, "SDS should collapse the particles towards the mode"


class FittedGaussEps(nn.Module):
    """Particle denoiser: exact noise prediction of a Gaussian fitted to the current particles."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, 0.0, 1.0

    def fit(self, x):
        self.mu, self.s = float(x.mean()), float(x.std())

    def forward(self, x, t):
        return GaussEps(self.schedule, self.mu, self.s)(x, t)


def test_vsd_gradient_sign_and_spread():
    prior = _prior()
    sch = prior.schedule
    fitted = FittedGaussEps(sch)
    particle = Denoiser(fitted, sch)
    # particles too narrow around the mode: VSD pushes them outward, SDS inward
    fitted.mu, fitted.s = MU, 0.1 * S
    vsd = _expected(lambda x, **k: vsd_gradient(prior, particle, x, **k), MU + 0.05)
    sds = _expected(lambda x, **k: sds_gradient(prior, x, **k), MU + 0.05)
    assert vsd < 0 < sds
    # too wide: pulled inward
    fitted.s = 3 * S
    assert _expected(lambda x, **k: vsd_gradient(prior, particle, x, **k), MU + 1.0) > 0
    # descent recovers the prior's spread
    x = (
        0.3 * torch.randn(256, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ).requires_grad_()
    opt = torch.optim.SGD([x], lr=1.0 * x.shape[0])
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        fitted.fit(x.detach())
        opt.zero_grad()
        vsd_loss(prior, particle, x, generator=g).backward()
        opt.step()
    m, sd = float(x.detach().mean()), float(x.detach().std())
    assert abs(m - MU) < 0.1 and abs(sd - S) < 0.1 * S, (m, sd)


def test_sds_drives_a_generator():
    prior = _prior()
    gen = nn.Linear(1, 1).double()
    opt = torch.optim.Adam(gen.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = gen(torch.randn(64, 1, dtype=torch.float64, generator=g))
        opt.zero_grad()
        sds_loss(prior, x, generator=g).backward()
        opt.step()
    assert abs(gen.bias.item() - MU) < 0.1 and abs(gen.weight.item()) < 0.2


def test_lora_particle_denoiser():
    torch.manual_seed(0)
    sch = VPSchedule.linear()
    prior = Denoiser(_perturbed_mlp(), sch)
    twin = lora_copy(prior, rank=2)
    x, t = torch.randn(8, 2), torch.rand(8)
    torch.testing.assert_close(twin(x, t), prior(x, t))
    trainable = [n for n, p in twin.named_parameters() if p.requires_grad]
    assert trainable and all(".down." in n or ".up." in n for n in trainable)
    assert all(p.requires_grad for p in prior.parameters()), "the prior itself must stay untouched"
    particle_loss(twin, torch.randn(32, 2)).backward()
    assert all(p.grad is None for n, p in twin.named_parameters() if not p.requires_grad)
    ups = [p for n, p in twin.named_parameters() if ".up." in n]
    assert any(p.grad.abs().sum() > 0 for p in ups)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    params = add_lora(conv, rank=2)
    assert len(params) == 2 and conv(torch.randn(1, 3, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        add_lora(nn.ReLU())
