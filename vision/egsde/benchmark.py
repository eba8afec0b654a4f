"""``python -m vision benchmark egsde``: EGSDE against SDEdit and ILVR, with ablations, on real data.

Per task it trains (or loads from the run folder) the target-domain score model, the
time-dependent domain classifier, a time-independent one (ablation) and the evaluator, then
translates the source test images with every method under several seeds and writes
``metrics.json`` (per task and method: ``fid``, ``ssim``, ``psnr``, ``l2`` and, for digits,
``identity_accuracy``, each as mean, std and per-seed values), a figure of source/translation
pairs and the sensitivity of EGSDE and SDEdit to the start time M. Every translation is cached,
so an interrupted run resumes where it stopped. Tasks run in parallel worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core import resolve_device
from core.config import apply_overrides, config_to_dict, preset, save_config
from core.data import atomic_write
from core.plotting import save_figure
from core.runs import seed_stats, settings_digest

from .data import Task, load_task
from .metrics import translation_metrics
from .models import ModelSettings, train_domain_classifier, train_evaluator, train_score_model
from .translate import TranslateSettings, translate

__all__ = [
    "BASELINES",
    "BENCH_METHODS",
    "EGSDEBenchConfig",
    "PRESETS",
    "bench_config",
    "run_benchmark",
    "egsde_claims",
    "select_settings",
    "spread",
    "started_at",
    "wins",
]

#: Reported methods: (name, translate method, classifier used, start time). The start time is
#: the chosen M (None) or a fixed fraction of T: ILVR as Choi et al. define it (their algorithm
#: and public sampler) starts from pure noise at T and refines every step with the source's low
#: frequencies; ``ilvr_from_m`` is the variant started at M like the others.
BENCH_METHODS = (
    ("egsde", "egsde", "time", None),
    ("sdedit", "sdedit", None, None),
    ("ilvr", "ilvr", None, 1.0),
    ("ilvr_from_m", "ilvr", None, None),
    ("realism_only", "realism_only", "time", None),
    ("faithfulness_only", "faithfulness_only", None, None),
    ("egsde_time_independent", "egsde", "clean", None),
)

#: The baselines the selection rule and the claim compare EGSDE with.
BASELINES = ("sdedit", "ilvr")


def spread(n: int, k: int) -> torch.Tensor:
    """k indices evenly spaced over range(n) (all n when k >= n): the splits are in class order,
    so a prefix would hold the first classes only."""
    return torch.linspace(0, n - 1, min(k, n)).round().long()


def started_at(settings: TranslateSettings, start: float | None) -> TranslateSettings:
    """``settings`` started at ``start`` (a fraction of T; None keeps M), with as many reverse
    steps as keep the step size of a run from M."""
    if start is None:
        return settings
    steps = max(settings.steps, round(settings.steps * start / settings.m))
    return dataclasses.replace(settings, m=start, steps=steps)


@dataclass
class EGSDEBenchConfig:
    """Settings of the benchmark. ``source_dir`` / ``target_dir`` serve the ``folder`` task."""

    tasks: tuple[str, ...] = ("digits", "fashion")
    image_size: int = 16
    channels: int = 1
    models: ModelSettings = field(default_factory=ModelSettings)
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_test: int | None = 256
    n_val: int = 256
    m_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    m_grid_test: int = 128
    figure_pairs: int = 8
    source_dir: str | None = None
    target_dir: str | None = None
    workers: int = 2
    tune_grid: tuple[tuple[float, float, float], ...] = ()
    tune_images: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.models, dict):
            self.models = ModelSettings(**self.models)
        if isinstance(self.translate, dict):
            self.translate = TranslateSettings(**self.translate)
        self.tasks, self.seeds, self.m_grid = tuple(self.tasks), tuple(self.seeds), tuple(self.m_grid)
        self.tune_grid = tuple((float(m), float(a), float(b)) for m, a, b in self.tune_grid)
        for m, _, _ in self.tune_grid:
            if not 0.0 < m <= 1.0:
                raise ValueError(f"M must lie in (0, 1], got {m} in tune_grid")
        if len(self.seeds) < 1:
            raise ValueError("need at least one seed")
        for m in self.m_grid:
            if not 0.0 < m <= 1.0:
                raise ValueError(f"M must lie in (0, 1], got {m} in m_grid")


PRESETS = {
    "quick": EGSDEBenchConfig(
        models=ModelSettings(
            unet_channels=16, unet_attention=(), score_steps=4000, score_batch=32, classifier_channels=16,
            classifier_steps=1500, classifier_batch=32, evaluator_epochs=15, evaluator_train_size=8000,
        ),
        translate=TranslateSettings(lambda_s=100.0, lambda_i=2.0, m=0.5, steps=20, factor=4, layer="mid"),
        n_test=100,
        m_grid=(0.3, 0.5, 0.7),
        m_grid_test=48,
        tune_grid=tuple(
            (m, ls, li) for m in (0.3, 0.4, 0.5) for ls in (50.0, 100.0, 200.0) for li in (0.5, 1.0, 2.0, 5.0)
        ),
        tune_images=128,
    ),
    "paper": EGSDEBenchConfig(
        tasks=("folder",),
        image_size=256,
        channels=3,
        models=ModelSettings(
            unet_channels=128, unet_mults=(1, 1, 2, 2, 4, 4), unet_blocks=2, unet_attention=(16,),
            score_steps=500_000, score_batch=64, score_lr=1e-4, classifier_channels=128,
            classifier_mults=(1, 1, 2, 2, 4, 4), classifier_steps=50_000, classifier_batch=64,
            classifier_lr=1e-4, evaluator_epochs=20, groups=32,
        ),
        translate=TranslateSettings(
            lambda_s=500.0, lambda_i=2.0, m=0.5, steps=500, factor=32, layer="mid", batch_size=8
        ),
        n_test=None,
        n_val=50,
        m_grid=(0.3, 0.4, 0.5, 0.6, 0.7),
        m_grid_test=64,
        workers=1,
    ),
}  # fmt: skip


def bench_config(name: str = "quick", **overrides) -> EGSDEBenchConfig:
    """The preset ``name`` with top-level field overrides (``models`` / ``translate`` as dicts merge)."""
    config = preset(PRESETS, name)
    for key in ("models", "translate"):
        if isinstance(overrides.get(key), dict):
            overrides[key] = dataclasses.replace(getattr(config, key), **overrides[key])
    return apply_overrides(config, overrides)


def _task(config: EGSDEBenchConfig, name: str) -> Task:
    if name == "folder":
        if not config.source_dir or not config.target_dir:
            raise ValueError("the folder task needs source_dir and target_dir (image folders)")
        dirs = {"source_dir": config.source_dir, "target_dir": config.target_dir}
        return load_task("folder", config.image_size, channels=config.channels, n_test=config.n_test, **dirs)
    return load_task(name, config.image_size, n_val=config.n_val, n_test=config.n_test)


def _evaluator_data(task: Task, name: str) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Training images/labels and a held-out pair for the evaluator of ``name``."""
    if name == "digits":
        from core.data import load_opencv_digits, load_sklearn_digits

        s = task.size
        xs, ys = load_opencv_digits(split="train", size=s)
        xt, yt = load_sklearn_digits("train", size=s)
        xs_te, ys_te = load_opencv_digits(split="test", size=s)
        xt_te, yt_te = load_sklearn_digits("test", size=s)
        # classes: digit (source domain) 0..9, digit + 10 (target domain)
        x, y = torch.cat([xs, xt]), torch.cat([ys, yt + 10])
        return x, y, (torch.cat([xs_te, xt_te]), torch.cat([ys_te, yt_te + 10]))
    if name == "fashion":
        from core.data import load_fashion_mnist

        x, y = load_fashion_mnist(split="train", size=task.size)
        xte, yte = load_fashion_mnist(split="test", size=task.size)
        return x, y, (xte, yte)
    x = torch.cat([task.source_train, task.target_train])
    y = torch.cat([torch.zeros(len(task.source_train)), torch.ones(len(task.target_train))]).long()
    xte = torch.cat([task.source_test, task.target_test])
    yte = torch.cat([torch.zeros(len(task.source_test)), torch.ones(len(task.target_test))]).long()
    return x, y, (xte, yte)


