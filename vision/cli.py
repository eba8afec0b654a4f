"""``python -m vision train|sample|evaluate|translate|edit-video|benchmark|demo``: the vision command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from core.plotting import save_image_grid
from core.runs import add_demo_arguments, run_command
from core.training import resolve_device

from . import demo
from .controlvideo.cli import add_edit_video_command, run_edit_video
from .egsde.cli import (
    add_egsde_benchmark,
    add_egsde_commands,
    run_egsde_benchmark,
    run_egsde_demo,
    run_translate,
)
from .generation.config import FAMILIES, MODELS, PRESETS, image_config
from .generation.datasets import DATASETS
from .generation.evaluate import evaluate_run
from .generation.generate import generate
from .generation.models import load_run
from .generation.train import train

__all__ = ["build_parser", "main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run folder written by `train`")
    p.add_argument(
        "--method", default="dpm_solver++",
        help="a core.sample method (dpm_solver++ = 2M, ddim, ddpm, heun, euler, ...) or consistency",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=20, help="solver steps; 0 = full ancestral chain (ddpm)")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--grid", help="step grid: logsnr (default), time_uniform (default for ddpm), karras, ...")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m vision``."""
    parser = argparse.ArgumentParser(
        prog="python -m vision", description="anneal vision: image generation and translation"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an image model (ddpm, flow, reflow, consistency)")
    t.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    t.add_argument("--model", default="unet", choices=MODELS)
    t.add_argument("--family", default="ddpm", choices=FAMILIES)
    t.add_argument("--dataset", default="fashion_mnist", choices=sorted(DATASETS))
    t.add_argument("--data-root", type=Path, help="dataset folder (IDX files) or digits.png path")
    t.add_argument("--teacher", type=Path, help="teacher run folder (reflow: a flow; consistency: a ddpm)")
    t.add_argument("--steps", type=int, help="override the preset's training steps")
    t.add_argument("--batch-size", type=int, help="override the preset's batch size")
    t.add_argument("--out", type=Path, help="run folder (default runs/vision/<family>_<model>_<dataset>)")
    _common(t)

    s = sub.add_parser("sample", help="draw a PNG grid of class-conditional samples from a trained run")
    _sampling(s)
    s.add_argument("--num", type=int, default=100, help="number of images (balanced over classes)")
    s.add_argument("--out", type=Path, help="PNG path (default <run>/samples_<method>_<steps>.png)")
    _common(s)

    e = sub.add_parser("evaluate", help="fid_<dataset>, precision/recall, class accuracy into metrics.json")
    _sampling(e)
    e.add_argument("--samples", type=int, help="number of samples (default: the preset's eval_samples)")
    _common(e)

    add_egsde_commands(sub)
    add_edit_video_command(sub)
    bench = sub.add_parser("benchmark", help="benchmarks of the vision package")
    add_egsde_benchmark(bench.add_subparsers(dest="benchmark", required=True))

    d = sub.add_parser(
        "demo", help="a digits DDPM sampled by two solvers, then EGSDE digit translation (main job)"
    )
    add_demo_arguments(d, "vision", presets=demo.IMAGE_DEMO_PRESETS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m vision`` with ``argv``; returns the exit status (2 for a user error)."""
    args = build_parser().parse_args(argv)
    torch.manual_seed(getattr(args, "seed", 0))
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "translate":
        return run_translate(args)
    if args.command == "edit-video":
        return run_edit_video(args)
    if args.command == "benchmark":
        return run_egsde_benchmark(args)
    progress = not args.no_progress
    if args.command == "demo":
        metrics = demo.run_demo(
            demo.image_demo_config(args.preset),
            args.out,
            device=args.device,
            seed=args.seed,
            progress=progress,
        )
        for row in metrics["solvers"]:
            print(f"digits {row['solver']:<25} NFE {row['nfe']:>5}  fid_digits {row['fid_digits']:.3f}")
        run_egsde_demo(args.out, args.preset, device=args.device, progress=progress)
        print(f"wrote {args.out / 'report.md'}")
        return 0
    if args.command == "train":
        config = image_config(
            args.preset, model=args.model, family=args.family, dataset=args.dataset,
            teacher=str(args.teacher) if args.teacher else None, steps=args.steps, batch_size=args.batch_size,
        )  # fmt: skip
        out = args.out or Path("runs/vision") / f"{args.family}_{args.model}_{args.dataset}"
        result = train(
            config, out, data_root=args.data_root, device=args.device, seed=args.seed, progress=progress
        )
        print(json.dumps(result))
        print(f"wrote {out / 'model'}")
        return 0
    steps = args.steps or None
    if args.command == "sample":
        den, config = load_run(args.run, resolve_device(args.device))
        x, info = generate(
            den, config, args.num, method=args.method, steps=steps, cfg_scale=args.cfg_scale, grid=args.grid,
            seed=args.seed, progress=progress,
        )  # fmt: skip
        path = args.out or args.run / f"samples_{args.method}_{steps or 'full'}_cfg{args.cfg_scale:g}.png"
        save_image_grid(x, path, nrow=config.num_classes, scale=2)
        print(json.dumps(info))
        print(f"wrote {path}")
        return 0
    result = evaluate_run(
        args.run, method=args.method, steps=steps, cfg_scale=args.cfg_scale, grid=args.grid,
        samples=args.samples, seed=args.seed, device=args.device, progress=progress,
    )  # fmt: skip
    print(json.dumps(result))
    print(f"wrote {args.run / 'metrics.json'}")
    return 0
