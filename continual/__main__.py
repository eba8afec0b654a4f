"""``python -m continual {benchmark,demo}``: class-incremental learning by generative replay."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.runs import add_demo_arguments, run_command

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _parse_set(items: list[str]) -> dict[str, object]:
    """``key=value`` pairs for the methods' config; values parsed as int, float or string."""
    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def cmd_benchmark(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from core.config import apply_overrides, preset
    from core.training import resolve_device

    from .benchmark import PRESETS, run_benchmark, table

    torch.set_num_threads(args.threads)
    cfg = preset(PRESETS, args.preset)
    method = apply_overrides(cfg.method, _parse_set(args.set))
    cfg = dataclasses.replace(
        cfg,
        method=method,
        scenarios=tuple(args.scenarios) if args.scenarios else cfg.scenarios,
        methods=tuple(args.methods) if args.methods else cfg.methods,
        seeds=args.seeds if args.seeds is not None else cfg.seeds,
    )
    out = Path(args.out) if args.out else Path("runs/continual") / f"benchmark-{args.preset}"
    payload = run_benchmark(cfg, out, device=resolve_device(args.device), seed=args.seed)
    print(table(payload))
    print(f"metrics: {out / 'metrics.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), device=args.device, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m continual`` argument parser (its ``demo`` follows the demo contract)."""
    from .methods import METHODS
    from .scenarios import SCENARIOS

    parser = argparse.ArgumentParser(prog="python -m continual", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("benchmark", help="methods x scenarios x seeds -> metrics.json and figures")
    b.add_argument("--preset", choices=["quick", "paper"], default="quick")
    b.add_argument("--out", default=None, help="output folder (default runs/continual/benchmark-<preset>)")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda")
    b.add_argument("--seed", type=int, default=0, help="first seed (runs use seed, seed+1, ...)")
    b.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the preset's)")
    b.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=None)
    b.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    b.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method config overrides")
    b.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    b.set_defaults(func=cmd_benchmark)
    d = sub.add_parser("demo", help="a short Split-Digits run with its accuracy-matrix figure")
    add_demo_arguments(d, "continual", progress=False)
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m continual`` with ``argv``; returns the exit status (2 for a user error)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