#: Settings a method does not read (left out of its cache key).
_UNUSED = {"sdedit": ("lambda_s", "lambda_i", "layer", "factor"), "ilvr": ("lambda_s", "lambda_i", "layer")}


def wins(row: dict, other: dict) -> dict[str, bool]:
    """Per measure, whether ``row`` is better than ``other``: lower FID, higher SSIM and (when
    ``row`` has it) higher identity accuracy."""
    higher = {k: row[k] > other[k] for k in ("ssim", "identity_accuracy") if k in row}
    return {"fid": row["fid"] < other["fid"], **higher}


def select_settings(rows: list[dict], baselines: dict[float, dict[str, dict]]) -> dict:
    """The validation row (M, lambda_s, lambda_i) to use, compared with the baselines run at the
    same M: among rows better than every baseline on every measure (:func:`wins`), the best mean
    rank of FID and SSIM; else among rows better on every measure but FID, the lowest FID; else
    the best mean rank overall."""

    def beats(r: dict, fid: bool) -> bool:
        return all(
            ok for b in baselines[r["m"]].values() for k, ok in wins(r, b).items() if fid or k != "fid"
        )

    def best_rank(cands: list[dict]) -> dict:
        fid_rank = {id(r): i for i, r in enumerate(sorted(cands, key=lambda r: r["fid"]))}
        ssim_rank = {id(r): i for i, r in enumerate(sorted(cands, key=lambda r: -r["ssim"]))}
        return min(cands, key=lambda r: fid_rank[id(r)] + ssim_rank[id(r)])

    dominant = [r for r in rows if beats(r, fid=True)]
    if dominant:
        return best_rank(dominant)
    faithful = [r for r in rows if beats(r, fid=False)]
    if faithful:
        return min(faithful, key=lambda r: r["fid"])
    return best_rank(rows)


