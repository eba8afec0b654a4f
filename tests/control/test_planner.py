import json

import numpy as np
import pytest
import torch

from control.config import preset
from control.maze2d.evaluate import evaluate
from control.maze2d.mazes import get_maze
from control.maze2d.planner import (
    Planner,
    TrackingPolicy,
    build_denoiser,
    cond_features,
    conditioning,
    diffuser_loss,
)
from control.maze2d.train import load_model, train
from control.runner import paired_difference
from control.sequence import LimitsNormalizer
from core.nets.temporal_unet import TemporalUnet


def test_temporal_unet_shapes():
    net = TemporalUnet(6, dim=8, dim_mults=(1, 2, 4))
    x = torch.randn(3, 32, 6)
    assert net(x, torch.rand(3)).shape == x.shape


def test_temporal_unet_cond_channels():
    net = TemporalUnet(6, dim=8, dim_mults=(1, 2), cond_dim=9)
    x = torch.randn(3, 16, 6)
    assert net(x, torch.rand(3), torch.randn(1, 16, 9)).shape == x.shape
    with pytest.raises(ValueError, match="expected cond of shape"):
        net(x, torch.rand(3))
    with pytest.raises(ValueError, match="cond_dim=0"):
        TemporalUnet(6, dim=8, dim_mults=(1, 2))(x, torch.rand(3), torch.randn(1, 16, 9))


def test_conditioning_and_features():
    start, goal = torch.randn(2, 4), torch.randn(2, 4)
    mask, values = conditioning(start, goal, 16, 6)
    assert mask.sum() == 2 * 2 * 4 and torch.equal(values[:, 0, :4], start)
    assert torch.equal(values[:, -1, :4], goal)
    prefix = torch.randn(2, 5, 4)
    mask, values = conditioning(prefix, goal, 16, 6)
    assert mask[:, :5, :4].all() and not mask[:, 5:15].any() and torch.equal(values[:, :5, :4], prefix)
    with pytest.raises(ValueError, match="known first states"):
        conditioning(torch.randn(2, 16, 4), goal, 16, 6)
    f = cond_features(start, goal, 16)
    assert f.shape == (2, 16, 9) and torch.equal(f[:, 5, :4], start) and torch.equal(f[:, 5, 4:8], goal)
    torch.testing.assert_close(f[0, :, 8], torch.linspace(-1, 1, 16))


class _Recorder(torch.nn.Module):
    """A stand-in network that records its inputs and predicts zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.cond_dim = 9
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t, cond=None):
        self.inputs.append((x.detach().clone(), cond.detach().clone()))
        return x * self.w


def test_training_conditioning_matches_sampling():
    """Diffuser's apply_conditioning: the network sees clean start/goal rows and the same features
    in training (noisy input overwritten) as at every sampling step."""
    den = build_denoiser(6, 8, dim=8, dim_mults=(1, 2), cond_input=True)
    den.net = _Recorder()
    x0 = torch.rand(3, 16, 6) * 2 - 1
    diffuser_loss(den, x0)
    ((xt, c),) = den.net.inputs
    torch.testing.assert_close(xt[:, 0, :4], x0[:, 0, :4])
    torch.testing.assert_close(xt[:, -1, :4], x0[:, -1, :4])
    torch.testing.assert_close(c, cond_features(x0[:, 0, :4], x0[:, -1, :4], 16))
    den.net.inputs.clear()
    norm = LimitsNormalizer(np.full(6, -1.0), np.full(6, 1.0))
    start, goal = np.array([[0.5, -0.5, 0.1, 0.2]]), np.array([[-0.5, 0.5]])
    Planner(den, norm, 16, "dpm_solver++", 3).plan(start, goal)
    assert len(den.net.inputs) == 4
    s, g = torch.tensor(start, dtype=torch.float32), torch.tensor([[-0.5, 0.5, 0.0, 0.0]])
    for xt, c in den.net.inputs:
        torch.testing.assert_close(xt[:, 0, :4], s)
        torch.testing.assert_close(xt[:, -1, :4], g)
        torch.testing.assert_close(c, cond_features(s, g, 16))


@pytest.mark.parametrize("cond_input", [False, True])
def test_inpainted_start_and_goal_exact(cond_input):
    torch.manual_seed(0)
    den = build_denoiser(6, 8, dim=8, dim_mults=(1, 2), cond_input=cond_input)
    norm = LimitsNormalizer(np.full(6, -2.0), np.full(6, 2.0))
    start = np.array([[1.0, -1.0, 0.5, -0.25], [0.0, 0.5, 0.0, 0.0]])
    goal = np.array([[-1.0, 1.0], [1.5, -0.5]])
    for method, steps in (("ddpm", None), ("dpm_solver++", 4)):
        plan = Planner(den, norm, 16, method, steps).plan(start, goal)
        assert plan.shape == (2, 16, 6)
        np.testing.assert_allclose(plan[:, 0, :4], start, atol=1e-6)
        np.testing.assert_allclose(plan[:, -1, :2], goal, atol=1e-6)
        np.testing.assert_allclose(plan[:, -1, 2:4], 0.0, atol=1e-6)
    prefix = np.stack([start, start + 0.1, start - 0.1], axis=1)
    plan = Planner(den, norm, 16, "dpm_solver++", 4).plan(prefix, goal)
    np.testing.assert_allclose(plan[:, :3, :4], prefix, atol=1e-6)
    np.testing.assert_allclose(plan[:, -1, :2], goal, atol=1e-6)


def test_replanning_keeps_the_clock():
    """Replans fix the visited states as the first rows: plan[t] is the state at step t."""
    torch.manual_seed(0)
    den = build_denoiser(6, 8, dim=8, dim_mults=(1, 2), cond_input=True)
    norm = LimitsNormalizer(np.full(6, -2.0), np.full(6, 2.0))
    policy = TrackingPolicy(Planner(den, norm, 16, "dpm_solver++", 2), replan_every=4)
    m = get_maze("umaze")
    res = evaluate(m, policy, episodes=2, steps=20)
    # the last replan happened at t = 12 (history stops at horizon - 1 = 15 rows)
    np.testing.assert_allclose(policy.plans[:, :13, :2], res.paths[:, :13], atol=1e-5)
    np.testing.assert_allclose(policy.first_plans[:, 0, :2], res.paths[:, 0], atol=1e-5)


def test_paired_difference():
    d = paired_difference(np.array([3.0, 5.0, 7.0]), np.array([1.0, 2.0, 3.0]))
    assert d["mean"] == pytest.approx(3.0) and d["stderr"] == pytest.approx(1.0 / np.sqrt(3))


def test_train_plan_smoke(tmp_path, data_dir):
    cfg = preset(
        "quick",
        data_steps=5000,
        warmup_steps=1,
        train_steps=3,
        horizon=32,
        dim=8,
        batch_size=4,
        ckpt_every=3,
        episodes=2,
        solver_steps=3,
        device="cpu",
    )
    train(cfg, tmp_path / "run", progress=False)
    den, norm, meta = load_model(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "planner.json").read_text())["horizon"] == 32
    m = get_maze("umaze")
    policy = TrackingPolicy(Planner(den, norm, meta["horizon"], "dpm_solver++", 3))
    res = evaluate(m, policy, episodes=2, steps=40)
    assert res.returns.shape == (2,) and policy.first_plans.shape == (2, 32, 6)
