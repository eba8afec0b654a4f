"""Evaluate a trained run: sample with one solver, score against the test split, save a grid.

Each evaluation is cached as ``<run>/eval/<key>.json`` (plus ``<key>.png``, a grid of the first
``grid_samples`` images, one class per column) so a rerun skips it, and every result is merged
into ``<run>/metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.data.paths import atomic_write
from core.plotting import save_image_grid
from core.training import resolve_device

from .generate import generate
from .models import load_run
from .quality import sample_metrics

__all__ = ["evaluate_run", "eval_key"]


def eval_key(
    method: str, steps: int | None, cfg_scale: float, n: int, seed: int, grid: str | None = None
) -> str:
    """File-name key of one evaluation, e.g. ``dpm_solver++_20_cfg1_n500_s0`` (the default grid)
    or ``ddim_10_time_uniform_cfg1_n500_s0``."""
    where = f"_{grid}" if grid else ""
    return f"{method}_{steps if steps is not None else 'full'}{where}_cfg{cfg_scale:g}_n{n}_s{seed}"


def evaluate_run(
    run: str | Path,
    *,
    method: str = "dpm_solver++",
    steps: int | None = 20,
    cfg_scale: float = 1.0,
    grid: str | None = None,
    samples: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Metrics (``fid_<dataset>``, precision, recall, class_accuracy, nfe, seconds) of ``samples``
    images (default the config's ``eval_samples``, balanced over classes) drawn by ``method``
    on ``grid`` (default: see :func:`vision.generation.generate.generate`)."""
    run = Path(run)
    den, config = load_run(run, resolve_device(device))
    n = samples or config.eval_samples
    key = eval_key(method, steps, cfg_scale, n, seed, grid)
    path = run / "eval" / f"{key}.json"
    if path.is_file():
        result = json.loads(path.read_text())
    else:
        x, info = generate(
            den,
            config,
            n,
            method=method,
            steps=steps,
            cfg_scale=cfg_scale,
            grid=grid,
            seed=seed,
            progress=progress,
        )
        labels = torch.arange(n) % config.num_classes
        result = {**info, **sample_metrics(config.dataset, x, labels, image_size=config.image_size)}
        k = min(config.grid_samples, n)
        save_image_grid(x[:k], run / "eval" / f"{key}.png", nrow=config.num_classes, scale=2)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    merged_path = run / "metrics.json"
    merged = json.loads(merged_path.read_text()) if merged_path.is_file() else {}
    merged[key] = result
    with atomic_write(merged_path) as tmp:
        tmp.write_text(json.dumps(merged, indent=2))
    return result
