"""``python -m control benchmark pusht``: data, training, every row's rollouts, figures, metrics.json.

Rows: ``expert`` (the push planner, calibration), ``regression`` (MSE policy, same network),
and one row per diffusion sampler (``ddpm100`` reference, ``ddim10``, ``dpm_solver++10``). Every
row runs the same seeded starts. Each row has ``mean_max_coverage`` (the Push-T score: the mean
over episodes of each episode's max clip(coverage / 0.95)), ``success_rate`` (coverage > 0.95),
``chunk_latency_ms`` (one chunk for one environment, fastest of 10) and ``nfe``; the fast samplers get
``vs_ddpm100`` (paired score difference with its standard error, latency ratio). The two-way
task shows the multimodality (``multimodality``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from core.config import config_to_dict
from core.data import atomic_write

from .config import PushTConfig
from .figures import plot_scores, plot_strip, record_episode, write_gif
from .rollout import EvalResult, eval_seeds, evaluate_expert, evaluate_policy
from .train import load_buffer, train_policy
from .twoway import evaluate_two_way, train_two_way, two_way_demos

__all__ = ["benchmark", "paired", "write_json"]


def write_json(path: Path, obj: dict) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2))


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and standard error of the per-episode difference a - b (same starts)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return {"mean": float(d.mean()), "stderr": se}


def _row(result: EvalResult, nfe: int, latency_ms: float) -> dict:
    row = result.summary()
    row.update(nfe=nfe, chunk_latency_ms=latency_ms, eval_seconds=result.seconds)
    return row


def _cached_row(out: Path, name: str, fn) -> tuple[dict, np.ndarray]:
    """Reuse ``rows/<name>.json`` from an interrupted run, else compute and store it."""
    path = out / "rows" / f"{name}.json"
    if path.is_file():
        d = json.loads(path.read_text())
        return d["row"], np.array(d["scores"])
    row, scores = fn()
    write_json(path, {"row": row, "scores": np.asarray(scores).tolist()})
    return row, np.asarray(scores)


def benchmark(cfg: PushTConfig, out: Path, progress: bool = True) -> dict:
    """Run everything into ``out`` (resumable: finished models and rows are reused)."""
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "config.json").is_file() and json.loads((out / "config.json").read_text()) != config_to_dict(
        cfg
    ):
        import shutil

        shutil.rmtree(out / "rows", ignore_errors=True)
    write_json(out / "config.json", config_to_dict(cfg))
    wall: dict[str, float] = {}
    t0 = time.perf_counter()
    buf = load_buffer(cfg, progress)
    wall["data"] = time.perf_counter() - t0
    states = eval_start_windows(cfg)

    t = time.perf_counter()
    diffusion = train_policy(cfg, out / "diffusion", "diffusion", progress)
    wall["train_diffusion"] = time.perf_counter() - t
    t = time.perf_counter()
    regression = train_policy(
        cfg.replace(train_steps=cfg.regression_steps), out / "regression", "regression", progress
    )
    wall["train_regression"] = time.perf_counter() - t

    rows: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}
    t = time.perf_counter()

    def expert_row():
        r = evaluate_expert(cfg.episodes, cfg.seed, cfg.max_steps, progress)
        return _row(r, 0, 0.0), r.max_reward

    rows["expert"], scores["expert"] = _cached_row(out, "expert", expert_row)
    for name, policy in [("regression", regression)] + [(s, diffusion) for s in cfg.samplers]:
        if name != "regression":
            policy.sampler = name

        def policy_row(policy=policy):
            r = evaluate_policy(policy, cfg.episodes, cfg.seed, cfg.max_steps, progress=progress)
            return _row(r, policy.nfe, policy.latency_ms(states)), r.max_reward

        rows[name], scores[name] = _cached_row(out, name, policy_row)
        print(f"{name:16s} {_fmt(rows[name])}", flush=True)
    wall["evaluate"] = time.perf_counter() - t
    if "ddpm100" in rows:
        for name in cfg.samplers:
            if name != "ddpm100":
                rows[name]["vs_ddpm100"] = {
                    **paired(scores[name], scores["ddpm100"]),
                    "latency_ratio": rows[name]["chunk_latency_ms"] / rows["ddpm100"]["chunk_latency_ms"],
                }

    t = time.perf_counter()
    multimodality = two_way_benchmark(out, cfg.twoway_steps, cfg.seed)
    wall["multimodality"] = time.perf_counter() - t

    t = time.perf_counter()
    fast = cfg.samplers[-1]
    diffusion.sampler = fast
    frames, score, ok = record_episode(diffusion, eval_seeds(1, cfg.seed)[0], cfg.max_steps)
    write_gif(frames, out / "rollout.gif")
    plot_strip(
        frames, out / "rollout_strip.png", title=f"{fast}: max coverage score {score:.2f}, success {ok}"
    )
    plot_scores(rows, out / "scores.png", title=f"Push-T ({cfg.episodes} seeded episodes per row)")
    wall["figures"] = time.perf_counter() - t
    wall["total"] = sum(wall.values())

    expert = rows["expert"]
    checks = {}
    for name in cfg.samplers:
        r = rows[name]
        checks[name] = {
            "coverage_vs_expert": r["mean_max_coverage"] / max(expert["mean_max_coverage"], 1e-9),
            "coverage_at_least_0.8x_expert": r["mean_max_coverage"] >= 0.8 * expert["mean_max_coverage"],
            "success_at_least_0.4": r["success_rate"] >= 0.4,
        }
    if "dpm_solver++10" in rows and "ddpm100" in rows:
        vs = rows["dpm_solver++10"]["vs_ddpm100"]
        checks["dpm_solver++10_vs_ddpm100"] = {
            "latency_at_most_1/8": vs["latency_ratio"] <= 1 / 8,
            "score_within_one_stderr": abs(vs["mean"]) <= vs["stderr"],
        }
    metrics = {
        **rows,
        "multimodality": multimodality,
        "checks": checks,
        "wall_seconds": wall,
        "data": {"episodes": buf.n_episodes, "steps": buf.n_steps, "source": buf.source},
    }
    write_json(out / "metrics.json", metrics)
    print_table(rows)
    return metrics


def eval_start_windows(cfg: PushTConfig) -> np.ndarray:
    """Observation windows (1, n_obs, 5) at the first evaluation start (for latency timing)."""
    from .env import make_env

    env = make_env()
    obs, _ = env.reset(seed=eval_seeds(1, cfg.seed)[0])
    env.close()
    return np.repeat(obs[None, None], cfg.n_obs, axis=1)


def two_way_benchmark(out: Path, steps: int, seed: int = 0, episodes: int = 50) -> dict:
    """Train diffusion and regression on the two-way task; mode proportions and a rollout figure."""
    from .twoway_plot import plot_two_way

    _, _, sides = two_way_demos(100, seed)
    result = {"demonstrations": {"left_fraction": float((sides < 0).mean()), "episodes": len(sides)}}
    paths = {}
    for kind in ("diffusion", "regression"):
        policy = train_two_way(kind, steps, seed)
        r = evaluate_two_way(policy, episodes, seed)
        paths[kind] = r.pop("paths")
        result[kind] = r
    demo_states, _, _ = two_way_demos(30, seed)
    plot_two_way(demo_states, paths, out / "multimodality.png")
    return result


def _fmt(r: dict) -> str:
    return (
        f"coverage {r['mean_max_coverage']:.3f} ± {r['mean_max_coverage_stderr']:.3f}  "
        f"success {r['success_rate']:.2f}  NFE {r['nfe']:3d}  chunk {r['chunk_latency_ms']:7.1f} ms"
    )


def print_table(rows: dict[str, dict]) -> str:
    lines = [
        "| method | mean max coverage | success | NFE | chunk latency (ms) | vs DDPM-100 (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        vs = r.get("vs_ddpm100")
        pv = f"{vs['mean']:+.3f} ± {vs['stderr']:.3f}, {1 / vs['latency_ratio']:.1f}x faster" if vs else ""
        lines.append(
            f"| {name} | {r['mean_max_coverage']:.3f} ± {r['mean_max_coverage_stderr']:.3f} | "
            f"{r['success_rate']:.2f} | {r['nfe'] or '–'} | {r['chunk_latency_ms']:.1f} | {pv} |"
        )
    text = "\n".join(lines)
    print(text)
    return text
