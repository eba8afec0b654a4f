"""Maze2D layouts, goal cells and the D4RL <-> gymnasium-robotics coordinate map.

Layouts are D4RL's maze strings (``#`` wall, ``O`` free, ``G`` the fixed goal cell) with
rows i and columns j. Both simulators put a unit cell at every map entry but place them
differently:

* **D4RL** (``maze2d-*-v1``): a cell (i, j) is centred at ``(x, y) = (i, j)`` -- x runs down
  the rows, y along the columns, no offset.
* **gymnasium-robotics** (``PointMaze_*-v3``): the maze is centred on the origin and y points
  up the page: cell (i, j) is centred at ``x = j + 0.5 - W / 2``, ``y = H / 2 - (i + 0.5)``
  for a map of H rows and W columns.

So ``x_gym = y_d4rl + 0.5 - W / 2`` and ``y_gym = H / 2 - 0.5 - x_d4rl`` (a swap of the axes,
a flip of one and a shift); velocities and actions rotate the same way without the shift:
``(vx_gym, vy_gym) = (vy_d4rl, -vx_d4rl)``. Other differences: gymnasium's success radius
is 0.45 (D4RL: reward within 0.5, which is what we score), its reset noise is +-0.25 cell
(D4RL +-0.1) and its start cell is never the goal cell (our evaluation resets as D4RL does,
see :func:`control.maze2d.evaluate.d4rl_initial_states`). The dynamics (point mass, gear 100,
dt 0.01, velocity clipped to +-5, action clipped to +-1) are the same.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAZES", "MazeSpec", "d4rl_action_to_gym", "d4rl_to_gym", "get_maze", "gym_to_d4rl"]

_U_MAZE = "#####\\#GOO#\\###O#\\#OOO#\\#####"
_MEDIUM_MAZE = "########\\#OO##OO#\\#OO#OOO#\\##OOO###\\#OO#OOO#\\#O#OO#O#\\#OOO#OG#\\########"
_LARGE_MAZE = (
    "############\\#OOOO#OOOOO#\\#O##O#O#O#O#\\#OOOOOO#OOO#\\#O####O###O#\\#OO#O#OOOOO#"
    "\\##O#O#O#O###\\#OO#OOO#OGO#\\############"
)

_ACTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass(frozen=True)
class MazeSpec:
    """One Maze2D task.

    Attributes:
        name: short name (``umaze``, ``medium``, ``large``).
        layout: D4RL maze string, rows separated by ``\\``.
        episode_steps: evaluation episode length (D4RL's ``max_episode_steps``).
        ref_min_score, ref_max_score: D4RL's normalisation constants (returns per episode).
        gym_id: the gymnasium-robotics environment with this layout.
        horizon, diffusion_steps: Diffuser's planning horizon and number of DDPM steps.
    """

    name: str
    layout: str
    episode_steps: int
    ref_min_score: float
    ref_max_score: float
    gym_id: str
    horizon: int
    diffusion_steps: int
    grid: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rows = self.layout.split("\\")
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"maze {self.name!r}: rows of unequal length in layout {self.layout!r}")
        object.__setattr__(self, "grid", np.array([[c == "#" for c in r] for r in rows], dtype=bool))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows H, columns W)."""
        return self.grid.shape

    @property
    def goal_cell(self) -> tuple[int, int]:
        """D4RL's fixed goal cell (row, col)."""
        rows = self.layout.split("\\")
        for i, r in enumerate(rows):
            if "G" in r:
                return i, r.index("G")
        raise ValueError(f"maze {self.name!r} has no goal cell")

    @property
    def free_cells(self) -> np.ndarray:
        """(n, 2) int array of free (row, col) cells in row-major order."""
        return np.argwhere(~self.grid)

    @property
    def gym_map(self) -> list[list[int]]:
        """The layout as a gymnasium-robotics ``maze_map`` (1 wall, 0 free)."""
        return self.grid.astype(int).tolist()

    def cell_center(self, cells: np.ndarray) -> np.ndarray:
        """Gym (x, y) of cell centres; cells (..., 2) as (row, col)."""
        h, w = self.shape
        cells = np.asarray(cells, dtype=np.float64)
        return np.stack([cells[..., 1] + 0.5 - w / 2, h / 2 - cells[..., 0] - 0.5], axis=-1)

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """(row, col) int cells containing gym positions xy (..., 2), clipped to the map."""
        h, w = self.shape
        xy = np.asarray(xy, dtype=np.float64)
        i = np.clip(np.floor(h / 2 - xy[..., 1]), 0, h - 1).astype(np.int64)
        j = np.clip(np.floor(xy[..., 0] + w / 2), 0, w - 1).astype(np.int64)
        return np.stack([i, j], axis=-1)

    def validate_cell(self, cell: tuple[int, int] | np.ndarray) -> tuple[int, int]:
        """Return (row, col) as ints; raise ValueError if outside the map or in a wall."""
        i, j = (int(c) for c in cell)
        h, w = self.shape
        if not (0 <= i < h and 0 <= j < w):
            raise ValueError(f"cell {(i, j)} is outside the {self.name} maze of {h} rows x {w} columns")
        if self.grid[i, j]:
            raise ValueError(f"cell {(i, j)} is a wall of the {self.name} maze")
        return i, j

    def validate_position(self, xy: np.ndarray, what: str = "position") -> np.ndarray:
        """Check gym positions (..., 2) are finite and lie in free cells; return them as float64.
        ``what`` names them in the error (``start``, ``goal``)."""
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape[-1:] != (2,):
            raise ValueError(f"{what} must be (x, y) positions of shape (..., 2), got shape {xy.shape}")
        finite = np.isfinite(xy).all(axis=-1)
        if not np.all(finite):
            bad = xy.reshape(-1, 2)[~finite.reshape(-1)][0]
            raise ValueError(f"{what} {bad.tolist()} is not a finite position")
        h, w = self.shape
        x, y = xy[..., 0], xy[..., 1]
        inside = (np.abs(x) < w / 2) & (np.abs(y) < h / 2)
        if not np.all(inside):
            bad = xy.reshape(-1, 2)[~inside.reshape(-1)][0]
            raise ValueError(
                f"{what} {bad.tolist()} is outside the {self.name} maze (|x| < {w / 2}, |y| < {h / 2})"
            )
        cells = self.cell_of(xy).reshape(-1, 2)
        walls = self.grid[cells[:, 0], cells[:, 1]]
        if walls.any():
            bad = xy.reshape(-1, 2)[walls][0]
            raise ValueError(f"{what} {bad.tolist()} lies in a wall cell of the {self.name} maze")
        return xy

    def validate_goal(self, xy: np.ndarray) -> np.ndarray:
        """Check gym goal positions (..., 2) lie in free cells; return them as float64."""
        return self.validate_position(xy, "goal")

    def next_cell_table(self) -> np.ndarray:
        """Shortest-path policy over cells by BFS.

        Returns an int array (H, W, H, W, 2): entry [gi, gj, i, j] is the neighbouring cell to
        move to from (i, j) towards goal cell (gi, gj) (the cell itself at the goal or in walls).
        """
        h, w = self.shape
        table = np.zeros((h, w, h, w, 2), dtype=np.int64)
        table[..., 0] = np.arange(h)[:, None]
        table[..., 1] = np.arange(w)[None, :]
        for gi, gj in self.free_cells:
            dist = np.full((h, w), -1, dtype=np.int64)
            dist[gi, gj] = 0
            queue = deque([(gi, gj)])
            while queue:
                i, j = queue.popleft()
                for di, dj in _ACTIONS:
                    a, b = i + di, j + dj
                    if 0 <= a < h and 0 <= b < w and not self.grid[a, b] and dist[a, b] < 0:
                        dist[a, b] = dist[i, j] + 1
                        table[gi, gj, a, b] = (i, j)
                        queue.append((a, b))
        return table


MAZES: dict[str, MazeSpec] = {
    "umaze": MazeSpec("umaze", _U_MAZE, 300, 23.85, 161.86, "PointMaze_UMaze-v3", 128, 64),
    "medium": MazeSpec("medium", _MEDIUM_MAZE, 600, 13.13, 277.39, "PointMaze_Medium-v3", 256, 256),
    "large": MazeSpec("large", _LARGE_MAZE, 800, 6.7, 273.99, "PointMaze_Large-v3", 384, 256),
}


def get_maze(name: str) -> MazeSpec:
    """Look up a maze by ``umaze``/``medium``/``large`` (``maze2d-`` prefix and ``-v1`` suffix allowed)."""
    key = name.removeprefix("maze2d-").removeprefix("multi2d-").split("-v")[0]
    key = {"u": "umaze", "u-maze": "umaze"}.get(key, key)
    if key not in MAZES:
        raise ValueError(
            f"unknown maze {name!r}; expected one of {sorted(MAZES)} (optionally 'maze2d-<name>')"
        )
    return MAZES[key]


def d4rl_to_gym(obs: np.ndarray, maze: MazeSpec) -> np.ndarray:
    """Map D4RL states (..., 4) = (x, y, vx, vy) or positions (..., 2) to gymnasium-robotics coordinates."""
    obs = np.asarray(obs, dtype=np.float64)
    h, w = maze.shape
    out = np.empty_like(obs)
    out[..., 0] = obs[..., 1] + 0.5 - w / 2
    out[..., 1] = h / 2 - 0.5 - obs[..., 0]
    if obs.shape[-1] == 4:
        out[..., 2] = obs[..., 3]
        out[..., 3] = -obs[..., 2]
    elif obs.shape[-1] != 2:
        raise ValueError(f"expected last dimension 2 (positions) or 4 (states), got {obs.shape}")
    return out


def gym_to_d4rl(obs: np.ndarray, maze: MazeSpec) -> np.ndarray:
    """Inverse of :func:`d4rl_to_gym`."""
    obs = np.asarray(obs, dtype=np.float64)
    h, w = maze.shape
    out = np.empty_like(obs)
    out[..., 0] = h / 2 - 0.5 - obs[..., 1]
    out[..., 1] = obs[..., 0] - 0.5 + w / 2
    if obs.shape[-1] == 4:
        out[..., 2] = -obs[..., 3]
        out[..., 3] = obs[..., 2]
    elif obs.shape[-1] != 2:
        raise ValueError(f"expected last dimension 2 (positions) or 4 (states), got {obs.shape}")
    return out


def d4rl_action_to_gym(actions: np.ndarray) -> np.ndarray:
    """Rotate D4RL actions (..., 2) into gymnasium-robotics axes."""
    actions = np.asarray(actions)
    return np.stack([actions[..., 1], -actions[..., 0]], axis=-1)
