"""``python -m control {data,train,plan,evaluate,benchmark,demo}``: Diffuser-style Maze2D planning."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from core.files import read_json, write_json  # noqa: E402
from core.runs import add_demo_arguments, run_command, run_folder  # noqa: E402


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["quick", "paper"], default="quick")
    p.add_argument("--maze", default=None, help="umaze | medium | large (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dataset", default=None, help="D4RL HDF5 path or ~/.d4rl name, or minari:<id or folder>")


def _cfg(args):
    from .config import preset

    return preset(args.preset, maze=args.maze, seed=args.seed, device=args.device, dataset=args.dataset)


def cmd_data(args) -> None:
    if args.name == "pusht":
        from .pusht.cli import cmd_data_pusht

        return cmd_data_pusht(args)
    from .maze2d.dataset import make_dataset
    from .maze2d.mazes import get_maze

    maze = get_maze(args.name)
    t0 = time.perf_counter()
    path = make_dataset(maze, args.steps, args.seed, progress=True, force=args.force)
    dt = time.perf_counter() - t0
    print(f"{path}  ({args.steps:,} steps, {dt:.1f} s, {args.steps / dt:,.0f} steps/s incl. writing)")


def cmd_train(args) -> None:
    from .runner import train_run

    cfg = _cfg(args).replace(train_steps=args.steps)
    out = run_folder("control", args.name or f"{args.preset}-{cfg.maze}")
    train_run(cfg, out)
    print(f"trained planner in {out}")


def cmd_plan(args) -> None:
    import numpy as np

    from .maze2d.mazes import get_maze
    from .maze2d.train import PLANNER_FILE
    from .plots import plot_plans
    from .runner import make_planner

    cfg = _cfg(args)
    run = Path(args.run)
    cfg = cfg.replace(maze=read_json(run / PLANNER_FILE)["maze"], solver_steps=args.steps)
    maze = get_maze(cfg.maze)
    start = np.array([[*maze.validate_position(np.array(args.start), "start"), 0.0, 0.0]])
    goal = maze.validate_goal(np.array([args.goal]))
    planner = make_planner(run, cfg, args.method)
    plan = planner.plan(start, goal, seed=args.seed)
    out = plot_plans(
        maze, plan, goal, run / f"plan_{args.method}.png", title=f"{args.method} NFE {planner.nfe}"
    )
    print(f"plan {plan.shape} from {start[0, :2].tolist()} to {goal[0].tolist()}; figure {out}")


def cmd_evaluate(args) -> None:
    from .maze2d.train import PLANNER_FILE
    from .runner import evaluate_run, print_table

    cfg = _cfg(args).replace(episodes=args.episodes, replan_every=args.replan_every)
    run = Path(args.run) if args.run else None
    if run is not None:
        cfg = cfg.replace(maze=read_json(run / PLANNER_FILE)["maze"])
    tasks = ("multi2d",) if args.multi else ("maze2d",)
    metrics = evaluate_run(cfg, run, methods=args.methods, tasks=tasks)
    out = run or Path("runs/control") / f"eval-{cfg.maze}"
    write_json(out / "metrics.json", metrics)
    print_table(metrics)


def cmd_benchmark(args) -> None:
    if args.suite == "pusht":
        from .pusht.cli import cmd_benchmark_pusht

        return cmd_benchmark_pusht(args)
    from .runner import benchmark

    cfg = _cfg(args)
    if args.mazes:
        cfg = cfg.replace(mazes=args.mazes)
    out = Path(args.out or f"runs/control/benchmark-{args.preset}")
    benchmark(cfg, out, reuse=not args.retrain)
    print(f"metrics: {out / 'metrics.json'}")


def cmd_demo(args) -> None:
    from .runner import demo

    demo(args.out, seed=args.seed, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m control``."""
    parser = argparse.ArgumentParser(prog="python -m control", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "data",
        help="generate a D4RL-format Maze2D dataset or Push-T expert demonstrations under $ANNEAL_DATA",
    )
    p.add_argument("name", help="maze2d-umaze | maze2d-medium | maze2d-large | pusht")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--episodes", type=int, default=200, help="pusht: expert episodes")
    p.add_argument("--out", default=None, help="pusht: zarr path (default: the cache under $ANNEAL_DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="regenerate even if cached")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("train", help="train a planner into runs/control/<name>")
    _common(p)
    p.add_argument("--name", default=None)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("plan", help="plan one trajectory and draw it")
    _common(p)
    p.add_argument("--run", required=True)
    p.add_argument("--method", choices=["ddpm", "dpm_solver++"], default="dpm_solver++")
    p.add_argument("--steps", type=int, default=15, help="dpm_solver++ steps (NFE = steps + 1)")
    p.add_argument("--start", type=float, nargs=2, required=True, metavar=("X", "Y"))
    p.add_argument("--goal", type=float, nargs=2, required=True, metavar=("X", "Y"))
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("evaluate", help="score methods by vectorised rollouts")
    _common(p)
    p.add_argument("--run", default=None, help="trained run folder (needed for ddpm / dpm_solver++)")
    p.add_argument("--methods", nargs="+", default=["random", "oracle", "ddpm", "dpm_solver++"])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--multi", action="store_true", help="Multi2D: a random goal per episode")
    p.add_argument("--replan-every", type=int, default=0)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("benchmark", help="train (or reuse) and evaluate every method; metrics.json + table")
    p.add_argument("suite", choices=["maze2d", "pusht"])
    _common(p)
    p.add_argument("--mazes", nargs="+", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--episodes", type=int, default=None, help="pusht: evaluation episodes per row")
    p.add_argument("--train-steps", type=int, default=None, help="pusht: diffusion training steps")
    p.set_defaults(fn=cmd_benchmark)

    p = sub.add_parser("demo", help="short Maze2D run for the main job (report.md + plan figure)")
    add_demo_arguments(p, "control", progress=False)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m control`` with ``argv``; returns the exit status (2 for a user error,
    reported as one line on stderr, as ``python -m core`` does)."""
    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(1)
    return run_command(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
