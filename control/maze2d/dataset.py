"""Maze2D datasets: generate-and-cache under ``$ANNEAL_DATA``, load any source into gym coordinates."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np

from core.data import data_root

from ..data import REQUIRED_KEYS, load_d4rl, load_minari, write_d4rl
from .generate import generate_stream
from .mazes import MazeSpec, d4rl_action_to_gym, d4rl_to_gym

__all__ = ["cached_path", "make_dataset", "load_maze2d", "diffuser_timeouts"]


def cached_path(maze: MazeSpec, steps: int, seed: int) -> Path:
    return data_root() / "maze2d" / f"maze2d-{maze.name}-{steps}-seed{seed}.hdf5"


def make_dataset(
    maze: MazeSpec, steps: int, seed: int = 0, progress: bool = False, force: bool = False
) -> Path:
    """Generate (unless cached) the D4RL-format stream for ``maze`` and return its path.

    A cached file that cannot be read or holds another number of steps (a truncated copy, an
    interrupted write by an older version) is regenerated, with a warning naming it."""
    path = cached_path(maze, steps, seed)
    if path.exists() and not force:
        problem = _cache_problem(path, steps)
        if problem is None:
            return path
        warnings.warn(f"regenerating {path}: {problem}", stacklevel=2)
    data = generate_stream(maze, steps, seed=seed, progress=progress)
    attrs = {"coordinates": "gymnasium-robotics", "maze": maze.name, "seed": seed, "generator": "anneal"}
    return write_d4rl(path, data, attrs)


def _cache_problem(path: Path, steps: int) -> str | None:
    """Why the cached dataset ``path`` cannot be reused, or None when it holds ``steps`` valid steps."""
    try:
        with h5py.File(path, "r") as f:  # a truncated HDF5 file fails to open (stored EOF check)
            lengths = {key: f[key].shape[0] for key in REQUIRED_KEYS}
    except (OSError, KeyError) as e:
        return f"unreadable ({e})"
    if set(lengths.values()) != {steps}:
        return f"holds {lengths} steps per key, expected {steps}"
    return None


def load_maze2d(source: str | Path, maze: MazeSpec) -> dict[str, np.ndarray]:
    """Load a D4RL HDF5 (path or ``~/.d4rl`` name) or Minari dataset (``minari:<id or folder>``).

    Returns arrays in gymnasium-robotics coordinates (D4RL-frame files are rotated, see
    :mod:`control.maze2d.mazes`).
    """
    source = str(source)
    if source.startswith("minari:"):
        data, attrs = load_minari(source.removeprefix("minari:"))
    else:
        data, attrs = load_d4rl(source)
    if data["observations"].shape[-1] != 4 or data["actions"].shape[-1] != 2:
        raise ValueError(
            f"{source}: Maze2D expects observations (N, 4) and actions (N, 2), got "
            f"{data['observations'].shape} and {data['actions'].shape}"
        )
    if attrs.get("coordinates") == "d4rl":
        data = dict(data)
        data["observations"] = d4rl_to_gym(data["observations"], maze).astype(np.float32)
        data["actions"] = d4rl_action_to_gym(data["actions"]).astype(np.float32)
        if "infos/goal" in data:
            data["infos/goal"] = d4rl_to_gym(data["infos/goal"], maze).astype(np.float32)
    return data


def diffuser_timeouts(xy: np.ndarray, goal: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Diffuser's ``maze2d_set_terminals``: a path ends at t when at the goal at t and not at t + 1."""
    at_goal = np.linalg.norm(xy - goal, axis=-1) < threshold
    timeouts = np.zeros(len(xy), dtype=bool)
    timeouts[:-1] = at_goal[:-1] & ~at_goal[1:]
    return timeouts
