"""Vectorised Maze2D evaluation with D4RL's scoring, measured on gymnasium-robotics PointMaze.

Episodes run their full length (300 / 600 / 800 steps, no termination at the goal). The
reward is recomputed here with D4RL's rule, +1 for every step that ends within 0.5 of the
goal, so returns are comparable with D4RL's normalisation constants. Fixed-goal tasks
(``maze2d-*``) put the goal in D4RL's goal cell; Multi2D (``multi2d-*``) draws a random goal
per episode. Gymnasium still adds its own +-0.25 noise to both goal and start.

We use ``SyncVectorEnv``: a PointMaze step costs ~30 us, far less than the pipe round trip of
``AsyncVectorEnv``'s one-process-per-env workers, and the machine has two cores (see
``control/README.md`` for the measurement).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from .controller import WaypointController
from .mazes import MazeSpec
from .sim import make_env

__all__ = ["Policy", "RandomPolicy", "OraclePolicy", "EvalResult", "evaluate", "normalized_score"]

REWARD_RADIUS = 0.5


class Policy:
    """Batched policy interface: ``reset`` once per episode batch, then ``act`` every step."""

    def reset(self, obs: np.ndarray, goal: np.ndarray) -> None:
        """obs (B, 4) start states, goal (B, 2) goal positions (gym coordinates)."""

    def act(self, obs: np.ndarray, goal: np.ndarray, t: int) -> np.ndarray:
        """Actions (B, 2) for states obs (B, 4) at step t."""
        raise NotImplementedError


class RandomPolicy(Policy):
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, goal: np.ndarray, t: int) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(len(obs), 2))


class OraclePolicy(Policy):
    """The waypoint controller (BFS + PD): the data-generating policy without its noise."""

    def __init__(self, maze: MazeSpec) -> None:
        self.controller = WaypointController(maze)

    def act(self, obs: np.ndarray, goal: np.ndarray, t: int) -> np.ndarray:
        return self.controller(obs, goal)


def normalized_score(returns: np.ndarray | float, maze: MazeSpec) -> np.ndarray:
    """D4RL normalised score 100 * (R - min) / (max - min)."""
    return 100.0 * (np.asarray(returns) - maze.ref_min_score) / (maze.ref_max_score - maze.ref_min_score)


@dataclass
class EvalResult:
    returns: np.ndarray  # (n,) sparse returns per episode
    scores: np.ndarray  # (n,) normalised scores
    success: np.ndarray  # (n,) bool: within 0.5 of the goal at the last step
    starts: np.ndarray  # (n, 4) start states
    goals: np.ndarray  # (n, 2)
    paths: np.ndarray  # (n, T + 1, 2) executed xy
    seconds: float

    def summary(self) -> dict[str, float]:
        n = len(self.scores)
        se = float(self.scores.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        return {
            "normalized_score": float(self.scores.mean()),
            "normalized_score_stderr": se,
            "return": float(self.returns.mean()),
            "success_rate": float(self.success.mean()),
            "episodes": n,
        }


def make_vector_env(maze: MazeSpec, n: int, vector: str = "sync") -> gym.vector.VectorEnv:
    fns: list[Callable[[], gym.Env]] = [lambda: make_env(maze) for _ in range(n)]
    if vector == "sync":
        return gym.vector.SyncVectorEnv(fns)
    if vector == "async":
        return gym.vector.AsyncVectorEnv(fns)
    raise ValueError(f"vector must be 'sync' or 'async', got {vector!r}")


def evaluate(
    maze: MazeSpec,
    policy: Policy,
    episodes: int = 50,
    seed: int = 0,
    multi_goal: bool = False,
    steps: int | None = None,
    vector: str = "sync",
) -> EvalResult:
    """Roll ``policy`` out in ``episodes`` parallel environments for ``steps`` (default: full length)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = steps or maze.episode_steps
    env = make_vector_env(maze, episodes, vector)
    t0 = time.perf_counter()
    try:
        options = None if multi_goal else {"goal_cell": np.array(maze.goal_cell)}
        obs, _ = env.reset(seed=seed, options=options)
        goal = obs["desired_goal"].copy()
        state = obs["observation"].copy()
        starts = state.copy()
        policy.reset(state, goal)
        returns = np.zeros(episodes)
        paths = [state[:, :2].copy()]
        for t in range(steps):
            action = np.asarray(policy.act(state, goal, t), dtype=np.float64)
            obs, _, _, _, _ = env.step(action)
            state = obs["observation"]
            paths.append(state[:, :2].copy())
            returns += np.linalg.norm(state[:, :2] - goal, axis=-1) <= REWARD_RADIUS
    finally:
        env.close()
    success = np.linalg.norm(state[:, :2] - goal, axis=-1) <= REWARD_RADIUS
    return EvalResult(
        returns=returns,
        scores=normalized_score(returns, maze),
        success=success,
        starts=starts,
        goals=goal,
        paths=np.stack(paths, axis=1),
        seconds=time.perf_counter() - t0,
    )
