"""Command line of ``core``: ``python -m core demo --help``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import demo
from .config import preset

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="anneal core: samplers, guidance, training"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="a 2-D diffusion model compared across samplers (part of the main job)")
    d.add_argument("--preset", default="quick", choices=sorted(demo.PRESETS))
    d.add_argument("--out", type=Path, default=Path("runs/demo/core"), help="output folder")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    config = preset(demo.PRESETS, args.preset)
    metrics = demo.run_toy_demo(
        config, args.out, device=args.device, seed=args.seed, progress=not args.no_progress
    )
    for row in metrics["solvers"]:
        print(f"{row['solver']:<32} NFE {row['nfe']:>5}  sliced W2 {row['sliced_wasserstein']:.4f}")
    print(f"wrote {args.out / 'report.md'}")
    return 0
