"""Figures: plans drawn over the maze and a score table (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.plotting import save_figure  # noqa: E402

from .maze2d.mazes import MazeSpec  # noqa: E402

__all__ = ["plot_plans", "plot_score_table"]


def plot_plans(
    maze: MazeSpec,
    plans: np.ndarray,
    goals: np.ndarray,
    path: str | Path,
    executed: np.ndarray | None = None,
    title: str = "",
    max_plots: int = 6,
) -> Path:
    """Plans (B, H, >=2) in gym coordinates over the maze walls; executed paths (B, T, 2) dashed."""
    h, w = maze.shape
    n = min(len(plans), max_plots)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6 * h / w + 0.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(maze.grid, cmap="Greys", vmin=0, vmax=1.5, extent=(-w / 2, w / 2, -h / 2, h / 2))
        xy = plans[k, :, :2]
        ax.scatter(xy[:, 0], xy[:, 1], c=np.linspace(0, 1, len(xy)), cmap="viridis", s=4, zorder=3)
        if executed is not None:
            ax.plot(executed[k, :, 0], executed[k, :, 1], "r--", lw=0.8, zorder=2)
        ax.plot(*xy[0], "o", color="tab:blue", ms=6, zorder=4)
        ax.plot(*goals[k], "*", color="tab:red", ms=10, zorder=4)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_score_table(rows: list[list[str]], header: list[str], path: str | Path, title: str = "") -> Path:
    """Render a table of strings as a PNG."""
    fig, ax = plt.subplots(figsize=(1.6 * len(header), 0.35 * (len(rows) + 2)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.3)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=130)
