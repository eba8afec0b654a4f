"""A fast single point-mass simulator on gymnasium-robotics' own MuJoCo model.

``PointMazeSim.step`` reproduces ``PointMaze_*-v3``'s step (action clipped to [-1, 1],
velocity clipped to [-5, 5], one MuJoCo step of 0.01 s) without the gymnasium wrappers,
dict observations and goal bookkeeping, for data generation at > 5k steps/s.
"""

from __future__ import annotations

import gymnasium as gym
import gymnasium_robotics
import mujoco
import numpy as np

from .mazes import MazeSpec

__all__ = ["PointMazeSim", "make_env"]

gym.register_envs(gymnasium_robotics)


def make_env(maze: MazeSpec, **kwargs) -> gym.Env:
    """The gymnasium-robotics PointMaze for ``maze`` with D4RL's layout, continuing task, sparse reward."""
    kwargs.setdefault("max_episode_steps", maze.episode_steps)
    return gym.make(maze.gym_id, maze_map=maze.gym_map, continuing_task=True, reset_target=False, **kwargs)


class PointMazeSim:
    """Bare MuJoCo point mass in the maze; state (x, y, vx, vy) in gym coordinates."""

    def __init__(self, maze: MazeSpec) -> None:
        env = make_env(maze)
        src = env.unwrapped.point_env
        self.model = src.model
        self.data = mujoco.MjData(self.model)
        env.close()

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    @property
    def state(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel])

    def step(self, action: np.ndarray) -> None:
        d = self.data
        np.clip(d.qvel, -5.0, 5.0, out=d.qvel)
        np.clip(action, -1.0, 1.0, out=d.ctrl)
        mujoco.mj_step(self.model, d)
