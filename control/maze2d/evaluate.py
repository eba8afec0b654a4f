"""Vectorised Maze2D evaluation with D4RL's scoring, measured on gymnasium-robotics PointMaze.

Episodes run their full length (300 / 600 / 800 steps, no termination at the goal). The
reward is recomputed here with D4RL's rule, +1 for every step that ends within 0.5 of the
goal, so returns are comparable with D4RL's normalisation constants.

Episodes start as D4RL's ``MazeEnv.reset_model`` starts them, not as gymnasium-robotics does
(see :func:`d4rl_initial_states`): start cell uniform over all free cells *including the goal's*,
position noise uniform +-0.1, velocity 0.1 * N(0, 1); the fixed-goal tasks (``maze2d-*``) put
the goal exactly at the centre of D4RL's goal cell, Multi2D (``multi2d-*``) draws a goal cell
uniformly per episode plus uniform +-0.1 noise (D4RL's ``set_target``). Everything is drawn from
one ``numpy`` generator seeded with ``seed`` and written into the environments after their reset.

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

__all__ = [
    "Policy",
    "RandomPolicy",
    "OraclePolicy",
    "EvalResult",
    "d4rl_initial_states",
    "evaluate",
    "normalized_score",
]

REWARD_RADIUS = 0.5
D4RL_POS_NOISE = 0.1  # uniform +-0.1 on qpos (reset_model) and on random targets (set_target)
D4RL_VEL_NOISE = 0.1  # qvel = init_qvel (zeros) + 0.1 * randn


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


def d4rl_initial_states(
    maze: MazeSpec, episodes: int, seed: int, multi_goal: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """D4RL maze2d's start and goal distribution, drawn deterministically from ``seed``.

    D4RL's ``reset_model`` picks the start cell uniformly from ``empty_and_goal_locations``
    (every free cell, the goal's included), adds uniform +-0.1 noise to qpos and sets
    qvel = 0.1 * randn. Its fixed-goal envs keep the goal at the goal cell's centre; a random
    target (``set_target()``, Diffuser's Multi2D) is a uniform free cell plus uniform +-0.1.
    gymnasium-robotics instead never starts in the goal cell and uses +-0.25 on start and goal.

    Returns:
        (start_cells (n, 2) int, goal_cells (n, 2) int, starts (n, 4) = (x, y, vx, vy),
        goals (n, 2)), positions in gym coordinates.
    """
    rng = np.random.default_rng(seed)
    free = maze.free_cells
    start_cells = free[rng.integers(len(free), size=episodes)]
    starts = np.empty((episodes, 4))
    starts[:, :2] = maze.cell_center(start_cells) + rng.uniform(
        -D4RL_POS_NOISE, D4RL_POS_NOISE, size=(episodes, 2)
    )
    starts[:, 2:] = D4RL_VEL_NOISE * rng.standard_normal((episodes, 2))
    if multi_goal:
        goal_cells = free[rng.integers(len(free), size=episodes)]
        goals = maze.cell_center(goal_cells) + rng.uniform(
            -D4RL_POS_NOISE, D4RL_POS_NOISE, size=(episodes, 2)
        )
    else:
        goal_cells = np.tile(np.array(maze.goal_cell), (episodes, 1))
        goals = maze.cell_center(goal_cells)
    return start_cells, goal_cells, starts, goals


def _reset_d4rl(
    env: gym.vector.VectorEnv, maze: MazeSpec, seed: int, multi_goal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Reset every sub-env of a ``SyncVectorEnv`` onto D4RL's start distribution; (states, goals)."""
    n = env.num_envs
    start_cells, goal_cells, starts, goals = d4rl_initial_states(maze, n, seed, multi_goal)
    for i, sub in enumerate(env.envs):
        sub.reset(seed=seed + i, options={"goal_cell": goal_cells[i], "reset_cell": start_cells[i]})
        base = sub.unwrapped
        base.goal = goals[i].copy()
        base.update_target_site_pos()
        base.point_env.set_state(starts[i, :2].copy(), starts[i, 2:].copy())
        state = np.concatenate([base.point_env.data.qpos, base.point_env.data.qvel])
        if not np.allclose(state, starts[i]):
            raise RuntimeError(f"could not set the start state {starts[i]} (got {state})")
    return starts, goals


def make_vector_env(maze: MazeSpec, n: int) -> gym.vector.SyncVectorEnv:
    fns: list[Callable[[], gym.Env]] = [lambda: make_env(maze) for _ in range(n)]
    return gym.vector.SyncVectorEnv(fns)


def evaluate(
    maze: MazeSpec,
    policy: Policy,
    episodes: int = 50,
    seed: int = 0,
    multi_goal: bool = False,
    steps: int | None = None,
) -> EvalResult:
    """Roll ``policy`` out in ``episodes`` parallel environments for ``steps`` (default: full length).

    Starts and goals follow D4RL (:func:`d4rl_initial_states`), seeded by ``seed``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = steps or maze.episode_steps
    env = make_vector_env(maze, episodes)
    t0 = time.perf_counter()
    try:
        state, goal = _reset_d4rl(env, maze, seed, multi_goal)
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
