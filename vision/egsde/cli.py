"""Command-line functions of EGSDE: ``translate``, ``benchmark egsde`` and the EGSDE demo stage."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from core import resolve_device
from core.data import atomic_write
from core.metrics import save_image_grid
from core.nets import TimeClassifier

from .benchmark import PRESETS, bench_config, run_benchmark
from .data import load_source_folder, load_task
from .models import load_score_model, train_domain_classifier, train_score_model
from .translate import METHODS, TranslateSettings, image_shape, translate

__all__ = [
    "add_egsde_commands",
    "add_egsde_benchmark",
    "run_egsde_benchmark",
    "run_egsde_demo",
    "run_translate",
]


def _m_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"M must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"M must be a fraction of the diffusion in (0, 1], got {value}")
    return value


def add_egsde_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``translate`` to a subcommand parser."""
    p = sub.add_parser("translate", help="translate a folder of images with EGSDE (or SDEdit / ILVR)")
    p.add_argument("--source", required=True, help="folder of PNG/JPEG source images")
    p.add_argument("--out", required=True, help="folder for the translated images")
    p.add_argument(
        "--preset", default="quick", choices=sorted(PRESETS), help="benchmark preset of the models"
    )
    p.add_argument("--task", default=None, help="task whose models to use (default: the preset's first)")
    p.add_argument(
        "--run",
        default=None,
        help="run folder holding the task's models (default runs/vision/egsde-<preset>)",
    )
    p.add_argument(
        "--score-model", default=None, help="score model folder (ScoreUNet or diffusers UNet2DModel)"
    )
    p.add_argument("--classifier", default=None, help="domain classifier folder (TimeClassifier)")
    p.add_argument("--method", default="egsde", choices=METHODS)
    p.add_argument("--m", type=_m_fraction, default=None, help="start time M as a fraction of T, in (0, 1]")
    p.add_argument("--lambda-s", type=float, default=None)
    p.add_argument("--lambda-i", type=float, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--layer", default=None, help="classifier feature layer of the realism expert")
    p.add_argument("--resize", action="store_true", help="resize images of another size to the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def add_egsde_benchmark(sub: argparse._SubParsersAction) -> None:
    """Add ``egsde`` to the ``benchmark`` subcommand parser."""
    p = sub.add_parser(
        "egsde", help="EGSDE vs SDEdit and ILVR with ablations; writes metrics.json and figures"
    )
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--out", default=None, help="run folder (default runs/vision/egsde-<preset>)")
    p.add_argument("--tasks", nargs="+", default=None, help="subset of the preset's tasks")
    p.add_argument("--source-dir", default=None, help="folder task: source image folder")
    p.add_argument("--target-dir", default=None, help="folder task: target image folder")
    p.add_argument("--workers", type=int, default=None, help="tasks run in parallel processes")
    p.add_argument("--device", default="auto")


def run_egsde_benchmark(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    overrides = {"tasks": tuple(args.tasks) if args.tasks else None, "workers": args.workers,
                 "source_dir": args.source_dir, "target_dir": args.target_dir}  # fmt: skip
    config = bench_config(args.preset, **overrides)
    out = Path(args.out or f"runs/vision/egsde-{args.preset}")
    metrics = run_benchmark(config, out, device=args.device)
    _print_table(metrics)
    print(f"wrote {out / 'metrics.json'}, {out / 'translations.png'}, {out / 'm_sensitivity.png'}")
    return 0


def _print_table(metrics: dict) -> None:
    for name, res in metrics["tasks"].items():
        print(f"\n{name}: {res['description']}")
        keys = list(next(iter(res["methods"].values())))
        print(f"{'method':<24}" + "".join(f"{k:>22}" for k in keys))
        for method, vals in res["methods"].items():
            print(
                f"{method:<24}" + "".join(f"{vals[k]['mean']:>13.4f} ± {vals[k]['std']:<6.4f}" for k in keys)
            )
    print(f"\nwall time {metrics['wall_seconds']:.0f} s")


def run_translate(args: argparse.Namespace) -> int:
    """Translate every image of ``--source`` into ``--out`` (same file names) plus ``pairs.png``."""
    device = resolve_device(args.device)
    config = bench_config(args.preset)
    task_name = args.task or config.tasks[0]
    run = Path(args.run or f"runs/vision/egsde-{args.preset}") / task_name
    if args.score_model:
        den = load_score_model(args.score_model, config.models.timesteps, device)
    else:
        den = train_score_model(load_task(task_name, config.image_size).target_train, config.models,
                                run / "score_model", device=str(device)).to(device)  # fmt: skip
    channels, size = image_shape(den)
    source, names = load_source_folder(args.source, size, channels, resize=args.resize)
    settings = TranslateSettings(**{**config.translate.__dict__, "method": args.method})
    for key, value in (("m", args.m), ("lambda_s", args.lambda_s), ("lambda_i", args.lambda_i),
                       ("steps", args.steps), ("layer", args.layer)):  # fmt: skip
        if value is not None:
            settings = TranslateSettings(**{**settings.__dict__, key: value})
    classifier = None
    if settings.method in ("egsde", "realism_only"):
        if args.classifier:
            classifier = TimeClassifier.from_pretrained(args.classifier, map_location=device)
        else:
            task = load_task(task_name, config.image_size)
            classifier = train_domain_classifier(
                task.source_train,
                task.target_train,
                den.schedule,
                config.models,
                run / "classifier",
                device=str(device),
            ).to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    y = translate(den, source.to(device), settings, classifier=classifier, generator=g, progress=True).cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for img, name in zip(y, names, strict=True):
        save_image_grid(img[None], out / (Path(name).stem + ".png"), nrow=1, padding=0)
    n = min(16, len(y))
    save_image_grid(torch.cat([source[:n], y[:n]]), out / "pairs.png", nrow=n, scale=max(1, 64 // size))
    with atomic_write(out / "translate.json") as tmp:
        Path(tmp).write_text(json.dumps({"settings": settings.__dict__, "images": len(y),
                                         "seconds": time.perf_counter() - start}, indent=2))  # fmt: skip
    print(f"translated {len(y)} images into {out}")
    return 0


def run_egsde_demo(out: str | Path, preset: str = "quick", device: str = "auto") -> dict:
    """The EGSDE stage of the main job's demo: the digits task of the benchmark (grid + metrics)."""
    config = bench_config(preset, tasks=("digits",) if preset == "quick" else None, workers=1)
    metrics = run_benchmark(config, Path(out), device=device)
    _print_table(metrics)
    return metrics
