"""Command line of ``core``: ``python -m core demo --help``."""

from __future__ import annotations

import argparse

import torch

from . import demo
from .config import preset
from .runs import add_demo_arguments, run_command

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="anneal core: samplers, guidance, training"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="a 2-D diffusion model compared across samplers (part of the main job)")
    add_demo_arguments(d, "core", presets=demo.PRESETS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core`` with ``argv``; returns the exit status (2 for a user error)."""
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    config = preset(demo.PRESETS, args.preset)

    def run() -> None:
        metrics = demo.run_toy_demo(
            config, args.out, device=args.device, seed=args.seed, progress=not args.no_progress
        )
        for row in metrics["solvers"]:
            print(f"{row['solver']:<32} NFE {row['nfe']:>5}  sliced W2 {row['sliced_wasserstein']:.4f}")
        print(f"wrote {args.out / 'report.md'}")

    return run_command(run)
