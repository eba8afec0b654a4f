"""Run continual methods over scenarios and seeds; accuracy matrices, forgetting, figures.

``R[i][j]`` is the test accuracy on task j's classes (single head, argmax over all classes) after
learning task i. Reported per run: ``final_accuracy`` = mean_j R[T-1][j], ``accuracy_after_task``
[i] = mean_{j<=i} R[i][j], backward transfer ``bwt`` = mean_{j<T-1} (R[T-1][j] - R[j][j]) and
``forgetting`` = mean_{j<T-1} (max_{j<=i<T-1} R[i][j] - R[T-1][j]) (Chaudhry et al. 2018);
``val_final_accuracy`` is the same as ``final_accuracy`` on the validation split (for choosing
hyper-parameters). Each (scenario, method, seed) result is cached as JSON, so a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.config import save_config  # noqa: E402
from core.data import atomic_write  # noqa: E402
from core.plotting import save_figure  # noqa: E402
from core.runs import settings_digest  # noqa: E402

from .methods import METHODS, Learner, MethodConfig, make_learner  # noqa: E402
from .scenarios import SCENARIOS, Scenario, Split, make_scenario  # noqa: E402

__all__ = [
    "PRESETS",
    "BenchmarkConfig",
    "accuracy",
    "run_benchmark",
    "run_key",
    "run_stream",
    "stream_metrics",
]


@dataclass
class BenchmarkConfig:
    """Scenarios x methods x seeds, the data caps and the methods' shared settings."""

    scenarios: tuple[str, ...] = ("split-fashion-mnist", "split-digits", "split-digits-10")
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: int = 3
    train_per_class: int | None = 600
    test_per_class: int | None = 500
    grid_per_class: int = 6
    method: MethodConfig = field(default_factory=MethodConfig)

    def __post_init__(self) -> None:
        for s in self.scenarios:
            if s not in SCENARIOS:
                raise ValueError(f"unknown scenario {s!r}; valid scenarios: {', '.join(SCENARIOS)}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; valid methods: {', '.join(METHODS)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


PRESETS = {
    "quick": BenchmarkConfig(),
    "paper": BenchmarkConfig(
        scenarios=("split-fashion-mnist", "split-digits", "split-fashion-mnist-10", "split-digits-10"),
        seeds=5,
        train_per_class=None,
        test_per_class=None,
        method=MethodConfig(
            hidden=400,
            latent_dim=100,
            classifier_steps=3000,
            gan_steps=5000,
            n_critic=5,
            gan_lr=1e-4,
            fisher_samples=1000,
        ),
    ),
}


@torch.no_grad()
def accuracy(learner: Learner, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split`` classified correctly by the learner's single head."""
    correct = 0
    for s in range(0, len(split), batch_size):
        pred = learner.logits(split.x[s : s + batch_size]).argmax(-1).cpu()
        correct += int((pred == split.y[s : s + batch_size]).sum())
    return correct / len(split)


def stream_metrics(matrix: list[list[float]]) -> dict[str, object]:
    """Final accuracy, accuracy after each task, backward transfer and forgetting of a T x T matrix."""
    r = np.asarray(matrix, dtype=float)
    t = r.shape[0]
    if r.shape != (t, t) or t == 0:
        raise ValueError(f"accuracy matrix must be square T x T with T >= 1, got shape {r.shape}")
    after = [float(r[i, : i + 1].mean()) for i in range(t)]
    bwt = float(np.mean([r[-1, j] - r[j, j] for j in range(t - 1)])) if t > 1 else 0.0
    forget = float(np.mean([r[j:-1, j].max() - r[-1, j] for j in range(t - 1)])) if t > 1 else 0.0
    return {"final_accuracy": after[-1], "accuracy_after_task": after, "bwt": bwt, "forgetting": forget}


def run_stream(
    scenario: Scenario,
    method: str,
    cfg: MethodConfig,
    *,
    device: torch.device,
    seed: int,
    grid_per_class: int = 0,
) -> tuple[dict[str, object], list[torch.Tensor]]:
    """Learn the scenario's tasks in order with ``method``; returns its metrics (see module doc,
    plus ``accuracy_matrix``, ``val_final_accuracy``, ``seconds`` and, with a generator, its final
    ``generator_parameters``) and, for a generator, the replayed images after each task
    (len(seen) * grid_per_class, *image_shape) per task."""
    learner = make_learner(method, scenario.image_shape, scenario.num_classes, cfg, device, seed)
    t = len(scenario)
    matrix = [[0.0] * t for _ in range(t)]
    grids: list[torch.Tensor] = []
    start = time.perf_counter()
    for i, task in enumerate(scenario):
        learner.learn(task)
        for j, other in enumerate(scenario):
            matrix[i][j] = accuracy(learner, other.test)
        if grid_per_class and learner.has_generator:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                sample = learner.replay(learner.seen, grid_per_class)  # leaves the training RNG alone
            if sample is not None:
                grids.append(sample)
    seconds = time.perf_counter() - start
    metrics = stream_metrics(matrix)
    val = float(np.mean([accuracy(learner, task.val) for task in scenario]))
    metrics.update(
        {
            "accuracy_matrix": matrix,
            "val_final_accuracy": val,
            "seconds": seconds,
            "class_order": [list(task.classes) for task in scenario],
        }
    )
    if learner.has_generator:
        metrics["generator_parameters"] = sum(p.numel() for p in learner.gen.parameters())
    return metrics, grids


# --- figures -----------------------------------------------------------------------------------
def plot_matrices(matrices: dict[str, list[list[float]]], title: str, path: Path) -> Path:
    """One heat map per method of its (mean) accuracy matrix (rows: after task i, columns: task j)."""
    n = len(matrices)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, matrices.items(), strict=False):
        r = np.asarray(m)
        mask = np.triu(np.ones_like(r, dtype=bool), 1)
        ax.imshow(np.ma.masked_where(mask, r), vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(r):
            if j <= i and r.shape[0] <= 5:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_title(f"{name}\nfinal {r[-1].mean():.3f}", fontsize=8)
        ax.set_xlabel("task", fontsize=7)
        ax.set_ylabel("after task", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_replay(grids: list[torch.Tensor], per_class: int, title: str, path: Path) -> Path:
    """Replayed samples after each task: one row per task, ``per_class`` columns per seen class."""
    t = len(grids)
    width = max(g.shape[0] // per_class for g in grids)
    h, w = grids[0].shape[-2:]
    canvas = np.full((t * per_class * h, width * w), -1.0)
    for i, g in enumerate(grids):
        imgs = g[:, 0].numpy()  # (n_seen * per_class, h, w), ordered by class
        for k, img in enumerate(imgs):
            c, r = divmod(k, per_class)
            canvas[(i * per_class + r) * h : (i * per_class + r + 1) * h, c * w : (c + 1) * w] = img
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * width * w / 10), max(3.0, 0.35 * t * per_class * h / 10)))
    ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1)
    ax.set_yticks(
        [(i + 0.5) * per_class * h for i in range(t)], [f"after {i + 1}" for i in range(t)], fontsize=7
    )
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


