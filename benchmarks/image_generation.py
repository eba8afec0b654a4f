"""Image-generation benchmark: six claims of the image papers on Fashion-MNIST and a 2-D toy.

    python benchmarks/image_generation.py --preset quick [--stages ddpm,cfg] [--out runs/core/bench_quick]

Stages (each cached in its run folder; a rerun skips finished work and resumes training):

- ``distill2d``  (5) SDS vs VSD particles against a frozen 2-D diffusion prior of a known ring mixture;
- ``ddpm``       (1) class-conditional U-Net DDPM (``TEACHER``: longer than the preset's other
                 models): DPM-Solver++(2M) and DDIM at 10/20 NFE, logSNR and time-uniform grids,
                 and Heun on the same model's probability-flow ODE in t (the diffusion model as a flow);
- ``ancestral``  (1) the same model's full 1000-step ancestral sampler (the reference FID);
- ``cfg``        (2) classifier-free guidance scales vs the held-out classifier's accuracy;
- ``uvit``, ``dit`` (6) the same DDPM recipe with U-ViT and DiT backbones (same Trainer and sampler);
- ``flow``, ``reflow`` (3) rectified flow, 1-step FID and straightness before and after one reflow;
- ``consistency`` (4) consistency distillation of that DDPM (the preset's consistency fields):
                 1- and 2-step FID vs the teacher's 20 NFE.

FIDs are ``fid_fmnist``: Frechet distances in the features of a classifier trained here on
Fashion-MNIST (cached under $ANNEAL_DATA), **not** Inception FIDs. All evaluations of a model
use the same noise and balanced labels. Prints a table and writes ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from benchmarks.distill2d import DISTILL2D_PRESETS, run_distill2d  # noqa: E402
from core.files import atomic_write  # noqa: E402
from core.objectives import straightness  # noqa: E402
from vision.generation.config import image_config  # noqa: E402
from vision.generation.evaluate import evaluate_run  # noqa: E402
from vision.generation.models import load_run  # noqa: E402
from vision.generation.quality import feature_classifier, sample_metrics  # noqa: E402
from vision.generation.train import load_training_data, train  # noqa: E402

STAGES = ("distill2d", "ddpm", "cfg", "uvit", "dit", "flow", "reflow", "consistency", "ancestral")
CFG_SCALES = (1.0, 2.0, 4.0)
TU = "time_uniform"
#: The class-conditional U-Net DDPM of claims 1, 2 and 4 (the consistency teacher) trains longer
#: than the preset's other models: its probability-flow ODE is what claims 1 and 4 measure.
TEACHER = {"smoke": {}, "quick": dict(steps=6000, ema_decay=0.999), "paper": {}}
TEACHER_RUN = "ddpm_unet"


def _cached(path: Path, fn) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    result = fn()
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def _trained(out: Path, preset: str, seed: int, **fields) -> dict:
    """Train a run (resuming; a finished one returns at once); returns its train info."""
    return train(image_config(preset, **fields), out, seed=seed, progress=True)


def _teacher(root: Path, preset: str, seed: int) -> tuple[Path, dict]:
    """The class-conditional U-Net DDPM of claims 1, 2 and 4 (trained or resumed): run folder, info."""
    run = root / TEACHER_RUN
    return run, _trained(run, preset, seed, family="ddpm", model="unet", **TEACHER[preset])


def _eval(
    run: Path, seed: int, method: str, steps: int | None, cfg: float = 1.0, grid: str | None = None
) -> dict:
    return evaluate_run(run, method=method, steps=steps, cfg_scale=cfg, grid=grid, seed=seed, progress=True)


def _straightness(run: Path, seed: int, n: int = 256) -> float:
    def measure() -> dict:
        den, config = load_run(run)
        g = torch.Generator().manual_seed(seed + 3)
        noise = torch.randn(n, config.channels, config.image_size, config.image_size, generator=g)
        labels = torch.arange(n) % config.num_classes
        return {"straightness": float(straightness(den, noise, steps=50, y=labels).mean()), "n": n}

    return _cached(run / "straightness.json", measure)["straightness"]


def _real_reference(root: Path, preset: str, seed: int) -> dict:
    """The metrics of ``eval_samples`` real training images: the floor of a perfect generator."""

    def measure() -> dict:
        config = image_config(preset)
        x, y = load_training_data(config)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: config.eval_samples]
        return {"nfe": 0, "seconds": 0.0, **sample_metrics(config.dataset, x[idx], y[idx])}

    return _cached(root / "real_reference.json", measure)


def run_stage(stage: str, root: Path, preset: str, seed: int) -> dict:
    """Run one stage (cached); returns its result dict."""
    if stage == "distill2d":
        return _cached(
            root / "distill2d" / "result.json",
            lambda: run_distill2d(DISTILL2D_PRESETS[preset], root / "distill2d", seed=seed),
        )
    if stage == "ddpm":
        ddpm, info = _teacher(root, preset, seed)
        rows = {
            "real training images (floor)": _real_reference(root, preset, seed),
            "dpm_solver++(2M) 10": _eval(ddpm, seed, "dpm_solver++", 10),
            "dpm_solver++(2M) 20": _eval(ddpm, seed, "dpm_solver++", 20),
            "ddim 10": _eval(ddpm, seed, "ddim", 10),
            "ddim 20": _eval(ddpm, seed, "ddim", 20),
        }
        for k in (10, 20):
            rows[f"dpm_solver++(2M) {k}, time-uniform grid"] = _eval(ddpm, seed, "dpm_solver++", k, grid=TU)
            rows[f"ddim {k}, time-uniform grid"] = _eval(ddpm, seed, "ddim", k, grid=TU)
        # the diffusion model as a flow: Heun on its probability-flow ODE in t (velocity drift)
        rows["heun 10 (flow ODE)"] = _eval(ddpm, seed, "heun", 10)
        return {"train": info, "rows": rows}
    if stage == "ancestral":
        ddpm, _ = _teacher(root, preset, seed)
        return {"rows": {"ddpm ancestral (full chain)": _eval(ddpm, seed, "ddpm", None)}}
    if stage == "cfg":
        ddpm, _ = _teacher(root, preset, seed)
        return {
            "rows": {
                f"cfg {s:g}, dpm_solver++(2M) 20": _eval(ddpm, seed, "dpm_solver++", 20, s)
                for s in CFG_SCALES
            }
        }
    if stage in ("uvit", "dit"):
        run = root / f"ddpm_{stage}"
        info = _trained(run, preset, seed, family="ddpm", model=stage)
        return {"train": info, "rows": {f"{stage} dpm_solver++(2M) 20": _eval(run, seed, "dpm_solver++", 20)}}
    if stage in ("flow", "reflow"):
        run = root / f"{stage}_unet"
        extra = {"teacher": str(root / "flow_unet")} if stage == "reflow" else {}
        info = _trained(run, preset, seed, family=stage, model="unet", **extra)
        rows = {
            f"{stage} euler 1": _eval(run, seed, "euler", 1),
            f"{stage} dpm_solver++(2M) 20": _eval(run, seed, "dpm_solver++", 20),
        }
        return {"train": info, "rows": rows, "straightness": _straightness(run, seed)}
    if stage == "consistency":
        run = root / "consistency_unet"
        teacher = str(root / TEACHER_RUN)
        info = _trained(run, preset, seed, family="consistency", model="unet", teacher=teacher)
        rows = {f"consistency {k}-step": _eval(run, seed, "consistency", k) for k in (1, 2)}
        return {"train": info, "rows": rows}
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def claims(results: dict) -> dict:
    """The numbered claims, from whatever stages have results."""
    fid = "fid_fmnist"
    r = {k: v.get("rows", {}) for k, v in results.items()}
    out = {}
    if "ddpm" in r and "ancestral" in r:
        # per step grid: 2M at 20 NFE within 10% of the ancestral FID, and at 10 NFE at least
        # 10% lower ("clearly better") than DDIM at 10 NFE
        anc = r["ancestral"]["ddpm ancestral (full chain)"][fid]
        out["1"] = {"ancestral": anc}
        for grid, suffix in (("logsnr", ""), ("time_uniform", ", time-uniform grid")):
            keys = [f"dpm_solver++(2M) 20{suffix}", f"dpm_solver++(2M) 10{suffix}", f"ddim 10{suffix}"]
            if all(k in r["ddpm"] for k in keys):
                f20, f10, d10 = (r["ddpm"][k][fid] for k in keys)
                ok = f20 <= 1.1 * anc and f10 <= 0.9 * d10
                out["1"][grid] = {"holds": ok, "2M@20": f20, "2M@10": f10, "ddim@10": d10}
        out["1"]["holds"] = any(v["holds"] for v in out["1"].values() if isinstance(v, dict))
    if "cfg" in r:
        accs = {k: v["class_accuracy"] for k, v in r["cfg"].items()}
        base = accs["cfg 1, dpm_solver++(2M) 20"]
        out["2"] = {
            "holds": any(a > base for k, a in accs.items() if not k.startswith("cfg 1,")),
            "accuracy": accs,
        }
    if "flow" in r and "reflow" in r:
        before, after = r["flow"]["flow euler 1"][fid], r["reflow"]["reflow euler 1"][fid]
        s0, s1 = results["flow"]["straightness"], results["reflow"]["straightness"]
        out["3"] = {
            "holds": after <= before / 3 and s1 < s0,
            "1-step before": before,
            "1-step after": after,
            "straightness before": s0,
            "straightness after": s1,
        }
    if "consistency" in r and "ddpm" in r:
        teacher = r["ddpm"]["dpm_solver++(2M) 20"][fid]
        one, two = r["consistency"]["consistency 1-step"][fid], r["consistency"]["consistency 2-step"][fid]
        out["4"] = {
            "holds": one <= 2 * teacher and two < one,
            "teacher 20 NFE": teacher,
            "1-step": one,
            "2-step": two,
        }
    if "distill2d" in results:
        d, modes = results["distill2d"]["results"], results["distill2d"]["modes"]
        vsd_ok = (
            d["vsd"]["modes_covered"] == modes
            and d["vsd"]["sliced_wasserstein"] < d["sds"]["sliced_wasserstein"]
        )
        sds_collapsed = d["sds"]["modes_covered"] < modes or d["sds"]["spread_ratio"] < 0.5
        out["5"] = {"holds": vsd_ok and sds_collapsed, **{m: d[m] for m in ("sds", "vsd")}}
    if "uvit" in r and "dit" in r:
        out["6"] = {"holds": True, **{k: v[fid] for s in ("uvit", "dit") for k, v in r[s].items()}}
    return out


def plot_fid_vs_nfe(results: dict, path: Path) -> Path | None:
    """FID against NFE of the DDPM's solvers (both grids), with its ancestral chain, the real-data
    floor and its consistency-distilled student (1 and 2 steps) as reference points."""
    if "ddpm" not in results:
        return None
    import matplotlib.pyplot as plt

    from core.plotting import save_figure

    rows, fid = results["ddpm"]["rows"], "fid_fmnist"
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, label, style in (("dpm_solver++(2M)", "DPM-Solver++(2M)", "o-"), ("ddim", "DDIM", "s--")):
        for suffix, grid in (("", "logSNR"), (", time-uniform grid", "time-uniform")):
            keys = [f"{name} {k}{suffix}" for k in (10, 20)]
            pts = [(rows[k]["nfe"], rows[k][fid]) for k in keys if k in rows]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"{label}, {grid}", alpha=0.6 if suffix else 1)
    refs = [
        ("ancestral", "ddpm ancestral (full chain)", "k", "-", "ancestral DDPM, {nfe} NFE"),
        ("ddpm", "real training images (floor)", "0.6", ":", "real images (floor)"),
    ]
    for stage, key, color, ls, label in refs:
        row = results.get(stage, {}).get("rows", {}).get(key)
        if row:
            ax.axhline(row[fid], color=color, ls=ls, lw=1, label=label.format(nfe=row["nfe"]))
    for key, row in results.get("consistency", {}).get("rows", {}).items():
        ax.plot(row["nfe"], row[fid], "^", ms=8, label=f"{key} (distilled)")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("fid_fmnist (lower is better)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def table(results: dict) -> str:
    head = f"{'stage':<12} {'sampler':<34} {'NFE':>5} {'fid_fmnist':>10} {'prec':>5} {'rec':>5} {'acc':>5}"
    lines = [head + f" {'sec':>7}"]
    for stage, res in results.items():
        for name, row in res.get("rows", {}).items():
            lines.append(
                f"{stage:<12} {name:<34} {row['nfe']:>5} {row['fid_fmnist']:>10.3f} {row['precision']:>5.2f} "
                f"{row['recall']:>5.2f} {row['class_accuracy']:>5.2f} {row['seconds']:>7.1f}"
            )
    if "distill2d" in results:
        for m, row in results["distill2d"]["results"].items():
            sw, modes, ext = row["sliced_wasserstein"], row["modes_covered"], row["extent_ratio"]
            lines.append(f"distill2d    {m:<34} SW {sw:.3f}  modes {modes}  extent {ext:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--out", type=Path, help="output folder (default runs/core/bench_<preset>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (quick preset: 2 cores)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    root = args.out or Path("runs/core") / f"bench_{args.preset}"
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; expected a subset of {STAGES}")
    _, clf = feature_classifier("fashion_mnist")
    print(f"fid_fmnist classifier test accuracy {clf['test_accuracy']:.4f}")
    for stage in stages:
        t0 = time.perf_counter()
        result = run_stage(stage, root, args.preset, args.seed)
        with atomic_write(root / "stages" / f"{stage}.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        print(f"[{stage}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {p.stem: json.loads(p.read_text()) for p in sorted((root / "stages").glob("*.json"))}
    summary = {
        "preset": args.preset,
        "classifier_test_accuracy": clf["test_accuracy"],
        "claims": claims(results),
        "stages": results,
    }
    with atomic_write(root / "results.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(table(results))
    figure = plot_fid_vs_nfe(results, root / "fid_vs_nfe.png")
    if figure:
        print(f"wrote {figure}")
    for k, v in sorted(summary["claims"].items()):
        numbers = json.dumps({a: b for a, b in v.items() if a != "holds"})
        print(f"claim {k}: {'holds' if v['holds'] else 'does NOT hold'}  {numbers}")
    print(f"wrote {root / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
