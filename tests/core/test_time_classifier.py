"""The time-dependent classifier backbone and its noisy-data loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.nets import TimeClassifier
from core.objectives import noisy_classifier_loss
from core.schedules import VPSchedule, linear_betas


def _net(**kw):
    base = dict(image_size=8, in_channels=1, num_classes=2, base_channels=8, channel_mults=(1, 2), groups=4)
    return TimeClassifier(**{**base, **kw})


def _jitter(net):
    """Random weights everywhere (zero-initialised layers would hide the time input)."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def test_feature_layers_and_shapes():
    net = _net()
    x = torch.randn(3, 1, 8, 8)
    assert net.layers == ("conv_in", "down.0", "down.1", "mid", "pool")
    shapes = {name: tuple(net.features(x, 0.5, name).shape) for name in net.layers}
    assert shapes == {"conv_in": (3, 8, 8, 8), "down.0": (3, 8, 8, 8), "down.1": (3, 16, 4, 4),
                      "mid": (3, 16, 4, 4), "pool": (3, 16)}  # fmt: skip
    assert net(x, torch.rand(3)).shape == (3, 2)
    with pytest.raises(ValueError, match="unknown feature layer 'middle'.*'mid'"):
        net.features(x, 0.5, "middle")
    with pytest.raises(ValueError, match="1 channels, got 3"):
        net(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="time-dependent"):
        net(x)


def test_time_input_matters_only_when_time_conditional():
    x = torch.randn(4, 1, 8, 8)
    dep = _jitter(_net())
    assert not torch.allclose(dep(x, 0.1), dep(x, 0.9))
    indep = _jitter(_net(time_conditional=False))
    torch.testing.assert_close(indep(x, 0.1), indep(x, 0.9))
    torch.testing.assert_close(indep(x), indep(x, 0.9))


def test_save_and_load_round_trip(tmp_path):
    net = _jitter(_net(num_classes=3, attention_resolutions=(4,)))
    net.save_pretrained(tmp_path / "clf")
    back = TimeClassifier.from_pretrained(tmp_path / "clf")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.2, 0.7])
    torch.testing.assert_close(back(x, t), net.eval()(x, t))
    assert back.init_config["num_classes"] == 3


def test_loss_is_cross_entropy_on_the_ddpm_marginal():
    """x_t = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps, abar_k = prod_{j<=k} (1 - beta_j) (DDPM's form)."""
    n = 1000
    sch = VPSchedule.discrete(linear_betas(n))
    net = _jitter(_net())
    x0, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 1, 0, 1])
    k = torch.tensor([0, 99, 499, 800, 999])
    t = ((k + 1).double() / n).float()
    eps = torch.randn_like(x0)
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, n))[k.numpy()]
    a = torch.tensor(np.sqrt(abar), dtype=torch.float32).reshape(-1, 1, 1, 1)
    s = torch.tensor(np.sqrt(1.0 - abar), dtype=torch.float32).reshape(-1, 1, 1, 1)
    expected = F.cross_entropy(net(a * x0 + s * eps, t), y, reduction="none")
    got = noisy_classifier_loss(net, sch, x0, y, t=t, noise=eps, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    clean = noisy_classifier_loss(_net(time_conditional=False), sch, x0, y, clean=True)
    assert clean.shape == ()
    with pytest.raises(ValueError, match="criterion"):
        noisy_classifier_loss(net, sch, x0, y, criterion="hinge")
    with pytest.raises(ValueError, match="4 targets for a batch of 5"):
        noisy_classifier_loss(net, sch, x0, y[:4])


def test_regression_criterion():
    sch = VPSchedule.linear()
    model = lambda x, t: x.flatten(1).mean(1, keepdim=True)  # noqa: E731
    x0 = torch.randn(4, 1, 8, 8)
    t = torch.full((4,), 0.5)
    eps = torch.randn_like(x0)
    a, s = float(sch.alpha(torch.tensor(0.5))), float(sch.sigma(torch.tensor(0.5)))
    target = torch.zeros(4, 1)
    expected = ((a * x0 + s * eps).flatten(1).mean(1) ** 2).mean()
    got = noisy_classifier_loss(model, sch, x0, target, t=t, noise=eps, criterion="mse")
    torch.testing.assert_close(got, expected.float())


def test_learns_what_the_noise_leaves():
    """Classes differ by their mean brightness: separable at low noise, chance at t_max."""
    torch.manual_seed(0)
    sch = VPSchedule.discrete(linear_betas(1000))
    net = _net(base_channels=8)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)

    def batch(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = (2.0 * y - 1.0).reshape(-1, 1, 1, 1) * 0.5 + 0.2 * torch.randn(n, 1, 8, 8, generator=g)
        return x, y

    for _ in range(50):
        x, y = batch(32)
        loss = noisy_classifier_loss(net, sch, x, y, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = batch(400)
    low = sch.alpha(torch.tensor(0.05)).item() * x + sch.sigma(torch.tensor(0.05)).item() * torch.randn_like(
        x
    )
    high = sch.alpha(torch.tensor(1.0)).item() * x + torch.randn_like(x)
    acc_low = (net.predict(low, 0.05) == y).float().mean().item()
    acc_high = (net.predict(high, 1.0) == y).float().mean().item()
    assert acc_low > 0.95
    assert abs(acc_high - 0.5) < 0.1
