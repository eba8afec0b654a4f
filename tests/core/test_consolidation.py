"""EWC's predictive Fisher against the closed form of a softmax regression, SI's importance against
the path integral of a quadratic, and the AC-WGAN-GP losses against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.consolidation import EWC, SynapticIntelligence, predictive_fisher, sample_fisher
from core.families.acwgan import ClassHeadCritic, acwgan_critic_loss, acwgan_generator_loss


def test_predictive_fisher_matches_softmax_regression_closed_form():
    # log p(y|x) = (Wx + b)_y - logsumexp: d/dW_kj = (1[y=k] - p_k) x_j, so
    # sum_y p_y (1[y=k] - p_k)^2 = p_k (1 - p_k) and F_W[k, j] = mean_x p_k (1 - p_k) x_j^2.
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    x = torch.randn(37, 5)
    fisher = predictive_fisher(model, x, batch_size=8)
    p = model(x).softmax(-1).detach()
    v = p * (1 - p)
    torch.testing.assert_close(fisher["weight"], (v.unsqueeze(2) * x.pow(2).unsqueeze(1)).mean(0))
    torch.testing.assert_close(fisher["bias"], v.mean(0))


def test_predictive_fisher_through_a_head_and_looped_sample_fisher_agree():
    torch.manual_seed(1)
    critic = ClassHeadCritic(6, 3, hidden=8, depth=1)
    x = torch.randn(10, 6)
    f_head = predictive_fisher(critic, x, head=lambda out: out[1])
    assert f_head["score.weight"].abs().max() == 0  # the score head does not touch log p(y|x)
    assert f_head["head.weight"].abs().max() > 0
    loss = lambda call, xi: call(xi)[0].sum()  # noqa: E731
    vec = sample_fisher(critic, loss, x, batch_size=4)
    loop = sample_fisher(critic, loss, x, vectorized=False)
    for k in vec:
        torch.testing.assert_close(vec[k], loop[k])


def test_ewc_penalty_value_gradient_and_online_sum():
    model = nn.Linear(2, 1, bias=False)
    ewc = EWC(model, weight=4.0)
    assert float(ewc.penalty()) == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ewc.consolidate({"weight": torch.tensor([[0.5, 1.0]])})
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0]]))
    # 4 / 2 * (0.5 * 1^2 + 1 * 2^2) = 9
    pen = ewc.penalty()
    assert float(pen.detach()) == pytest.approx(9.0)
    pen.backward()
    torch.testing.assert_close(model.weight.grad, torch.tensor([[2.0, -8.0]]))  # weight * F * (w - w*)
    ewc.consolidate({"weight": torch.tensor([[1.5, 1.0]])})
    torch.testing.assert_close(ewc.fisher["weight"], torch.tensor([[2.0, 2.0]]))
    assert float(ewc.penalty().detach()) == 0.0  # anchored at the current parameters
    with pytest.raises(ValueError, match="shape"):
        ewc.consolidate({"weight": torch.ones(3)})
    with pytest.raises(ValueError, match="weight must be >= 0"):
        EWC(model, -1.0)


def test_si_importance_is_the_path_integral_of_a_quadratic():
    # L = 1/2 sum a_i (theta_i - c_i)^2 minimised by gradient descent from theta_0: the credited
    # loss decrease per parameter is 1/2 a_i (theta_0 - c)_i^2 (continuous limit; lr * a = 0.02
    # gives the discrete sum 0.505 a e^2), and Omega = omega / Delta^2 with Delta = theta_0 - c.
    a = torch.tensor([1.0, 3.0, 0.2])
    c = torch.tensor([1.0, -2.0, 0.5])
    theta = nn.Parameter(torch.zeros(3))
    holder = nn.Module()
    holder.theta = theta
    si = SynapticIntelligence(holder, c=1.0, xi=1e-12)
    si.begin_task()
    for _ in range(1200):
        lr = 0.02 / a  # per-coordinate step so each contracts by 0.98
        loss = 0.5 * (a * (theta - c) ** 2).sum()
        theta.grad = None
        loss.backward()
        si.before_step()
        with torch.no_grad():
            theta -= lr * theta.grad
        si.after_step()
    si.end_task()
    torch.testing.assert_close(si.omega_total["theta"], a / 2, rtol=0.02, atol=0)
    with torch.no_grad():
        theta.copy_(c + 1.0)
    assert float(si.penalty()) == pytest.approx(float((a / 2).sum()), rel=0.02)


def test_acwgan_losses_match_their_definitions():
    torch.manual_seed(2)
    critic = ClassHeadCritic(4, 3, hidden=16)
    real, fake = torch.randn(8, 4), torch.randn(8, 4)
    y = torch.randint(0, 3, (8,))
    torch.manual_seed(5)
    parts = acwgan_critic_loss(critic, real, y, fake, gp=10.0, cls=0.5)
    d_real, logits = critic(real)
    d_fake, fake_logits = critic(fake)
    w = d_fake.mean() - d_real.mean()
    ce = F.cross_entropy(logits, y)
    torch.testing.assert_close(parts["cls"], ce.detach())
    torch.testing.assert_close(
        parts["loss"], (w + 10.0 * parts["gp"] + 0.5 * ce).detach(), rtol=1e-5, atol=1e-6
    )
    g = acwgan_generator_loss(critic, fake, y, cls=0.5)
    torch.testing.assert_close(g, -d_fake.mean() + 0.5 * F.cross_entropy(fake_logits, y))
    with pytest.raises(ValueError, match="same shape"):
        acwgan_critic_loss(critic, real, y, fake[:4])
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        critic(torch.randn(2, 5))


def test_projection_class_head_critic_scores_each_pair_by_its_label():
    torch.manual_seed(3)
    critic = ClassHeadCritic(4, 3, hidden=16, projection=True)
    real, fake = torch.randn(8, 4), torch.randn(8, 4)
    y, yf = torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    h = critic.features(real)
    score, logits = critic(real, y)
    torch.testing.assert_close(score, critic.score(h).squeeze(1) + (critic.embed(y) * h).sum(1))
    torch.testing.assert_close(logits, critic.logits(real))
    torch.testing.assert_close(critic(real)[0], critic.score(h).squeeze(1))  # the label-free part
    torch.manual_seed(5)
    parts = acwgan_critic_loss(critic, real, y, fake, y_fake=yf, gp=10.0, cls=0.5)
    w = critic(fake, yf)[0].mean() - score.mean()
    ce = F.cross_entropy(logits, y)
    torch.testing.assert_close(
        parts["loss"], (w + 10.0 * parts["gp"] + 0.5 * ce).detach(), rtol=1e-5, atol=1e-6
    )
    d_fake, fake_logits = critic(fake, yf)
    g = acwgan_generator_loss(critic, fake, yf, cls=0.5)
    torch.testing.assert_close(g, -d_fake.mean() + 0.5 * F.cross_entropy(fake_logits, yf))
    assert not torch.allclose(d_fake, critic(fake, (yf + 1) % 3)[0])  # the score depends on the label
    with pytest.raises(ValueError, match="needs y_fake"):
        acwgan_critic_loss(critic, real, y, fake)
    with pytest.raises(ValueError, match="unconditional critic"):
        ClassHeadCritic(4, 3, hidden=16)(real, y)


def test_gradient_penalty_vanishes_for_a_unit_lipschitz_linear_score():
    critic = ClassHeadCritic(3, 2, hidden=4, depth=1)
    # score(x) = u . x with |u| = 1 when the trunk is linear: replace it by the identity map
    critic.features = nn.Identity()
    critic.score = nn.Linear(3, 1)
    with torch.no_grad():
        critic.score.weight.copy_(torch.tensor([[0.6, 0.0, 0.8]]))
    critic.head = nn.Linear(3, 2)
    parts = acwgan_critic_loss(critic, torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(5, 3))
    assert float(parts["gp"]) == pytest.approx(0.0, abs=1e-10)
