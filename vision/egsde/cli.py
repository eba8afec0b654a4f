"""Command-line functions of EGSDE: ``translate``, ``benchmark egsde`` and the EGSDE demo stage."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from core import resolve_device
from core.data import atomic_write
from core.nets import TimeClassifier
from core.plotting import save_image_grid

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
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


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
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_egsde_benchmark(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    overrides = {"tasks": tuple(args.tasks) if args.tasks else None, "workers": args.workers,
                 "source_dir": args.source_dir, "target_dir": args.target_dir}  # fmt: skip
    config = bench_config(args.preset, **overrides)
    out = Path(args.out or f"runs/vision/egsde-{args.preset}")
    metrics = run_benchmark(config, out, device=args.device, progress=not args.no_progress)
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
    progress = not args.no_progress
    y = translate(
        den, source.to(device), settings, classifier=classifier, generator=g, progress=progress
    ).cpu()
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


#: The EGSDE stage of the demo per demo preset: overrides of the benchmark's quick preset.
DEMO_STAGES = {
    "quick": {
        "tasks": ("digits",), "workers": 1, "tune_images": 64,
        "tune_grid": tuple((0.3, ls, li) for ls in (50.0, 100.0) for li in (1.0, 2.0)),
        "models": {"score_steps": 2000, "classifier_steps": 800, "evaluator_epochs": 8},
    },
    "smoke": {
        "tasks": ("digits",), "workers": 1, "seeds": (0, 1, 2), "n_test": 8, "n_val": 8, "m_grid": (0.5,),
        "m_grid_test": 4, "figure_pairs": 4, "translate": {"steps": 2},
        "models": {"score_steps": 2, "score_batch": 8, "classifier_steps": 2, "classifier_batch": 8,
                   "evaluator_epochs": 1, "evaluator_train_size": 200},
    },
}  # fmt: skip


def run_egsde_demo(
    out: str | Path, preset: str = "quick", *, device: str = "auto", progress: bool = True
) -> dict:
    """The EGSDE stage of ``python -m vision demo``: the benchmark's digits task into ``out/egsde``,
    its table appended to ``out/report.md`` with the figure of source/translation pairs."""
    if preset not in DEMO_STAGES:
        raise ValueError(f"unknown demo preset {preset!r}; expected one of {sorted(DEMO_STAGES)}")
    out = Path(out)
    config = bench_config("quick", **DEMO_STAGES[preset])
    metrics = run_benchmark(config, out / "egsde", device=device, progress=progress)
    _print_table(metrics)
    res = metrics["tasks"]["digits"]
    lines = [
        "## vision — EGSDE: OpenCV digits -> scikit-learn digits",
        "",
        f"{res['description']}. A DDPM trained on the target domain only translates each source digit "
        f"from M = {res['settings']['m']:g} T (chosen on validation images); EGSDE guides it with the "
        "realism expert (time-dependent domain classifier) and "
        "the faithfulness expert (low-pass L2). FID: Frechet distance to the target test set in the "
        "features of a classifier trained here (not Inception FID); identity accuracy: that "
        f"classifier's digit agrees with the source label. Mean ± std over {len(config.seeds)} seeds.",
        "",
        "| method | FID | SSIM | PSNR | L2 | identity accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for method, v in res["methods"].items():
        cells = " | ".join(f"{v[k]['mean']:.3f} ± {v[k]['std']:.3f}" for k in ("fid", "ssim", "psnr", "l2"))
        lines.append(f"| {method} | {cells} | {v['identity_accuracy']['mean']:.3f} |")
    lines += ["", "![source (top) and translations](./egsde/translations.png)", ""]
    report = out / "report.md"
    previous = report.read_text() if report.exists() else ""
    with atomic_write(report) as tmp:
        Path(tmp).write_text(previous.rstrip("\n") + "\n\n" + "\n".join(lines))
    return metrics
