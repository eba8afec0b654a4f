"""Push-T figures: rollout GIFs and strips rendered by the environment, score bars, paths."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.plotting import save_figure  # noqa: E402

from .env import GOAL_POSE, TEE_OUTLINE, block_keypoints, make_env  # noqa: E402

__all__ = ["record_episode", "write_gif", "plot_strip", "plot_scores"]


def record_episode(policy, seed: int, max_steps: int = 300, every: int = 2, size: int = 192):
    """Run one episode of a ``ChunkPolicy`` (receding horizon) and keep rendered frames.

    Returns (frames (F, size, size, 3) uint8, max reward, success).
    """
    from PIL import Image

    env = make_env(max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    hist = np.repeat(obs[None, None], policy.n_obs, axis=1)
    frames, best, success, step = [], 0.0, False, 0

    def grab():
        img = Image.fromarray(env.render()).resize((size, size), Image.BILINEAR)
        frames.append(np.asarray(img))

    grab()
    done = False
    while not done:
        for a in policy.actions(hist, seed=seed + step)[0]:
            obs, r, term, trunc, _ = env.step(a.astype(np.float64))
            step += 1
            best = max(best, float(r))
            hist = np.concatenate([hist[:, 1:], obs[None, None]], axis=1)
            if step % every == 0 or term or trunc:
                grab()
            if term or trunc:
                success, done = bool(term), True
                break
    env.close()
    return np.stack(frames), best, success


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 10) -> Path:
    """Frames (F, H, W, 3) uint8 -> animated GIF, written atomically."""
    from PIL import Image

    from core.data import atomic_write

    path = Path(path)
    imgs = [Image.fromarray(f) for f in frames]
    with atomic_write(path) as tmp:
        imgs[0].save(
            tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0
        )
    return path


def plot_strip(frames: np.ndarray, path: str | Path, n: int = 6, title: str = "") -> Path:
    """``n`` evenly spaced frames side by side."""
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.3))
    for ax, i in zip(axes, idx, strict=True):
        ax.imshow(frames[i])
        ax.set_axis_off()
        ax.set_title(f"frame {i}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_scores(rows: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Bars of mean max coverage (± s.e.) and success rate per row."""
    names = list(rows)
    cov = [rows[k]["mean_max_coverage"] for k in names]
    se = [rows[k].get("mean_max_coverage_stderr", 0.0) for k in names]
    suc = [rows[k]["success_rate"] for k in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.2))
    ax.bar(x - 0.2, cov, 0.4, yerr=se, label="mean max coverage")
    ax.bar(x + 0.2, suc, 0.4, label="success rate")
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def draw_goal(ax) -> None:
    """The goal T outline (pixels, image orientation: y down)."""
    pts = block_keypoints(GOAL_POSE, TEE_OUTLINE)
    ax.fill(pts[:, 0], pts[:, 1], color="limegreen", alpha=0.3)
