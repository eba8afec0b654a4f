"""Evaluate a trained run: sample with one solver, score against the test split, save a grid.

Each evaluation is cached as ``<run>/eval/<key>.json`` (plus ``<key>.png``, a grid of the first
``grid_samples`` images, one class per column) so a rerun skips it, and every result is merged
into ``<run>/metrics.json``. A cached result records a fingerprint of the weights it measured
(:func:`model_fingerprint`) and is recomputed when the run's model has changed (retrained).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from core.checkpoint import WEIGHTS_NAME
from core.files import merge_json, read_json, write_json
from core.plotting import save_image_grid
from core.runs import METRICS_FILE, MODEL_DIR
from core.training import resolve_device

from .classic import CLASSIC_FAMILIES, DIRECT, classic_scores
from .datasets import load_config_images
from .generate import DEFAULT_METHOD, check_direct, generate
from .models import load_run
from .quality import sample_metrics

__all__ = ["eval_key", "evaluate_run", "model_fingerprint"]


def eval_key(
    method: str, steps: int | None, cfg_scale: float, n: int, seed: int, grid: str | None = None
) -> str:
    """File-name key of one evaluation, e.g. ``dpm_solver++_20_cfg1_n500_s0`` (the default grid),
    ``ddim_10_time_uniform_cfg1_n500_s0``, or ``direct_n500_s0`` for a classic family."""
    if method == DIRECT:
        return f"{DIRECT}_n{n}_s{seed}"
    where = f"_{grid}" if grid else ""
    return f"{method}_{steps if steps is not None else 'full'}{where}_cfg{cfg_scale:g}_n{n}_s{seed}"


def evaluate_run(
    run: str | Path,
    *,
    method: str | None = None,
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
    (default ``dpm_solver++``) on ``grid`` (default: see :func:`vision.generation.generate.generate`).

    A classic family samples directly (``method`` None or ``direct``; ``steps`` is unused) and
    adds its own numbers (:func:`~vision.generation.classic.classic_scores`): ``nll`` in nats
    or ``bpd``, or Triple-GAN's classifier ``test_error``; an unconditional family has no
    ``class_accuracy`` and no ``nfe``."""
    run = Path(run)
    den, config = load_run(run, resolve_device(device))
    classic = config.family in CLASSIC_FAMILIES
    if classic:
        check_direct(config.family, method, cfg_scale, grid)
        method, steps = DIRECT, None
    else:
        method = method or DEFAULT_METHOD
    n = samples or config.eval_samples
    key = eval_key(method, steps, cfg_scale, n, seed, grid)
    path = run / "eval" / f"{key}.json"
    fingerprint = model_fingerprint(run)
    result = read_json(path) if path.is_file() else None
    if result is None or result.get("model") != fingerprint:
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
        conditional = not classic or CLASSIC_FAMILIES[config.family].labelled
        labels = torch.arange(n) % config.num_classes if conditional else None
        result = {**info, **sample_metrics(config.dataset, x, labels, image_size=config.image_size)}
        if classic:
            x_test, y_test = load_config_images(config, "test")
            result.update(classic_scores(den, config, x_test, y_test, seed=seed))
        result["model"] = fingerprint
        k = min(config.grid_samples, n)
        save_image_grid(x[:k], run / "eval" / f"{key}.png", nrow=config.num_classes, scale=2)
        write_json(path, result)
    merge_json(run / METRICS_FILE, {key: result})
    return result


def model_fingerprint(run: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of the run's weights file (``model/model.safetensors``)."""
    path = Path(run) / MODEL_DIR / WEIGHTS_NAME
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