def egsde_claims(methods: dict[str, dict]) -> dict:
    """The paper's claims on seed means: EGSDE better than each baseline on every measure
    (:func:`wins`), and each expert alone worse on the other axis (realism alone: lower SSIM;
    faithfulness alone: higher FID)."""
    mean = {tag: {k: v["mean"] for k, v in stats.items()} for tag, stats in methods.items()}
    e = mean["egsde"]
    vs = {b: wins(e, mean[b]) for b in BASELINES}
    experts = {
        "realism_only_less_faithful": mean["realism_only"]["ssim"] < e["ssim"],
        "faithfulness_only_less_realistic": mean["faithfulness_only"]["fid"] > e["fid"],
    }
    return {
        "egsde_beats_baselines": all(all(v.values()) for v in vs.values()),
        "egsde_vs": vs,
        "each_expert_alone_loses": all(experts.values()),
        "experts": experts,
    }


def _write_json(path: Path, obj) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2))


def _cached_translation(path: Path, fn) -> torch.Tensor:
    if path.is_file():
        return torch.load(path, weights_only=True)
    y = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(y, tmp)
    return y


def run_task(
    config: EGSDEBenchConfig, name: str, out: Path, device: str = "auto", progress: bool = True
) -> dict:
    """Train, translate and measure one task; returns its metrics (also in ``out/<name>/metrics.json``)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    dev = resolve_device(device)
    folder = out / name
    task = _task(config, name)
    m = config.models
    den = train_score_model(
        task.target_train, m, folder / "score_model", device=device, progress=progress
    ).to(dev)
    sch = den.schedule
    kw = {"device": device, "progress": progress}
    half = dataclasses.replace(m, classifier_steps=max(1, m.classifier_steps // 2))
    src_train, tgt_train = task.source_train, task.target_train
    clf = {
        "time": train_domain_classifier(src_train, tgt_train, sch, m, folder / "classifier", **kw).to(dev),
        "clean": train_domain_classifier(
            src_train,
            tgt_train,
            sch,
            half,
            folder / "classifier_time_independent",
            time_conditional=False,
            **kw,
        ).to(dev),
    }
    ex, ey, eheld = _evaluator_data(task, name)
    evaluator, eval_info = train_evaluator(ex, ey, eheld, m, folder / "evaluator", progress=progress)
    train_s = time.perf_counter() - start
    labels = task.source_test_labels
    label_of = "digit" if name == "digits" else "class"
    src = task.source_test.to(dev)

    def run(
        method: str, which: str | None, seed: int, settings: TranslateSettings, x: torch.Tensor, tag: str
    ):
        s = dataclasses.replace(settings, method=method)
        g = torch.Generator(device=dev).manual_seed(seed)
        relevant = {k: v for k, v in s.__dict__.items() if k not in _UNUSED.get(method, ())}
        key = settings_digest([relevant, len(x), float(x.sum())])
        return _cached_translation(
            folder / "translations" / f"{tag}_seed{seed}_{key}.pt",
            lambda: translate(den, x, s, classifier=clf.get(which) if which else None, generator=g).cpu(),
        )

    def measure(y: torch.Tensor, x: torch.Tensor, lab: torch.Tensor | None) -> dict:
        return translation_metrics(
            y, x.cpu(), task.target_test, evaluator, source_labels=lab, label_of=label_of
        )

    settings, tuning = config.translate, None
    if config.tune_grid:
        sel = spread(len(task.source_val), config.tune_images)
        x_val = task.source_val[sel].to(dev)
        lab_val = None if task.source_val_labels is None else task.source_val_labels[sel]
        seed = config.seeds[0]
        rows, baselines = [], {}
        for mv, ls, li in config.tune_grid:
            at_m = dataclasses.replace(settings, m=mv)
            if mv not in baselines:
                baselines[mv] = {}
                for b, how, _, begin in BENCH_METHODS:
                    if b in BASELINES:
                        y = run(how, None, seed, started_at(at_m, begin), x_val, f"val_{b}")
                        baselines[mv][b] = measure(y, x_val, lab_val)
            trial = dataclasses.replace(at_m, lambda_s=ls, lambda_i=li)
            y = run("egsde", "time", seed, trial, x_val, "val_egsde")
            rows.append({"m": mv, "lambda_s": ls, "lambda_i": li, **measure(y, x_val, lab_val)})
        best = select_settings(rows, baselines)
        chosen = {k: best[k] for k in ("m", "lambda_s", "lambda_i")}
        settings = dataclasses.replace(settings, **chosen)
        tuning = {"split": "validation", "images": len(x_val), "grid": rows, "chosen": chosen,
                  "baselines": {f"M={mv:g}": b for mv, b in baselines.items()}}  # fmt: skip

    methods: dict[str, dict] = {}
    shown = {}
    pick = spread(len(src), config.figure_pairs)
    for tag, method, which, begin in BENCH_METHODS:
        per_seed = []
        for seed in config.seeds:
            y = run(method, which, seed, started_at(settings, begin), src, tag)
            per_seed.append(translation_metrics(y, src.cpu(), task.target_test, evaluator,
                                                source_labels=labels, label_of=label_of))  # fmt: skip
            if seed == config.seeds[0]:
                shown[tag] = y[pick]
        methods[tag] = {k: seed_stats([r[k] for r in per_seed]) for k in per_seed[0]}
    sensitivity = {}
    sel = spread(len(src), config.m_grid_test)
    x_m = src[sel]
    for tag, method, which in (("egsde", "egsde", "time"), ("sdedit", "sdedit", None)):
        rows = []
        for mv in config.m_grid:
            y = run(
                method,
                which,
                config.seeds[0],
                dataclasses.replace(settings, m=mv),
                x_m,
                f"msweep_{tag}_M{mv:g}",
            )
            sub = None if labels is None else labels[sel]
            rows.append({"m": mv, **translation_metrics(y, x_m.cpu(), task.target_test, evaluator,
                                                         source_labels=sub, label_of=label_of)})  # fmt: skip
        sensitivity[tag] = rows
    result = {
        "description": task.description,
        "sizes": {"source_test": len(task.source_test), "target_train": len(task.target_train),
                  "target_test": len(task.target_test)},
        "evaluator": eval_info,
        "methods": methods,
        "claims": egsde_claims(methods),
        "m_sensitivity": sensitivity,
        "settings": dataclasses.asdict(settings),
        "tuning": tuning,
        "train_seconds": train_s,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    _write_json(folder / "metrics.json", result)
    torch.save({"source": task.source_test[pick], **shown}, folder / "figure_images.pt")
    return result


def _pairs_figure(out: Path, names: list[str]) -> Path:
    import matplotlib.pyplot as plt

    rows = ["source", "egsde", "sdedit", "ilvr", "realism_only", "faithfulness_only"]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 4.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        imgs = torch.load(out / name / "figure_images.pt", weights_only=True)
        grid = []
        for r in rows:
            x = (imgs[r].float().clamp(-1, 1) + 1) / 2
            grid.append(torch.cat(list(x.mean(1)), dim=1))
        ax.imshow(torch.cat(grid, dim=0).numpy(), cmap="gray", vmin=0, vmax=1)
        h = imgs["source"].shape[-1]
        ax.set_yticks([h * (i + 0.5) for i in range(len(rows))], rows)
        ax.set_xticks([])
        ax.set_title(name)
    return save_figure(fig, out / "translations.png")


def _m_figure(out: Path, results: dict) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(9, 3.4 * len(results)), squeeze=False)
    for row, (name, res) in zip(axes, results.items(), strict=True):
        for tag, series in res["m_sensitivity"].items():
            ms = [r["m"] for r in series]
            row[0].plot(ms, [r["fid"] for r in series], "o-", label=tag)
            row[1].plot(ms, [r["ssim"] for r in series], "o-", label=tag)
        row[0].set(xlabel="M (fraction of T)", ylabel="FID (evaluator features)", title=f"{name}: realism")
        row[1].set(xlabel="M (fraction of T)", ylabel="SSIM to source", title=f"{name}: faithfulness")
        row[0].legend()
    return save_figure(fig, out / "m_sensitivity.png")


def run_benchmark(
    config: EGSDEBenchConfig, out: str | Path, *, device: str = "auto", progress: bool = True
) -> dict:
    """Run every task of ``config`` into ``out`` and write ``metrics.json`` and the figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    start = time.perf_counter()
    names = list(config.tasks)
    if config.workers > 1 and len(names) > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(config.workers, len(names)), mp_context=ctx) as pool:
            futures = [pool.submit(run_task, config, n, out, device, False) for n in names]
            results = dict(zip(names, [f.result() for f in futures], strict=True))
    else:
        results = {n: run_task(config, n, out, device, progress) for n in names}
    metrics = {
        "preset_config": config_to_dict(config),
        "fid_features": "penultimate features of a classifier trained here (FeatureClassifier): "
        "digits = 20 classes (domain x digit), fashion = the 10 Fashion-MNIST classes; not Inception FID",
        "tasks": {n: {k: v for k, v in r.items()} for n, r in results.items()},
        "wall_seconds": time.perf_counter() - start,
    }
    _write_json(out / "metrics.json", metrics)
    _pairs_figure(out, names)
    _m_figure(out, results)
    return metrics
