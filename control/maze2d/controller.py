"""Waypoint controller: BFS over maze cells plus PD tracking of the next cell's centre (D4RL's recipe)."""

from __future__ import annotations

import numpy as np

from .mazes import MazeSpec

__all__ = ["WaypointController"]


class WaypointController:
    """Vectorised oracle: head for the centre of the next cell on a shortest path, then the goal.

    In the goal's cell the waypoint is the goal itself. The action is
    ``clip(p_gain * (waypoint - xy) + d_gain * v, -1, 1)`` with D4RL's gains (10, -1).
    Two adjacent cells form a convex rectangle, so the straight line to the next centre never
    crosses a wall.
    """

    def __init__(self, maze: MazeSpec, p_gain: float = 10.0, d_gain: float = -1.0) -> None:
        self.maze = maze
        self.p_gain = p_gain
        self.d_gain = d_gain
        self._next = maze.next_cell_table()
        h, w = maze.shape
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        self._centers = maze.cell_center(np.stack([ii, jj], axis=-1))

    def waypoint(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Gym (x, y) waypoints (B, 2) for positions xy (B, 2) and goals (B, 2)."""
        cell = self.maze.cell_of(xy)
        gcell = self.maze.cell_of(goal)
        nxt = self._next[gcell[:, 0], gcell[:, 1], cell[:, 0], cell[:, 1]]
        wp = self._centers[nxt[:, 0], nxt[:, 1]]
        at_goal = np.all(cell == gcell, axis=-1)
        return np.where(at_goal[:, None], goal, wp)

    def __call__(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Actions (B, 2) in [-1, 1] for states obs (B, 4) = (x, y, vx, vy) and goals (B, 2)."""
        obs = np.atleast_2d(obs)
        goal = np.broadcast_to(np.asarray(goal, dtype=np.float64), obs[:, :2].shape)
        wp = self.waypoint(obs[:, :2], goal)
        return np.clip(self.p_gain * (wp - obs[:, :2]) + self.d_gain * obs[:, 2:4], -1.0, 1.0)
