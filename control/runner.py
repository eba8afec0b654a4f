"""End-to-end Maze2D runs: evaluate methods, benchmark tables and the short demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from core.training import resolve_device

from .config import Maze2DConfig
from .maze2d.evaluate import EvalResult, OraclePolicy, RandomPolicy, evaluate
from .maze2d.mazes import get_maze
from .maze2d.planner import Planner, TrackingPolicy
from .maze2d.train import load_model, train
from .plots import plot_plans, plot_score_table

__all__ = ["METHODS", "evaluate_method", "evaluate_run", "format_table", "benchmark", "demo"]

METHODS = ("random", "oracle", "ddpm", "dpm_solver++")


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def make_planner(run_dir: Path, cfg: Maze2DConfig, method: str) -> Planner:
    denoiser, normalizer, meta = load_model(run_dir, device=resolve_device(cfg.device))
    if method == "ddpm":
        return Planner(denoiser, normalizer, meta["horizon"], "ddpm")
    return Planner(
        denoiser, normalizer, meta["horizon"], method, steps=cfg.solver_steps, order=cfg.solver_order
    )


def evaluate_method(
    cfg: Maze2DConfig, method: str, run_dir: Path | None, multi_goal: bool
) -> tuple[dict, EvalResult, np.ndarray | None]:
    """One row: (summary with plan_latency_ms and nfe, raw result, first plans or None)."""
    maze = get_maze(cfg.maze)
    if method == "random":
        policy, planner = RandomPolicy(cfg.seed), None
    elif method == "oracle":
        policy, planner = OraclePolicy(maze), None
    elif method in ("ddpm", "dpm_solver++"):
        if run_dir is None:
            raise ValueError(f"method {method!r} needs a trained run folder")
        planner = make_planner(run_dir, cfg, method)
        policy = TrackingPolicy(planner, cfg.replan_every, seed=cfg.seed)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    result = evaluate(maze, policy, cfg.episodes, seed=cfg.seed, multi_goal=multi_goal)
    row = result.summary()
    row["nfe"] = planner.nfe if planner else 0
    row["plan_latency_ms"] = planner.latency_ms(result.starts, result.goals) if planner else 0.0
    row["eval_seconds"] = result.seconds
    plans = policy.first_plans if planner else None
    return row, result, plans


def evaluate_run(
    cfg: Maze2DConfig, run_dir: Path | None, methods=METHODS, tasks=("maze2d", "multi2d")
) -> dict:
    """metrics[task-maze][method] for every method; writes plan figures into run_dir (if given)."""
    metrics: dict[str, dict] = {}
    for task in tasks:
        key = f"{task}-{cfg.maze}"
        metrics[key] = {}
        for method in methods:
            row, result, plans = evaluate_method(cfg, method, run_dir, multi_goal=task == "multi2d")
            metrics[key][method] = row
            print(f"{key:16s} {method:13s} {_fmt(row)}", flush=True)
            if plans is not None and run_dir is not None:
                plot_plans(
                    get_maze(cfg.maze),
                    plans,
                    result.goals,
                    run_dir / f"plans_{key}_{method}.png",
                    executed=result.paths,
                    title=f"{key} {method} (NFE {row['nfe']})",
                )
    return metrics


def _fmt(row: dict) -> str:
    return (
        f"score {row['normalized_score']:7.1f} ± {row['normalized_score_stderr']:4.1f}  "
        f"success {row['success_rate']:.2f}  NFE {row['nfe']:3d}  plan {row['plan_latency_ms']:8.1f} ms"
    )


def format_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["task", "method", "normalised score", "success", "NFE", "plan latency (ms)"]
    rows = []
    for key, by_method in metrics.items():
        for method, r in by_method.items():
            rows.append(
                [
                    key,
                    method,
                    f"{r['normalized_score']:.1f} ± {r['normalized_score_stderr']:.1f}",
                    f"{r['success_rate']:.2f}",
                    str(r["nfe"]),
                    f"{r['plan_latency_ms']:.1f}",
                ]
            )
    return header, rows


def print_table(metrics: dict) -> str:
    header, rows = format_table(metrics)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def train_run(cfg: Maze2DConfig, run_dir: Path, progress: bool = True) -> Path:
    torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    t0 = time.perf_counter()
    train(cfg, run_dir, progress=progress)
    write_json(run_dir / "train_time.json", {"seconds": time.perf_counter() - t0, "steps": cfg.train_steps})
    return run_dir


def benchmark(cfg: Maze2DConfig, out: Path, reuse: bool = True) -> dict:
    """Train (or reuse) a planner per maze in ``cfg.mazes``, evaluate every method; metrics.json + table."""
    all_metrics: dict[str, dict] = {}
    for name in cfg.mazes:
        mcfg = cfg.replace(maze=name)
        run_dir = out / name
        if not (reuse and (run_dir / "planner.json").is_file()):
            train_run(mcfg, run_dir)
        torch.set_num_threads(1)
        all_metrics.update(evaluate_run(mcfg, run_dir))
    write_json(out / "metrics.json", all_metrics)
    header, rows = format_table(all_metrics)
    plot_score_table(rows, header, out / "scores.png", title="Maze2D (D4RL normalised score, mean ± s.e.)")
    print_table(all_metrics)
    return all_metrics


def demo(out: Path, seed: int = 0) -> dict:
    """A ~2-minute CPU run: small data, a small planner, 10 episodes per row; writes report.md and figures."""
    torch.set_num_threads(1)
    cfg = Maze2DConfig(
        maze="umaze",
        data_steps=200_000,
        dim=16,
        dim_mults=(1, 2, 4),
        train_steps=600,
        batch_size=32,
        lr=1e-3,
        episodes=10,
        solver_steps=10,
        seed=seed,
        threads=1,
        ckpt_every=600,
        mazes=["umaze"],
    )
    t0 = time.perf_counter()
    train_run(cfg, out, progress=False)
    train_s = time.perf_counter() - t0
    metrics = evaluate_run(cfg, out, tasks=("maze2d",))
    write_json(out / "metrics.json", metrics)
    header, rows = format_table(metrics)
    plot_score_table(rows, header, out / "scores.png", title="Maze2D umaze demo")
    key = f"maze2d-{cfg.maze}"
    lines = [
        "## Control: Diffuser planning on Maze2D (umaze, demo scale)",
        "",
        f"Data: {cfg.data_steps:,} D4RL-recipe steps generated here; planner: Temporal U-Net "
        f"dim {cfg.dim} x {cfg.dim_mults}, {cfg.train_steps} training steps ({train_s:.0f} s on CPU), "
        f"horizon {cfg.horizon}, T = {cfg.diffusion_steps}; {cfg.episodes} episodes of 300 steps. "
        "Demo scale only: see `python -m control benchmark maze2d --preset quick` for the real numbers.",
        "",
        "| method | normalised score | success | NFE | plan latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |")
    lines += ["", f"![plans](plans_{key}_dpm_solver++.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return metrics
