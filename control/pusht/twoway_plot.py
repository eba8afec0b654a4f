"""Figure of the two-way task: demonstrations and each policy's rollouts around the obstacle."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.plotting import save_figure  # noqa: E402

from .twoway import GOAL, RADIUS, START  # noqa: E402

__all__ = ["plot_two_way"]


def plot_two_way(demos: list[np.ndarray], paths: dict[str, np.ndarray], path: str | Path) -> Path:
    """Panels: demonstrations, then one per policy (paths (episodes, T, 2))."""
    panels = [("demonstrations", demos)] + list(paths.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, ps) in zip(axes, panels, strict=True):
        ax.add_patch(plt.Circle((0, 0), RADIUS, color="0.6"))
        for p in ps:
            p = np.asarray(p)
            ax.plot(p[:, 0], p[:, 1], lw=0.8, alpha=0.6)
        ax.plot(*START, "bo", ms=5)
        ax.plot(*GOAL, "r*", ms=10)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
    return save_figure(fig, path)