# --- the benchmark ---------------------------------------------------------------------------
def _summary(results: list[dict[str, object]]) -> dict[str, object]:
    gp = "generator_parameters"

    def ms(key: str) -> dict[str, float]:
        vals = [float(r[key]) for r in results]
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}

    after = np.asarray([r["accuracy_after_task"] for r in results])
    return {
        "final_accuracy": ms("final_accuracy"),
        "accuracy_after_task": {
            "mean": after.mean(0).tolist(),
            "std": after.std(0, ddof=1).tolist() if len(results) > 1 else [0.0] * after.shape[1],
        },
        "bwt": ms("bwt"),
        "forgetting": ms("forgetting"),
        "val_final_accuracy": ms("val_final_accuracy"),
        "accuracy_matrix_mean": np.mean([r["accuracy_matrix"] for r in results], 0).tolist(),
        "seconds": ms("seconds"),
        **({gp: ms(gp)} if all(gp in r for r in results) else {}),
        "seeds": len(results),
        "runs": results,
    }


def run_key(config: BenchmarkConfig) -> str:
    """A short digest of the settings a cached run depends on (the methods' config and the data
    caps), so a changed preset or ``--set`` never reuses a stale run."""
    relevant = {
        "method": dataclasses.asdict(config.method),
        "train_per_class": config.train_per_class,
        "test_per_class": config.test_per_class,
    }
    return settings_digest(relevant)


