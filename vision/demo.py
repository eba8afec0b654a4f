"""``python -m vision demo``: a small class-conditional DDPM on the OpenCV digits, one grid
from two solvers at the same NFE, and their ``fid_digits``.

Both solvers start from the same noise and labels (one class per column), so the two halves
of ``image_samples.png`` differ only by the solver.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core.config import config_to_dict, preset
from core.files import atomic_write
from core.plotting import save_image_grid
from core.training import resolve_device

from .generation.config import image_config
from .generation.generate import generate
from .generation.models import load_run
from .generation.quality import sample_metrics
from .generation.train import train

__all__ = ["IMAGE_DEMO_PRESETS", "ImageDemoConfig", "image_demo_config", "image_report", "run_demo"]

#: The two solvers compared, as (label, core.sample method).
DEMO_SOLVERS = (("DDIM", "ddim"), ("DPM-Solver++(2M)", "dpm_solver++"))


@dataclass
class ImageDemoConfig:
    """``train_steps`` of a ``preset`` U-Net DDPM on the digits; ``samples`` images per solver
    at ``nfe`` network evaluations each; the grid shows the first ``grid`` of them."""

    preset: str = "quick"
    train_steps: int = 800
    samples: int = 500
    nfe: int = 10
    grid: int = 50


IMAGE_DEMO_PRESETS = {
    "quick": ImageDemoConfig(),
    "smoke": ImageDemoConfig(preset="smoke", train_steps=20, samples=40, grid=20),
}


def run_demo(
    config: ImageDemoConfig, out: str | Path, *, device: str = "auto", seed: int = 0, progress: bool = True
) -> dict:
    """Train (or resume) the model, sample with both solvers; write ``image_samples.png``,
    ``metrics.json`` and ``report.md`` into ``out``; returns the metrics.

    The model's run folder is ``out/model-<hash of its config and seed>``: another preset or
    seed trains a new folder beside it instead of overwriting or resuming the wrong one."""
    out = Path(out)
    icfg = image_config(
        config.preset, dataset="digits", family="ddpm", model="unet", steps=config.train_steps
    )
    key = json.dumps({"config": config_to_dict(icfg), "seed": seed}, sort_keys=True)
    run = out / f"model-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    info = train(icfg, run, device=device, seed=seed, progress=progress)
    den, icfg = load_run(run, resolve_device(device))
    rows, grids = [], []
    for label, method in DEMO_SOLVERS:
        x, s = generate(den, icfg, config.samples, method=method, steps=config.nfe, seed=seed + 11)
        labels = torch.arange(config.samples) % icfg.num_classes
        m = sample_metrics("digits", x, labels, image_size=icfg.image_size)
        rows.append({"solver": label, "nfe": s["nfe"], "seconds": s["seconds"], **m})
        grids.append(x[: config.grid])
    save_image_grid(torch.cat(grids), out / "image_samples.png", nrow=icfg.num_classes, scale=3)
    metrics = {
        "run": run.name,
        "train_steps": icfg.steps,
        "train_seconds": info["train_seconds"],
        "final_loss": info["final_loss"],
        "image_size": icfg.image_size,
        "timesteps": icfg.timesteps,
        "solvers": rows,
    }
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text("\n".join(image_report(metrics)))
    return metrics


def image_report(metrics: dict) -> list[str]:
    """Markdown lines of the demo's ``report.md``."""
    half = len(metrics["solvers"])
    lines = [
        "## vision — class-conditional DDPM on handwritten digits",
        "",
        f"A U-Net DDPM (v prediction, {metrics['timesteps']}-step linear-beta schedule) trained "
        f"{metrics['train_steps']} steps "
        f"({metrics['train_seconds']:.0f} s) on the 4,000 OpenCV training digits "
        f"({metrics['image_size']}x{metrics['image_size']}), sampled from the same noise and labels by "
        f"{half} solvers. `fid_digits` is a Frechet distance in the features of a classifier trained "
        "here on the digits (not Inception FID); accuracy is that classifier's on the intended labels.",
        "",
        "| solver | NFE | fid_digits | precision | recall | class accuracy | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['solver']} | {r['nfe']} | {r['fid_digits']:.2f} | {r['precision']:.2f} | {r['recall']:.2f} "
        f"| {r['class_accuracy']:.2f} | {r['seconds']:.1f} |"
        for r in metrics["solvers"]
    ]
    names = " (top) vs ".join(r["solver"] for r in metrics["solvers"]) + " (bottom)"
    lines += ["", f"![digit samples: {names}, one class per column](./image_samples.png)", ""]
    return lines


def image_demo_config(name: str) -> ImageDemoConfig:
    """The demo preset ``name`` (``quick`` or ``smoke``)."""
    return preset(IMAGE_DEMO_PRESETS, name)
