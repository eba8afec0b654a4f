"""``python -m vision``: image-to-image translation (EGSDE) and its benchmark."""

from __future__ import annotations

import argparse
import sys

from vision.egsde.cli import (
    add_egsde_benchmark,
    add_egsde_commands,
    run_egsde_benchmark,
    run_egsde_demo,
    run_translate,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_egsde_commands(sub)
    bench = sub.add_parser("benchmark", help="benchmarks of the vision package")
    add_egsde_benchmark(bench.add_subparsers(dest="benchmark", required=True))
    demo = sub.add_parser("demo", help="the vision demo: EGSDE stage (digits), grid and metrics")
    demo.add_argument("--out", default="runs/vision/demo/egsde")
    demo.add_argument("--preset", default="quick")
    demo.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.command == "translate":
        return run_translate(args)
    if args.command == "benchmark":
        return run_egsde_benchmark(args)
    run_egsde_demo(args.out, args.preset, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