def run_benchmark(
    config: BenchmarkConfig, out: Path, *, device: torch.device, seed: int = 0
) -> dict[str, object]:
    """Every (scenario, method, seed) of ``config`` (cached under ``out/cache``), then
    ``out/metrics.json``, ``out/accuracy-<scenario>.png`` and ``out/replay-<scenario>-<method>.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    jobs = [(s, m, k) for s in config.scenarios for k in range(config.seeds) for m in config.methods]
    key = run_key(config)
    results: dict[str, dict[str, list]] = {s: {m: [] for m in config.methods} for s in config.scenarios}
    cached_scenarios: dict[tuple[str, int], Scenario] = {}
    bar = tqdm(jobs, desc="continual benchmark", unit="run")
    for scen, method, k in bar:
        run_seed = seed + k
        path = out / "cache" / scen / f"{method}-seed{run_seed}-{key}.json"
        if path.exists():
            results[scen][method].append(json.loads(path.read_text()))
            continue
        bar.set_postfix_str(f"{scen} {method} seed {run_seed}")
        if (scen, run_seed) not in cached_scenarios:
            cached_scenarios.clear()
            cached_scenarios[(scen, run_seed)] = make_scenario(
                scen, run_seed, train_per_class=config.train_per_class, test_per_class=config.test_per_class
            )
        scenario = cached_scenarios[(scen, run_seed)]
        per = config.grid_per_class if k == 0 else 0
        metrics, grids = run_stream(
            scenario, method, config.method, device=device, seed=run_seed, grid_per_class=per
        )
        if grids:
            plot_replay(
                grids, per, f"{scen}: {method} replay (seed {run_seed})", out / f"replay-{scen}-{method}.png"
            )
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(metrics))
        results[scen][method].append(metrics)
    summary = {s: {m: _summary(r) for m, r in ms.items() if r} for s, ms in results.items()}
    for scen, ms in summary.items():
        plot_matrices(
            {m: v["accuracy_matrix_mean"] for m, v in ms.items()},
            f"{scen}: accuracy R[i, j]",
            out / f"accuracy-{scen}.png",
        )
    targets = {s: t for s, ms in summary.items() if (t := tmn_targets(ms))}
    payload = {
        "config": dataclasses.asdict(config),
        "device": str(device),
        "results": summary,
        "targets": targets,
    }
    with atomic_write(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1, default=str))
    return payload


def tmn_targets(results: dict[str, dict]) -> dict[str, object]:
    """TMN's margins (mean final accuracy, points): over the best replay baseline (target >= +2),
    over EWC (>= +20), behind joint training (<= 15), and what each ablation costs (> 0)."""
    if "tmn" not in results:
        return {}
    acc = {m: 100 * v["final_accuracy"]["mean"] for m, v in results.items()}
    out: dict[str, object] = {}
    replay = {m: acc[m] for m in ("dgr", "mergan") if m in acc}
    if replay:
        best = max(replay, key=replay.get)
        margin = acc["tmn"] - replay[best]
        out["over_best_replay"] = {"baseline": best, "points": margin, "target": 2.0, "met": margin >= 2.0}
    if "ewc" in acc:
        margin = acc["tmn"] - acc["ewc"]
        out["over_ewc"] = {"points": margin, "target": 20.0, "met": margin >= 20.0}
    if "joint" in acc:
        gap = acc["joint"] - acc["tmn"]
        out["behind_joint"] = {"points": gap, "target": 15.0, "met": gap <= 15.0}
    ablations = {m: acc["tmn"] - acc[m] for m in acc if m.startswith("tmn-")}
    if ablations:
        out["ablation_cost"] = {m: {"points": c, "met": c > 0} for m, c in ablations.items()}
    return out


def table(payload: dict[str, object]) -> str:
    """A markdown table of final accuracy, forgetting and BWT per scenario and method."""
    lines = [
        "| scenario | method | final accuracy | forgetting | BWT | val accuracy | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for scen, ms in payload["results"].items():
        for m, v in ms.items():
            fa, fo, bw, va = v["final_accuracy"], v["forgetting"], v["bwt"], v["val_final_accuracy"]
            lines.append(
                f"| {scen} | {m} | {fa['mean']:.3f} ± {fa['std']:.3f} | {fo['mean']:.3f} | "
                f"{bw['mean']:+.3f} | {va['mean']:.3f} | {v['seconds']['mean']:.0f} |"
            )
    return "\n".join(lines)
