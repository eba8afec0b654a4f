"""D4RL-recipe Maze2D data: one continuous stream of noisy waypoint-controller behaviour.

At every step the waypoint controller (BFS over cells, PD gains 10 / -1) chooses an action,
Gaussian noise (sigma 0.5) is added and the result clipped to [-1, 1]. When the point is
within 0.1 of the goal (D4RL's controller threshold), or after ``episode_steps`` steps, that
step is marked ``timeouts = True`` and a new goal is drawn: a random free cell's centre plus
uniform noise in [-0.1, 0.1]. The stream itself never resets. Coordinates are
gymnasium-robotics' (see :mod:`control.maze2d.mazes`).
"""

from __future__ import annotations

import math

import numpy as np
from tqdm import tqdm

from .controller import WaypointController
from .mazes import MazeSpec
from .sim import PointMazeSim

__all__ = ["generate_stream"]

GOAL_REACHED = 0.1
REWARD_RADIUS = 0.5
ACTION_NOISE = 0.5


def generate_stream(
    maze: MazeSpec, steps: int, seed: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """Generate ``steps`` transitions; returns D4RL keys -> arrays (float32 / bool).

    Keys: observations (N, 4), actions (N, 2), rewards (N,), terminals (N,), timeouts (N,),
    infos/goal (N, 2), infos/qpos (N, 2), infos/qvel (N, 2). Deterministic in ``seed``.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    rng = np.random.default_rng(seed)
    sim = PointMazeSim(maze)
    ctrl = WaypointController(maze)
    free = maze.free_cells
    centers = maze.cell_center(free)
    nxt = ctrl._next
    all_centers = ctrl._centers
    h, w = maze.shape
    kp, kd = ctrl.p_gain, ctrl.d_gain

    noise = rng.normal(0.0, ACTION_NOISE, size=(steps, 2))
    start = centers[rng.integers(len(free))] + rng.uniform(-0.1, 0.1, size=2)
    sim.reset(start, rng.normal(0.0, 0.1, size=2))

    obs = np.empty((steps, 4), dtype=np.float64)
    acts = np.empty((steps, 2), dtype=np.float64)
    goals = np.empty((steps, 2), dtype=np.float64)
    timeouts = np.zeros(steps, dtype=bool)

    def new_goal() -> tuple[float, float, int, int]:
        k = rng.integers(len(free))
        g = centers[k] + rng.uniform(-0.1, 0.1, size=2)
        return float(g[0]), float(g[1]), int(free[k, 0]), int(free[k, 1])

    gx, gy, gi, gj = new_goal()
    qpos, qvel = sim.data.qpos, sim.data.qvel
    action = np.empty(2)
    ts = 0
    for t in tqdm(range(steps), disable=not progress, desc=f"maze2d-{maze.name}", unit="step", mininterval=1):
        x, y = float(qpos[0]), float(qpos[1])
        vx, vy = float(qvel[0]), float(qvel[1])
        obs[t] = (x, y, vx, vy)
        goals[t] = (gx, gy)
        i = min(max(math.floor(h / 2 - y), 0), h - 1)
        j = min(max(math.floor(x + w / 2), 0), w - 1)
        if i == gi and j == gj:
            wx, wy = gx, gy
        else:
            ni, nj = nxt[gi, gj, i, j]
            wx, wy = all_centers[ni, nj]
        ax = min(max(kp * (wx - x) + kd * vx, -1.0), 1.0) + noise[t, 0]
        ay = min(max(kp * (wy - y) + kd * vy, -1.0), 1.0) + noise[t, 1]
        action[0] = min(max(ax, -1.0), 1.0)
        action[1] = min(max(ay, -1.0), 1.0)
        acts[t] = action
        done = (x - gx) ** 2 + (y - gy) ** 2 < GOAL_REACHED**2 or ts >= maze.episode_steps
        timeouts[t] = done
        sim.step(action)
        ts += 1
        if done:
            gx, gy, gi, gj = new_goal()
            ts = 0
    timeouts[-1] = True

    dist = np.linalg.norm(obs[:, :2] - goals, axis=-1)
    return {
        "observations": obs.astype(np.float32),
        "actions": acts.astype(np.float32),
        "rewards": (dist <= REWARD_RADIUS).astype(np.float32),
        "terminals": np.zeros(steps, dtype=bool),
        "timeouts": timeouts,
        "infos/goal": goals.astype(np.float32),
        "infos/qpos": obs[:, :2].astype(np.float32),
        "infos/qvel": obs[:, 2:].astype(np.float32),
    }
