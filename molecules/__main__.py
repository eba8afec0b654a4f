"""``python -m molecules {train,sample,guide,evaluate,benchmark,demo}``: EEGSDE on QM9."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from core.runs import add_demo_arguments, run_command

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _config(args):
    from core.config import apply_overrides, preset

    from .config import PRESETS

    cfg = preset(PRESETS, args.preset)
    overrides = {"seed": args.seed, "device": args.device}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(getattr(cfg, key, None), value, key)
    if getattr(args, "property", None):
        overrides["properties"] = tuple(args.property)
    return apply_overrides(cfg, overrides)


def _parse_value(current, value: str, key: str):
    """A --set value in the type of the config field it replaces."""
    if isinstance(current, bool):
        if value not in ("true", "false"):
            raise ValueError(f"--set {key} expects true or false, got {value!r}")
        return value == "true"
    if isinstance(current, tuple):
        return tuple(type(current[0])(v) if current else v for v in value.split(","))
    try:
        return type(current)(value) if current is not None else json.loads(value)
    except ValueError:
        raise ValueError(f"--set {key}: cannot read {value!r} as {type(current).__name__}") from None


def _run_dir(args, default: str) -> Path:
    return Path(args.out) if args.out else Path("runs/molecules") / default


def _common(p: argparse.ArgumentParser, property_help: str = "property (repeat for several)") -> None:
    p.add_argument("--preset", choices=["quick", "paper", "demo"], default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default=None, help="run folder (default runs/molecules/<command>-<preset>)")
    p.add_argument("--property", action="append", default=None, help=property_help)
    p.add_argument(
        "--set", action="append", default=None, metavar="KEY=VALUE", help="override a config field"
    )


def cmd_train(args) -> None:
    import torch

    torch.set_num_threads(1)
    from .stages import load_splits, stage_edm, stage_evaluator, stage_regressor

    cfg = _config(args)
    run = _run_dir(args, f"benchmark-{args.preset}")
    splits = load_splits(cfg)
    for stage in args.stage:
        if stage == "edm":
            if args.joint:
                stage_edm(cfg, run, cfg.properties, splits)
            else:
                for p in cfg.properties:
                    stage_edm(cfg, run, (p,), splits)
        for p in cfg.properties:
            if stage == "regressor":
                stage_regressor(cfg, run, p, splits)
            elif stage == "evaluator":
                stage_evaluator(cfg, run, p, splits)
    print(f"trained {', '.join(args.stage)} in {run}")


def cmd_sample(args) -> None:
    from .commands import sample_command

    sample_command(_config(args), _run_dir(args, f"benchmark-{args.preset}"), args)


def cmd_guide(args) -> None:
    from .commands import guide_command

    guide_command(_config(args), _run_dir(args, f"benchmark-{args.preset}"), args)


def cmd_evaluate(args) -> None:
    from .commands import evaluate_command

    print(json.dumps(evaluate_command(_config(args), args), indent=2))


def cmd_benchmark(args) -> None:
    from .benchmark import run_benchmark

    metrics = run_benchmark(_config(args), _run_dir(args, f"benchmark-{args.preset}"), args.preset, args.set)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2))


def cmd_demo(args) -> None:
    from .demo import run_demo

    print(json.dumps(run_demo(Path(args.out), seed=args.seed, device=args.device), indent=2))


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m molecules`` argument parser (its ``demo`` follows the demo contract)."""
    parser = argparse.ArgumentParser(prog="python -m molecules", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train EDM, guidance regressors and/or evaluators (cached, resumable)")
    _common(p)
    p.add_argument("--stage", action="append", choices=["edm", "regressor", "evaluator"], required=True)
    p.add_argument(
        "--joint", action="store_true", help="one EDM conditioned on all --property values at once"
    )
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sample", help="sample molecules from a trained EDM (SDF + XYZ)")
    _common(p)
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--target", type=float, action="append", default=None, help="target value per property")
    p.add_argument("--atoms", type=int, default=None, help="atom count (default: drawn from QM9)")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("guide", help="EEGSDE: sample towards target properties with energy guidance")
    _common(p)
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--target", type=float, action="append", required=True, help="target value per property")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--atoms", type=int, default=None)
    p.set_defaults(fn=cmd_guide)

    p = sub.add_parser("evaluate", help="stability / validity / uniqueness / novelty of an SDF or XYZ file")
    _common(p)
    p.add_argument("file", help="SDF or XYZ file of molecules")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("benchmark", help="the full benchmark; writes metrics.json")
    _common(p)
    p.set_defaults(fn=cmd_benchmark)

    p = sub.add_parser("demo", help="a short run on a small cached subset (< 3 minutes)")
    add_demo_arguments(p, "molecules", progress=False)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m molecules`` with ``argv``; returns the exit status (2 for a user error)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
