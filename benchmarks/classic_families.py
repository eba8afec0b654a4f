"""The classic generative families on one table: likelihood families (claims 1 and 2), the
diffusion families, and every family on the same Fashion-MNIST by the same measures (claim 6).

    python benchmarks/classic_families.py --preset quick [--device auto] [--seed 0] [--stages likelihood]

Each stage is a module of ``benchmarks/classic/`` exposing
``run(preset, out, device) -> {"claims", "metrics", "table_rows"}``; its result is cached in
``<out>/stages/<stage>.json`` and its models in ``<out>/<stage>/`` (a rerun resumes). Writes
``<out>/metrics.json`` (``claims``: a boolean ``holds`` with its numbers beside it, per claim;
``metrics``; the table), prints the table and writes the figures (PNG) in ``<out>``; ``<out>``
defaults to ``runs/benchmarks/classic-<preset>``. fid_fmnist is the Frechet distance in the
features of a classifier trained here on Fashion-MNIST, not an Inception FID.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent), str(_HERE)]

import torch  # noqa: E402

from core.data import atomic_write  # noqa: E402

#: stage name -> module of benchmarks/classic (adding a stage is one line here).
STAGES = {
    "likelihood": "classic.likelihood",
    "adversarial": "classic.adversarial",
    "diffusion": "classic.diffusion",
}
PRESETS = ("smoke", "quick", "paper")
#: The families claim 6 compares (a table row's ``family`` starts with one of these).
TABLE_FAMILIES = (
    "VAE", "IWAE K=5", "IWAE K=50", "GAN", "WGAN-GP", "CLC-GAN", "RealNVP", "VFlow", "NADE", "DDPM",
    "flow matching", "consistency",
)  # fmt: skip


def run_stage(stage: str, preset: str, root: Path, device: str, seed: int) -> dict:
    """Run one stage (cached in ``root/stages/<stage>.json`` while its preset and seed are
    unchanged); returns its result."""
    cache = root / "stages" / f"{stage}.json"
    module = importlib.import_module(STAGES[stage])
    key = f"{module.PRESETS[preset]!r} seed={seed}"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("preset_key") == key:
            return cached
    kwargs = {"seed": seed} if "seed" in inspect.signature(module.run).parameters else {}
    t0 = time.perf_counter()
    result = module.run(preset, root / stage, device, **kwargs)
    result["seconds"] = time.perf_counter() - t0
    result["preset_key"] = key
    with atomic_write(cache) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def claim6(rows: list[dict]) -> dict:
    """Claim 6 holds when every family has a row with fid_fmnist, precision, recall and sampling time."""
    need = ("fid_fmnist", "precision", "recall", "sample_seconds_per_image")
    present = {
        f: any(r["family"].startswith(f) and all(k in r for k in need) for r in rows) for f in TABLE_FAMILIES
    }
    fids = {r["model"]: r["fid_fmnist"] for r in rows if "fid_fmnist" in r}
    return {
        "holds": all(present.values()),
        "missing": [f for f, ok in present.items() if not ok],
        "fid_fmnist": fids,
    }


def table(rows: list[dict]) -> str:
    head = f"{'family':<24} {'model':<34} {'params':>8} {'NLL nats':>9} {'bits/dim':>8} {'fid_fmnist':>10}"
    lines = [head + f" {'prec':>5} {'rec':>5} {'ms/img':>8}"]

    def num(r: dict, k: str, fmt: str, w: int) -> str:
        return f"{r[k]:{w}{fmt}}" if k in r else " " * (w - 1) + "-"

    for r in rows:
        ms = {"ms": 1000 * r["sample_seconds_per_image"]} if "sample_seconds_per_image" in r else {}
        lines.append(
            f"{r['family']:<24} {r['model'][:34]:<34} {num(r, 'params', 'd', 8)} "
            f"{num(r, 'nll_nats', '.2f', 9)} "
            f"{num(r, 'bpd', '.3f', 8)} {num(r, 'fid_fmnist', '.3f', 10)} {num(r, 'precision', '.2f', 5)} "
            f"{num(r, 'recall', '.2f', 5)} {num(ms, 'ms', '.2f', 8)}"
        )
    return "\n".join(lines)


def figures(results: dict, rows: list[dict], root: Path) -> list[Path]:
    """Sample grids of every family, fid vs sampling time, IWAE bounds vs K, flows' bits/dim."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from core.plotting import save_figure

    written = []
    grids = [r for r in rows if Path(r.get("grid", "")).is_file()]
    if grids:
        cols = 4
        nrow = (len(grids) + cols - 1) // cols
        fig, axes = plt.subplots(nrow, cols, figsize=(3.2 * cols, 3.4 * nrow), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, r in zip(axes.flat, grids, strict=False):
            ax.imshow(Image.open(r["grid"]), cmap="gray")
            fid = f"\nfid_fmnist {r['fid_fmnist']:.2f}" if "fid_fmnist" in r else ""
            ax.set_title(f"{r['family']}{fid}", fontsize=8)
        written.append(save_figure(fig, root / "samples.png"))
    pts = [r for r in rows if "fid_fmnist" in r and "sample_seconds_per_image" in r]
    if pts:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for r in pts:
            ax.scatter(1000 * r["sample_seconds_per_image"], r["fid_fmnist"])
            ax.annotate(r["family"], (1000 * r["sample_seconds_per_image"], r["fid_fmnist"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("sampling time per image (ms)")
        ax.set_ylabel("fid_fmnist (lower is better)")
        written.append(save_figure(fig, root / "fid_vs_sampling_time.png"))
    c1 = results.get("likelihood", {}).get("claims", {}).get("1")
    if c1:
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
        for m, bounds in c1["nll_bound_by_k"].items():
            ks = sorted(bounds, key=int)
            ax.plot([int(k) for k in ks], [bounds[k] for k in ks], "o-", label=f"trained as {m}")
        ax.axhline(c1["nll_nats"]["nade"], color="k", ls=":", label="NADE (exact)")
        ax.set_xscale("log")
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel("-L_K on test images (nats)")
        ax.legend(fontsize=8)
        written.append(save_figure(fig, root / "iwae_bounds.png"))
    c2 = results.get("likelihood", {}).get("claims", {}).get("2")
    if c2:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        names = list(c2["bpd"])
        ax.bar(names, [c2["bpd"][n] for n in names], yerr=[2 * c2["bpd_se"][n] for n in names])
        ax.set_ylabel("bits/dim (test, lower is better)")
        ax.set_title(
            "matched parameter counts: " + ", ".join(f"{n} {c2['params'][n]}" for n in names), fontsize=7
        )
        written.append(save_figure(fig, root / "flows_bpd.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=PRESETS)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {list(STAGES)}"
    )
    parser.add_argument("--out", type=Path, help="output folder (default runs/benchmarks/classic-<preset>)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; expected a subset of {list(STAGES)}")
    torch.set_num_threads(args.threads)
    root = args.out or Path("runs/benchmarks") / f"classic-{args.preset}"
    for stage in stages:
        t0 = time.perf_counter()
        run_stage(stage, args.preset, root, args.device, args.seed)
        print(f"[{stage}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {p.stem: json.loads(p.read_text()) for p in sorted((root / "stages").glob("*.json"))}
    results = {k: results[k] for k in STAGES if k in results}
    rows = [r for res in results.values() for r in res["table_rows"]]
    claims = {k: v for res in results.values() for k, v in res["claims"].items()}
    claims["6"] = claim6(rows)
    summary = {
        "preset": args.preset,
        "seed": args.seed,
        "claims": dict(sorted(claims.items())),
        "metrics": {k: v for res in results.values() for k, v in res["metrics"].items()},
        "table": rows,
        "stage_seconds": {k: res.get("seconds") for k, res in results.items()},
    }
    with atomic_write(root / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(table(rows))
    for path in figures(results, rows, root):
        print(f"wrote {path}")
    for k, v in summary["claims"].items():
        numbers = json.dumps({a: b for a, b in v.items() if a != "holds"})
        print(f"claim {k}: {'holds' if v['holds'] else 'does NOT hold'}  {numbers}")
    print(f"wrote {root / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
