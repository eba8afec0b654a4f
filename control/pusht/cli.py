"""Push-T subcommands of ``python -m control`` (data, benchmark, demo stage)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

__all__ = ["cmd_data_pusht", "cmd_benchmark_pusht"]


def cmd_data_pusht(args) -> None:
    from .demos import generate_demos

    t0 = time.perf_counter()
    path = generate_demos(args.episodes, args.seed, path=args.out, progress=True, force=args.force)
    print(f"{path}  ({args.episodes} expert episodes, {time.perf_counter() - t0:.1f} s)")


def cmd_benchmark_pusht(args) -> None:
    from .bench import benchmark
    from .config import preset

    cfg = preset(
        args.preset,
        seed=args.seed,
        device=args.device,
        dataset=args.dataset,
        episodes=args.episodes,
        train_steps=args.train_steps,
    )
    out = Path(args.out or f"runs/control/pusht-{args.preset}")
    if args.retrain:
        for sub in ("diffusion", "regression", "rows"):
            shutil.rmtree(out / sub, ignore_errors=True)
    benchmark(cfg, out)
    print(f"metrics: {out / 'metrics.json'}")
