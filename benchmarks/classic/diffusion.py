"""Diffusion-family rows of the classic-families table (claim 6): a class-conditional U-Net DDPM,
a rectified-flow (flow-matching) model and a consistency model distilled from that DDPM, trained
small on the same Fashion-MNIST through the image pipeline (``vision.generation``), each scored by
fid_fmnist, precision/recall and sampling seconds per image on balanced class labels.

Runs are cached as the image pipeline caches them (``<out>/<model>/``: resumable training,
``eval/<key>.json`` and a sample grid per evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import apply_overrides, preset
from vision.generation.config import image_config
from vision.generation.evaluate import eval_key, evaluate_run
from vision.generation.train import train

__all__ = ["DiffusionPreset", "PRESETS", "run"]


@dataclass
class DiffusionPreset:
    """``image_preset`` names the image pipeline's preset; steps per model; ``samples`` scored."""

    image_preset: str = "quick"
    ddpm_steps: int = 500
    flow_steps: int = 400
    consistency_steps: int = 80
    batch_size: int = 32
    samples: int = 500
    solver_steps: int = 20


PRESETS = {
    "smoke": DiffusionPreset(
        image_preset="smoke", ddpm_steps=4, flow_steps=4, consistency_steps=2, batch_size=16, samples=20,
        solver_steps=4,
    ),
    "quick": DiffusionPreset(),
    "paper": DiffusionPreset(
        image_preset="paper", ddpm_steps=100_000, flow_steps=100_000, consistency_steps=50_000,
        batch_size=128, samples=10_000,
    ),
}  # fmt: skip


def run(preset_name: str, out: Path, device: str = "auto", *, seed: int = 0, **overrides: Any) -> dict:
    """Train (or resume) and evaluate the three diffusion-family models; returns
    ``{"claims": {}, "metrics", "table_rows"}``."""
    cfg = apply_overrides(preset(PRESETS, preset_name), overrides)
    out = Path(out)
    common = dict(batch_size=cfg.batch_size, eval_samples=cfg.samples, model="unet")
    runs = {
        "ddpm": dict(family="ddpm", steps=cfg.ddpm_steps),
        "flow_matching": dict(family="flow", steps=cfg.flow_steps),
        "consistency": dict(family="consistency", steps=cfg.consistency_steps, teacher=str(out / "ddpm")),
    }
    infos = {}
    for name, fields in runs.items():
        config = image_config(cfg.image_preset, **common, **fields)
        infos[name] = train(config, out / name, device=device, seed=seed, progress=True)
    evals = {
        "ddpm": ("dpm_solver++", cfg.solver_steps),
        "flow_matching": ("dpm_solver++", cfg.solver_steps),
        "consistency": ("consistency", 1),
    }
    rows, metrics = [], {}
    labels = {"ddpm": "DDPM (U-Net)", "flow_matching": "flow matching (U-Net)", "consistency": "consistency"}
    for name, (method, steps) in evals.items():
        r = evaluate_run(
            out / name, method=method, steps=steps, samples=cfg.samples, seed=seed, device=device
        )
        key = eval_key(method, steps, 1.0, cfg.samples, seed)
        rows.append(
            {
                "family": labels[name],
                "model": f"{name} ({method}, {r['nfe']} NFE)",
                "fid_fmnist": r["fid_fmnist"],
                "precision": r["precision"],
                "recall": r["recall"],
                "sample_seconds_per_image": r["seconds"] / cfg.samples,
                "train_seconds": infos[name]["train_seconds"],
                "grid": str(out / name / "eval" / f"{key}.png"),
            }
        )
        metrics[f"fid_{name}"] = r["fid_fmnist"]
    return {"claims": {}, "metrics": metrics, "table_rows": rows}
