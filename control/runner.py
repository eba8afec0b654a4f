"""End-to-end Maze2D runs: evaluate methods, benchmark tables and the short demo."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from core.files import atomic_write, write_json
from core.runs import CONFIG_FILE, MODEL_DIR, TRAIN_DIR, check_resume, lock_run
from core.training import resolve_device

from .config import Maze2DConfig, preset
from .maze2d.evaluate import EvalResult, OraclePolicy, RandomPolicy, evaluate
from .maze2d.mazes import get_maze
from .maze2d.planner import Planner, TrackingPolicy
from .maze2d.train import PLANNER_FILE, load_model, train
from .plots import plot_plans, plot_score_table

__all__ = ["METHODS", "evaluate_method", "evaluate_run", "format_table", "benchmark", "demo"]

METHODS = ("random", "oracle", "ddpm", "dpm_solver++")


#: Config fields that do not change the trained planner: a run may resume when only these differ.
RUNTIME_FIELDS = (
    "device", "threads", "episodes", "solver_steps", "solver_order", "replan_every", "mazes", "ckpt_every",
)  # fmt: skip


def make_planner(run_dir: Path, cfg: Maze2DConfig, method: str) -> Planner:
    denoiser, normalizer, meta = load_model(run_dir, device=resolve_device(cfg.device))
    if method == "ddpm":
        return Planner(denoiser, normalizer, meta["horizon"], "ddpm")
    return Planner(
        denoiser, normalizer, meta["horizon"], method, steps=cfg.solver_steps, order=cfg.solver_order
    )


def evaluate_method(
    cfg: Maze2DConfig, method: str, run_dir: Path | None, multi_goal: bool, replan_every: int = 0
) -> tuple[dict, EvalResult, np.ndarray | None]:
    """One row: (summary with plan_latency_ms and nfe, raw result, first plans or None).

    ``replan_every``: for the planners, replan from the current state every that many steps
    (0: plan once, as Diffuser's maze2d).
    """
    maze = get_maze(cfg.maze)
    if method == "random":
        policy, planner = RandomPolicy(cfg.seed), None
    elif method == "oracle":
        policy, planner = OraclePolicy(maze), None
    elif method in ("ddpm", "dpm_solver++"):
        if run_dir is None:
            raise ValueError(f"method {method!r} needs a trained run folder")
        planner = make_planner(run_dir, cfg, method)
        policy = TrackingPolicy(planner, replan_every, seed=cfg.seed)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    result = evaluate(maze, policy, cfg.episodes, seed=cfg.seed, multi_goal=multi_goal)
    row = result.summary()
    row["nfe"] = planner.nfe if planner else 0
    row["plan_latency_ms"] = planner.latency_ms(result.starts, result.goals) if planner else 0.0
    row["replan_every"] = replan_every if planner else 0
    row["eval_seconds"] = result.seconds
    plans = policy.first_plans if planner else None
    return row, result, plans


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and standard error of the per-episode difference a - b (same starts and goals)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return {"mean": float(diff.mean()), "stderr": se, "episodes": len(diff)}


def evaluate_run(
    cfg: Maze2DConfig, run_dir: Path | None, methods=METHODS, tasks=("maze2d", "multi2d")
) -> dict:
    """metrics[task-maze][row] for every method; writes plan figures into run_dir (if given).

    Every row of a task sees the same starts and goals (seed ``cfg.seed``), so ``dpm_solver++``
    also gets ``vs_ddpm``: the paired score difference to DDPM (mean, standard error) and the
    plan-latency speed-up. With ``cfg.replan_every > 0`` ``dpm_solver++`` gets a second row,
    ``dpm_solver++ replan <k>``.
    """
    metrics: dict[str, dict] = {}
    for task in tasks:
        key = f"{task}-{cfg.maze}"
        metrics[key] = {}
        scores: dict[str, np.ndarray] = {}
        for method in methods:
            replans = [0]
            if method == "dpm_solver++" and cfg.replan_every > 0:
                replans.append(cfg.replan_every)
            for k in replans:
                name = method if k == 0 else f"{method} replan {k}"
                row, result, plans = evaluate_method(cfg, method, run_dir, task == "multi2d", k)
                metrics[key][name] = row
                scores[name] = result.scores
                print(f"{key:16s} {name:24s} {_fmt(row)}", flush=True)
                if plans is not None and run_dir is not None:
                    plot_plans(
                        get_maze(cfg.maze),
                        plans,
                        result.goals,
                        run_dir / f"plans_{key}_{name.replace(' ', '_')}.png",
                        executed=result.paths,
                        title=f"{key} {name} (NFE {row['nfe']})",
                    )
        for fast, ref in (("dpm_solver++", "ddpm"),):
            if fast in scores and ref in scores:
                row = metrics[key][fast]
                row["vs_ddpm"] = {
                    **paired_difference(scores[fast], scores[ref]),
                    "speedup": metrics[key][ref]["plan_latency_ms"] / row["plan_latency_ms"],
                }
    return metrics


def _fmt(row: dict) -> str:
    return (
        f"score {row['normalized_score']:7.1f} ± {row['normalized_score_stderr']:4.1f}  "
        f"success {row['success_rate']:.2f}  NFE {row['nfe']:3d}  plan {row['plan_latency_ms']:8.1f} ms"
    )


def format_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["task", "method", "normalised score", "success", "NFE", "plan latency (ms)", "vs DDPM (paired)"]
    rows = []
    for key, by_method in metrics.items():
        for method, r in by_method.items():
            vs = r.get("vs_ddpm")
            paired = f"{vs['mean']:+.1f} ± {vs['stderr']:.1f}, {vs['speedup']:.1f}x faster" if vs else ""
            rows.append(
                [
                    key,
                    method,
                    f"{r['normalized_score']:.1f} ± {r['normalized_score_stderr']:.1f}",
                    f"{r['success_rate']:.2f}",
                    str(r["nfe"]) if r["nfe"] else "–",
                    f"{r['plan_latency_ms']:.1f}" if r["nfe"] else "–",
                    paired,
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


def train_run(cfg: Maze2DConfig, run_dir: Path, progress: bool = True, fresh: bool = False) -> Path:
    """Train into ``run_dir``; ``train_time.json`` records wall and CPU seconds (data generation included).

    On a shared machine wall time overstates the cost; the process CPU time is what the run
    would take on an unloaded core with ``cfg.threads = 1``. An interrupted run with the same
    config (up to :data:`RUNTIME_FIELDS`) resumes from its last checkpoint; a folder holding a
    run of another config is refused (:class:`core.runs.ConfigMismatchError`), never overwritten.
    ``fresh=True`` (``benchmark --retrain``) removes the folder's checkpoints first, saying so.
    """
    torch.set_num_threads(cfg.threads)
    with lock_run(run_dir):
        if fresh:
            for name in (TRAIN_DIR, MODEL_DIR, PLANNER_FILE, CONFIG_FILE):
                path = run_dir / name
                if path.exists():
                    print(f"removing {path} (retraining as asked)", flush=True)
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        check_resume(run_dir, cfg.to_dict(), ignore=RUNTIME_FIELDS)
        write_json(run_dir / CONFIG_FILE, cfg.to_dict())
        t0, c0 = time.perf_counter(), time.process_time()
        train(cfg, run_dir, progress=progress)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    write_json(
        run_dir / "train_time.json",
        {
            "seconds": wall,
            "cpu_seconds": cpu,
            "steps": cfg.train_steps,
            "steps_per_s": cfg.train_steps / wall,
            "threads": cfg.threads,
        },
    )
    return run_dir


def benchmark(cfg: Maze2DConfig, out: Path, reuse: bool = True) -> dict:
    """Train (or reuse) a planner per maze in ``cfg.mazes``, evaluate every method; metrics.json + table."""
    all_metrics: dict[str, dict] = {}
    for name in cfg.mazes:
        mcfg = cfg.replace(maze=name)
        run_dir = out / name
        if not (reuse and (run_dir / PLANNER_FILE).is_file()):
            train_run(mcfg, run_dir, fresh=not reuse)
        torch.set_num_threads(1)
        all_metrics.update(evaluate_run(mcfg, run_dir))
    write_json(out / "metrics.json", all_metrics)
    header, rows = format_table(all_metrics)
    plot_score_table(rows, header, out / "scores.png", title="Maze2D (D4RL normalised score, mean ± s.e.)")
    print_table(all_metrics)
    return all_metrics


def demo(out: Path, seed: int = 0, device: str = "cpu") -> dict:
    """A ~2-minute CPU run: small data, a small planner, 20 episodes per row; writes report.md and figures."""
    torch.set_num_threads(1)
    cfg = preset(
        "quick",
        data_steps=200_000,
        dim=16,
        train_steps=800,
        warmup_steps=50,
        episodes=20,
        solver_steps=9,
        seed=seed,
        device=device,
        ckpt_every=800,
    ).replace(replan_every=0)
    t0 = time.perf_counter()  # an earlier demo of the same settings in ``out`` is resumed (finished: no work)
    train_run(cfg, out, progress=False)
    train_s = time.perf_counter() - t0
    metrics = evaluate_run(cfg, out, tasks=("maze2d",))
    write_json(out / "metrics.json", metrics)
    header, rows = format_table(metrics)
    plot_score_table(rows, header, out / "scores.png", title="Maze2D umaze demo")
    key = f"maze2d-{cfg.maze}"
    with atomic_write(out / "plans.png") as tmp:
        shutil.copyfile(out / f"plans_{key}_dpm_solver++.png", tmp)
    lines = [
        "## Control: Diffuser planning on Maze2D (umaze, demo scale)",
        "",
        f"Data: {cfg.data_steps:,} D4RL-recipe steps generated here; planner: Temporal U-Net "
        f"dim {cfg.dim} x {cfg.dim_mults} with start/goal input channels, {cfg.train_steps} training "
        f"steps ({train_s:.0f} s wall on CPU, with data generation unless cached), horizon {cfg.horizon}, "
        f"T = {cfg.diffusion_steps}; {cfg.episodes} episodes of 300 steps from D4RL's start "
        "distribution, plan once and track. Demo scale only: "
        "`python -m control benchmark maze2d --preset quick` gives the real numbers.",
        "",
        "| method | normalised score | success | NFE | plan latency (ms) | vs DDPM (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(r[1:]) + " |")
    lines += [
        "",
        "Plans (dots, purple to yellow) from the start (blue) to the goal (star), executed path red:",
        "",
        "![plans](./plans.png)",
        "",
    ]
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))
    return metrics
