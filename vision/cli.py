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
from .controlvideo.benchmark import run_controlvideo_demo
from .controlvideo.cli import (
    add_controlvideo_benchmark,
    add_edit_video_command,
    run_controlvideo_benchmark,
    run_edit_video,
)
from .egsde.cli import (
    add_egsde_benchmark,
    add_egsde_commands,
    run_egsde_benchmark,
    run_egsde_demo,
    run_translate,
)
from .generation.classic import CLASSIC_FAMILIES, DIRECT
from .generation.config import FAMILIES, MODELS, PRESETS, image_config
from .generation.datasets import DATASETS
from .generation.evaluate import evaluate_run
from .generation.generate import DEFAULT_METHOD, check_direct, generate
from .generation.models import load_run, run_config
from .generation.train import train

__all__ = ["build_parser", "main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run folder written by `train`")
    p.add_argument(
        "--method",
        help="diffusion families: a core.sample method (dpm_solver++ = 2M, the default; ddim, ddpm, heun, "
        "euler, ...) or consistency; the classic families sample directly and take no solver options",
    )  # fmt: skip
    p.add_argument(
        "--steps", type=int, help="solver steps (default 20); 0 = full ancestral chain (ddpm)"
    )  # fmt: skip
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--grid", help="step grid: logsnr (default), time_uniform (default for ddpm), karras, ...")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m vision``."""
    parser = argparse.ArgumentParser(
        prog="python -m vision", description="anneal vision: image generation and translation"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an image model of any family (ddpm, flow, ..., vae, gan, ...)")
    t.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    t.add_argument("--family", default="ddpm", choices=FAMILIES)
    t.add_argument(
        "--model", choices=MODELS + tuple(sorted({m for f in CLASSIC_FAMILIES.values() for m in f.models})),
        help="diffusion families: the backbone (default unet); vae/iwae: mlp (default) or conv; the other "
        "classic families have one architecture (conv; nade: mlp)",
    )  # fmt: skip
    t.add_argument("--dataset", default="fashion_mnist", choices=sorted(DATASETS))
    t.add_argument("--data-root", type=Path, help="dataset folder (IDX files) or digits.png path")
    t.add_argument("--teacher", type=Path, help="teacher run folder (reflow: a flow; consistency: a ddpm)")
    t.add_argument("--steps", type=int, help="override the preset's training steps")
    t.add_argument("--batch-size", type=int, help="override the preset's batch size")
    t.add_argument("--labels", type=int, help="triple_gan: labelled training images (default 100, balanced)")
    t.add_argument("--iwae-k", type=int, help="iwae: importance samples K of the training bound")
    t.add_argument("--out", type=Path, help="run folder (default runs/vision/<family>_<model>_<dataset>)")
    _common(t)

    s = sub.add_parser("sample", help="draw a PNG grid of class-conditional samples from a trained run")
    _sampling(s)
    s.add_argument("--num", type=int, default=100, help="number of images (balanced over classes)")
    s.add_argument("--out", type=Path, help="PNG path (default <run>/samples_<method>_<steps>.png)")
    _common(s)

    e = sub.add_parser(
        "evaluate",
        help="fid_<dataset>, precision/recall, class accuracy and a classic family's NLL / bits per dim "
        "into metrics.json",
    )
    _sampling(e)
    e.add_argument("--samples", type=int, help="number of samples (default: the preset's eval_samples)")
    _common(e)

    add_egsde_commands(sub)
    add_edit_video_command(sub)
    bench = sub.add_parser("benchmark", help="benchmarks of the vision package")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    add_egsde_benchmark(bench_sub)
    add_controlvideo_benchmark(bench_sub)

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


def _sampler(args: argparse.Namespace, family: str) -> tuple[str, int | None]:
    """The method and steps of ``sample``/``evaluate``: a classic family samples directly (and
    refuses solver options); a diffusion family defaults to dpm_solver++ with 20 steps (0 steps:
    the full ancestral chain)."""
    if family in CLASSIC_FAMILIES:
        check_direct(family, args.method, args.cfg_scale, args.grid)
        if args.steps is not None:
            raise ValueError(
                f"family {family!r} samples directly; --steps applies to the diffusion families only"
            )
        return DIRECT, None
    steps = 20 if args.steps is None else (args.steps or None)
    return args.method or DEFAULT_METHOD, steps


def _run(args: argparse.Namespace) -> int:
    if args.command == "translate":
        return run_translate(args)
    if args.command == "edit-video":
        return run_edit_video(args)
    if args.command == "benchmark":
        if args.benchmark == "controlvideo":
            return run_controlvideo_benchmark(args)
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
        run_controlvideo_demo(args.out, args.preset, device=args.device, progress=progress)
        print(f"wrote {args.out / 'report.md'}")
        return 0
    if args.command == "train":
        only = (("--labels", args.labels, "triple_gan"), ("--iwae-k", args.iwae_k, "iwae"))
        for flag, value, family in only:
            if value is not None and args.family != family:
                raise ValueError(f"{flag} applies to --family {family} only, not {args.family!r}")
        config = image_config(
            args.preset, model=args.model, family=args.family, dataset=args.dataset,
            teacher=str(args.teacher) if args.teacher else None, steps=args.steps, batch_size=args.batch_size,
            labels=args.labels, iwae_k=args.iwae_k,
        )  # fmt: skip
        out = args.out or Path("runs/vision") / f"{config.family}_{config.model}_{config.dataset}"
        result = train(
            config, out, data_root=args.data_root, device=args.device, seed=args.seed, progress=progress
        )
        print(json.dumps(result))
        print(f"wrote {out / 'model'}")
        return 0
    if args.command == "sample":
        model, config = load_run(args.run, resolve_device(args.device))
        method, steps = _sampler(args, config.family)
        x, info = generate(
            model, config, args.num, method=method, steps=steps, cfg_scale=args.cfg_scale, grid=args.grid,
            seed=args.seed, progress=progress,
        )  # fmt: skip
        name = DIRECT if method == DIRECT else f"{method}_{steps or 'full'}_cfg{args.cfg_scale:g}"
        path = args.out or args.run / f"samples_{name}.png"
        save_image_grid(x, path, nrow=config.num_classes, scale=2)
        print(json.dumps(info))
        print(f"wrote {path}")
        return 0
    method, steps = _sampler(args, run_config(args.run).family)
    result = evaluate_run(
        args.run, method=method, steps=steps, cfg_scale=args.cfg_scale, grid=args.grid,
        samples=args.samples, seed=args.seed, device=args.device, progress=progress,
    )  # fmt: skip
    print(json.dumps(result))
    print(f"wrote {args.run / 'metrics.json'}")
    return 0
