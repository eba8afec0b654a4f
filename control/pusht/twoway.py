"""Multimodality, shown: a two-way task where the demonstrations pass an obstacle on either side.

A point agent in [-1, 1]² starts at (0, -0.8 ± 0.05) and must reach (0, 0.8); a disc of radius 0.3
at the origin blocks the straight line. Half of the demonstrations go around the left, half
around the right. Each step the agent moves towards its action (a target position) by at most
0.08; a move that would enter the disc is refused (the agent stalls there and the episode counts
a collision). A diffusion policy should use both ways in about the demonstrations' proportion;
the MSE-regression policy with the same network predicts their average: it heads straight at the
disc, then slides off to one side and never takes the other way.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.nets import ConditionalUnet1D
from core.training import Trainer, TrainerConfig

from ..sequence import LimitsNormalizer
from .policy import ChunkPolicy, make_windows, policy_loss

__all__ = ["TwoWayTask", "two_way_demos", "train_two_way", "evaluate_two_way"]

START, GOAL, RADIUS, MAX_MOVE = np.array([0.0, -0.8]), np.array([0.0, 0.8]), 0.3, 0.08


@dataclass
class TwoWayTask:
    """Vectorised dynamics of the two-way task for B agents; positions (B, 2)."""

    pos: np.ndarray

    @classmethod
    def reset(cls, n: int, rng: np.random.Generator) -> TwoWayTask:
        pos = np.repeat(START[None], n, axis=0)
        pos[:, 1] += rng.uniform(-0.05, 0.05, size=n)  # on the axis of symmetry: nothing tells the way
        return cls(pos)

    def step(self, target: np.ndarray) -> np.ndarray:
        """Move towards ``target`` (B, 2); returns a (B,) bool mask of refused (colliding) moves."""
        d = target - self.pos
        norm = np.linalg.norm(d, axis=-1, keepdims=True)
        new = self.pos + d * np.minimum(1.0, MAX_MOVE / np.maximum(norm, 1e-9))
        hit = np.linalg.norm(new, axis=-1) < RADIUS
        self.pos = np.where(hit[:, None], self.pos, new)
        return hit


def two_way_demos(
    n: int, seed: int = 0, p_left: float = 0.5
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """``n`` demonstrations: states (T, 2), actions (T, 2) and each one's side (-1 left, +1 right)."""
    rng = np.random.default_rng(seed)
    states, actions, sides = [], [], []
    for _ in range(n):
        side = -1.0 if rng.random() < p_left else 1.0
        x = side * rng.uniform(0.45, 0.6)
        waypoints = [np.array([x, -0.35]), np.array([x, 0.35]), GOAL]
        task = TwoWayTask.reset(1, rng)
        s, a = [], []
        for w in waypoints:
            while np.linalg.norm(task.pos[0] - w) > 0.02 and len(a) < 100:
                d = w - task.pos[0]
                target = task.pos[0] + d * min(1.0, 0.07 / np.linalg.norm(d))
                s.append(task.pos[0].copy())
                a.append(target)
                task.step(target[None])
        states.append(np.array(s))
        actions.append(np.array(a))
        sides.append(side)
    return states, actions, np.array(sides)


def train_two_way(kind: str, steps: int, seed: int = 0, demos: int = 100, device: str = "cpu") -> ChunkPolicy:
    """A chunk policy (point observations, To 2, Tp 16, Ta 8) trained on :func:`two_way_demos`."""
    states, actions, _ = two_way_demos(demos, seed)
    obs_norm = LimitsNormalizer.fit(np.concatenate(states))
    act_norm = LimitsNormalizer.fit(np.concatenate(actions))
    obs_w, act_w = make_windows(states, actions, 2, 16)
    torch.manual_seed(seed)
    net = ConditionalUnet1D(2, 2 * 2, time_embed_dim=32, down_dims=(32, 64), kernel_size=5)
    policy = ChunkPolicy(net, obs_norm, act_norm, "point", 2, 16, 8, kind)
    if kind == "diffusion":
        policy.sampler = "dpm_solver++10"
    data = TensorDataset(
        torch.as_tensor(obs_norm.normalize(obs_w)), torch.as_tensor(act_norm.normalize(act_w))
    )
    with tempfile.TemporaryDirectory(prefix="twoway-") as tmp:
        tcfg = TrainerConfig(
            steps=steps, lr=2e-3, warmup_steps=50, schedule="cosine", ema_decay=0.99,
            ckpt_every=None, keep_last=1, out_dir=tmp, seed=seed, device=device, progress=False,
            tensorboard=False, log_every=max(1, steps),
        )  # fmt: skip
        trainer = Trainer(
            policy, policy_loss, DataLoader(data, batch_size=64, shuffle=True, drop_last=True), tcfg
        )
        trainer.fit(resume=False)
        if trainer.ema is not None:
            trainer.ema.copy_to(policy)
    return policy.cpu().eval()


def evaluate_two_way(policy: ChunkPolicy, episodes: int = 50, seed: int = 0, max_steps: int = 60) -> dict:
    """Rollouts: success (within 0.1 of the goal), collision rate, and the side each one took.

    Returns a dict with the rates, ``left_fraction`` among the episodes that passed the
    obstacle, and ``paths`` (episodes, T + 1, 2).
    """
    rng = np.random.default_rng(10_000 + seed)
    task = TwoWayTask.reset(episodes, rng)
    hist = np.repeat(task.pos[:, None], 2, axis=1)
    paths, collided = [task.pos.copy()], np.zeros(episodes, dtype=bool)
    step, call = 0, 0
    while step < max_steps:
        for a in policy.actions(hist, seed=seed * 7919 + call).transpose(1, 0, 2):
            collided |= task.step(a)
            hist = np.concatenate([hist[:, 1:], task.pos[:, None]], axis=1)
            paths.append(task.pos.copy())
            step += 1
        call += 1
    paths = np.stack(paths, axis=1)
    reached = np.linalg.norm(paths - GOAL, axis=-1).min(axis=1) < 0.1
    passed = paths[..., 1].max(axis=1) > 0.0
    # side: the x of the path where it crosses the obstacle's height band
    band = np.abs(paths[..., 1]) < 0.1
    side_x = np.where(band.any(axis=1), (paths[..., 0] * band).sum(1) / np.maximum(band.sum(1), 1), 0.0)
    left = passed & (side_x < 0)
    return {
        "success_rate": float(reached.mean()),
        "collision_rate": float(collided.mean()),
        "passed_rate": float(passed.mean()),
        "left_fraction": float(left.sum() / max(passed.sum(), 1)),
        "paths": paths,
    }
