import json

import numpy as np
import torch

from control.config import preset
from control.maze2d.evaluate import evaluate
from control.maze2d.mazes import get_maze
from control.maze2d.planner import Planner, TrackingPolicy, build_denoiser
from control.maze2d.train import load_model, train
from control.sequence import LimitsNormalizer
from core.nets.temporal_unet import TemporalUnet


def test_temporal_unet_shapes():
    net = TemporalUnet(6, dim=8, dim_mults=(1, 2, 4))
    x = torch.randn(3, 32, 6)
    assert net(x, torch.rand(3)).shape == x.shape


def test_inpainted_start_and_goal_exact():
    torch.manual_seed(0)
    den = build_denoiser(6, 8, dim=8, dim_mults=(1, 2))
    norm = LimitsNormalizer(np.full(6, -2.0), np.full(6, 2.0))
    start = np.array([[1.0, -1.0, 0.5, -0.25], [0.0, 0.5, 0.0, 0.0]])
    goal = np.array([[-1.0, 1.0], [1.5, -0.5]])
    for method, steps in (("ddpm", None), ("dpm_solver++", 4)):
        plan = Planner(den, norm, 16, method, steps).plan(start, goal)
        assert plan.shape == (2, 16, 6)
        np.testing.assert_allclose(plan[:, 0, :4], start, atol=1e-6)
        np.testing.assert_allclose(plan[:, -1, :2], goal, atol=1e-6)
        np.testing.assert_allclose(plan[:, -1, 2:4], 0.0, atol=1e-6)


def test_train_plan_smoke(tmp_path, data_dir):
    cfg = preset(
        "quick",
        data_steps=5000,
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
