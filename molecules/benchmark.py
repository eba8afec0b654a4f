"""The benchmark: conditional EDM vs EEGSDE on paired targets, judged by an independent evaluator and xTB.

Stages (each cached in the run folder, so an interrupted run resumes):

1. training: conditional EDM per property in one process, the guidance regressors and the
   evaluators in a second one (two cores);
2. speed: molecules per second of the dense EGNN at EDM's QM9 size vs the edge-list layout;
3. per property: the same (atom count, target, noise) draws sampled by conditional EDM and by
   EEGSDE at every scale; stability, RDKit validity / uniqueness / novelty, evaluator MAE,
   calibrated xTB MAE, the regressor's own MAE; the reference rows (#Atoms, lower bound, Naive).
   The headline ``mae_xtb_*`` keys compare the methods on the targets where both gave a molecule
   xTB could compute (``xtb_paired_molecules``); each method's row keeps its own ``mae_xtb``.

``metrics.json`` holds the headline keys (the first property's conditional-EDM samples for the
quality metrics, ``eegsde`` at the first scale) and a per-property section with every method.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.config import save_config
from core.data import atomic_write

from .chem import canonical_smiles, stability, validity_uniqueness_novelty
from .config import MoleculesConfig
from .data import PROPERTY_UNITS
from .egnn import EGNN
from .models import NodeCountDistribution
from .pipeline import decode, property_energy, sample_molecules
from .stages import Splits, load_splits, stage_edm, stage_evaluator, stage_regressor

__all__ = ["run_benchmark", "speed_comparison"]


def _train_in_parallel(cfg: MoleculesConfig, run: Path, preset: str, overrides: list[str]) -> None:
    """Train the missing models: EDM in one process, regressors + evaluators in another."""
    props = cfg.properties
    need_edm = any(not (run / f"edm_{p}" / "model" / "config.json").exists() for p in props)
    need_reg = any(
        not (run / f"{kind}_{p}" / "model" / "config.json").exists()
        for p in props
        for kind in ("regressor", "evaluator")
    )
    base = [sys.executable, "-m", "molecules", "train", "--preset", preset, "--out", str(run)]
    base += ["--seed", str(cfg.seed), "--device", cfg.device]
    for p in props:
        base += ["--property", p]
    for item in overrides:
        base += ["--set", item]
    jobs = []
    if need_edm:
        jobs.append(("edm", base + ["--stage", "edm"]))
    if need_reg:
        jobs.append(("guidance", base + ["--stage", "regressor", "--stage", "evaluator"]))
    procs = []
    for name, cmd in jobs:
        log = open(run / f"train_{name}.log", "a")  # noqa: SIM115 - closed below
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    for name, proc, log in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            raise RuntimeError(f"training stage {name!r} failed (exit {rc}); see {run / f'train_{name}.log'}")


def speed_comparison(
    hidden: int = 256, layers: int = 9, atoms: int = 29, batch: int = 32, repeats: int = 3, steps: int = 1000
) -> dict:
    """Forward throughput of the dense and the edge-list EGNN (same weights) at EDM's size.

    Returns molecules per second for one forward pass of each layout and, for the dense one, the
    molecules per second of a full ``steps``-step sampling run (``samples_per_second``).
    """
    torch.manual_seed(0)
    dense = EGNN(7, 6, hidden=hidden, layers=layers).eval()
    edges = EGNN(7, 6, hidden=hidden, layers=layers, layout="edges").eval()
    edges.load_state_dict(dense.state_dict())
    h = torch.randn(batch, atoms, 7)
    x = torch.randn(batch, atoms, 3)
    mask = torch.ones(batch, atoms, dtype=torch.bool)
    times = {"dense": [], "edges": []}
    with torch.no_grad():
        for net in (dense, edges):
            net(h, x, mask)  # warm-up
        for _ in range(repeats):
            for name, net in (("dense", dense), ("edges", edges)):
                t0 = time.perf_counter()
                net(h, x, mask)
                times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    return {
        "hidden": hidden,
        "layers": layers,
        "atoms": atoms,
        "batch": batch,
        "dense_forward_molecules_per_s": batch / best["dense"],
        "edges_forward_molecules_per_s": batch / best["edges"],
        "dense_over_edges": best["edges"] / best["dense"],
        "samples_per_second": batch / (best["dense"] * steps),
        "sampling_steps": steps,
    }


def _reference_rows(evaluator, splits: Splits, prop: str, x_test, m_test, seed: int) -> dict:
    """EDM's reference rows on the test set: lower bound, Naive (shuffled labels) and #Atoms."""
    truth = splits.test.property(prop).double()
    with torch.no_grad():
        pred = torch.cat(
            [
                evaluator.predict(x_test[i : i + 2000], None, m_test[i : i + 2000])
                for i in range(0, len(truth), 2000)
            ]
        ).double()
    g = torch.Generator().manual_seed(seed)
    shuffled = truth[torch.randperm(len(truth), generator=g)]
    gen_n = splits.generator.num_atoms
    gen_v = splits.generator.property(prop).double()
    by_n = {int(n): float(gen_v[gen_n == n].mean()) for n in gen_n.unique()}
    fallback = float(gen_v.mean())
    atoms_pred = torch.tensor(
        [by_n.get(int(n), fallback) for n in splits.test.num_atoms], dtype=torch.float64
    )
    return {
        "lower_bound": float(paired_abs_errors(pred, truth).mean()),
        "naive": float(paired_abs_errors(pred, shuffled).mean()),
        "atoms": float(paired_abs_errors(atoms_pred, truth).mean()),
    }


def _xtb_calibration(cfg: MoleculesConfig, splits: Splits, prop: str):
    from .pipeline import dataset_state
    from .xtb import XTB_PROPERTIES, LinearCalibration, xtb_batch

    if prop not in XTB_PROPERTIES or cfg.xtb_calibration == 0:
        return None, {}
    held = splits.test.subset(slice(0, cfg.xtb_calibration))
    x, m = dataset_state(held)
    mols = decode(x, m, cfg.remove_h)
    col = XTB_PROPERTIES.index(prop)
    values = xtb_batch(mols, implicit_hydrogens=cfg.remove_h)[:, col]
    truth = held.property(prop).double().numpy()
    cal = LinearCalibration.fit(values, truth)
    ok = np.isfinite(values)
    return cal, {
        "xtb_r": cal.r,
        "xtb_calibrated_mae_on_qm9": float(paired_abs_errors(cal(values[ok]), truth[ok]).mean()),
        "xtb_calibration_molecules": int(ok.sum()),
    }


def paired_abs_errors(pred, target) -> np.ndarray:
    """|pred - target| per molecule (M,) for 1-D predictions and targets of one length (a (M, 1)
    target would silently broadcast to all M x M pairs)."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.ndim != 1 or pred.shape != target.shape:
        raise ValueError(
            f"predictions and targets must be 1-D of one length, got shapes {pred.shape} and {target.shape}"
        )
    return np.abs(pred - target)


def _bootstrap_ratio(err_a: np.ndarray, err_b: np.ndarray, seed: int, n: int = 1000) -> float:
    """Standard deviation of mean(err_a) / mean(err_b) over paired bootstrap resamples."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(err_a), size=(n, len(err_a)))
    return float((err_a[idx].mean(1) / err_b[idx].mean(1)).std())


def _plot(run: Path, prop: str, targets: np.ndarray, preds: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.plotting import save_figure

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for name, p in preds.items():
        ax[0].hist(p - targets, bins=40, histtype="step", label=name, density=True)
        ax[1].scatter(targets, p, s=4, alpha=0.5, label=name)
    lo, hi = float(targets.min()), float(targets.max())
    ax[1].plot([lo, hi], [lo, hi], "k--", lw=1)
    ax[0].set_xlabel(f"evaluator {prop} - target ({PROPERTY_UNITS[prop]})")
    ax[0].set_ylabel("density")
    ax[1].set_xlabel(f"target {prop}")
    ax[1].set_ylabel(f"evaluator {prop}")
    ax[0].legend()
    fig.tight_layout()
    save_figure(fig, run / f"{prop}_guided_vs_unguided.png")
    plt.close(fig)


def _draw(run: Path, name: str, smiles: list[str | None]) -> None:
    """2-D depictions of the first valid samples."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols = [Chem.MolFromSmiles(s) for s in smiles if s][:16]
    mols = [m for m in mols if m is not None]
    if not mols:
        return
    img = Draw.MolsToGridImage(mols, molsPerRow=4, subImgSize=(200, 200))
    with atomic_write(run / f"samples_{name}.png") as tmp:
        img.save(str(tmp), format="PNG")


def _evaluate_property(
    cfg: MoleculesConfig, run: Path, prop: str, splits: Splits, reference: set[str]
) -> dict:
    from .io import write_sdf
    from .pipeline import dataset_state
    from .xtb import XTB_PROPERTIES, xtb_batch

    den = stage_edm(cfg, run, (prop,), splits)
    regressor = stage_regressor(cfg, run, prop, splits)
    evaluator = stage_evaluator(cfg, run, prop, splits)
    mean, std = splits.stats(prop)
    law = NodeCountDistribution(splits.generator.num_atoms, splits.generator.property(prop)[:, None])
    g = torch.Generator().manual_seed(cfg.seed + 123)
    n_atoms, targets = law.sample(cfg.num_targets, g)
    targets = targets.double()[:, 0]  # (M,): the one property column
    ctx = ((targets - mean) / std).float()[:, None]
    out: dict = {"unit": PROPERTY_UNITS[prop], "num_targets": cfg.num_targets}
    x_test, m_test = dataset_state(splits.test)
    out["reference"] = _reference_rows(evaluator, splits, prop, x_test, m_test, cfg.seed)
    cal, cal_info = _xtb_calibration(cfg, splits, prop)
    out.update(cal_info)
    methods = {"conditional": None, **{f"eegsde_s{s:g}": s for s in cfg.scales}}
    errors, preds, xtb_errors = {}, {}, {}
    device = next(den.parameters()).device
    # the sampling settings a cached sample set was drawn under
    key = f"steps={cfg.sample_steps} until={cfg.guide_until} n={cfg.num_targets} seed={cfg.seed}"
    for name, scale in methods.items():
        cache = run / f"samples_{prop}_{name}.pt"
        saved = torch.load(cache, weights_only=True) if cache.exists() else {}
        if saved.get("key") == key:
            xs, ms, seconds = saved["x"], saved["mask"], saved["seconds"]
        else:
            t0 = time.perf_counter()
            gen = torch.Generator(device=device).manual_seed(cfg.seed + 7)
            parts = []
            for i in range(0, cfg.num_targets, cfg.sample_batch):
                sl = slice(i, i + cfg.sample_batch)
                c = ctx[sl].to(device)
                energy = None
                if scale is not None:
                    tz = c.double()
                    energy = property_energy([regressor], tz, den.schedule)
                parts.append(
                    sample_molecules(
                        den,
                        n_atoms[sl],
                        c,
                        energy=energy,
                        scale=scale or 0.0,
                        guide_until=cfg.guide_until,
                        steps=cfg.sample_steps,
                        generator=gen,
                        n_max=int(n_atoms.max()),
                        progress=True,
                    )
                )
            xs = torch.cat([p[0] for p in parts]).cpu()
            ms = torch.cat([p[1] for p in parts]).cpu()
            seconds = time.perf_counter() - t0
            with atomic_write(cache) as tmp:
                torch.save({"x": xs, "mask": ms, "seconds": seconds, "key": key}, tmp)
        mols = decode(xs, ms, cfg.remove_h)
        write_sdf(run / f"samples_{prop}_{name}.sdf", mols)
        atom_st, mol_st = stability(mols, implicit_hydrogens=cfg.remove_h)
        vun = validity_uniqueness_novelty(mols, reference)
        with torch.no_grad():
            pred = evaluator.predict(xs, None, ms).double()
            own = regressor.predict(xs, torch.zeros(len(xs)), ms).double()
        err = paired_abs_errors(pred.numpy(), targets.numpy())
        errors[name], preds[name] = err, pred.numpy()
        row = {
            "atom_stability": atom_st,
            "molecule_stability": mol_st,
            "validity": vun["validity"],
            "uniqueness": vun["uniqueness"],
            "novelty": vun["novelty"],
            "mae": float(err.mean()),
            "mae_regressor": float(paired_abs_errors(own.numpy(), targets.numpy()).mean()),
            "seconds": seconds,
            "samples_per_second": cfg.num_targets / seconds,
        }
        if cal is not None:
            col = XTB_PROPERTIES.index(prop)
            raw = xtb_batch(mols, implicit_hydrogens=cfg.remove_h)[:, col]
            ok = np.isfinite(raw)
            xtb_errors[name] = paired_abs_errors(cal(raw), targets.numpy())  # NaN where xTB failed
            row["mae_xtb"] = float(xtb_errors[name][ok].mean()) if ok.any() else float("nan")
            row["xtb_molecules"] = int(ok.sum())
        out[name] = row
        _draw(run, f"{prop}_{name}", vun["smiles"])
    first = f"eegsde_s{cfg.scales[0]:g}"
    out["mae_conditional"] = out["conditional"]["mae"]
    out["mae_eegsde"] = out[first]["mae"]
    out["mae_ratio"] = out["mae_eegsde"] / out["mae_conditional"]
    out["mae_ratio_std"] = _bootstrap_ratio(errors[first], errors["conditional"], cfg.seed)
    if cal is not None:
        # like with like: the targets where both methods gave a molecule xTB could compute (each
        # method's own valid molecules differ, and which ones survive is itself an effect)
        both = np.isfinite(xtb_errors["conditional"]) & np.isfinite(xtb_errors[first])
        out["xtb_paired_molecules"] = int(both.sum())
        for key, name in (("mae_xtb_conditional", "conditional"), ("mae_xtb_eegsde", first)):
            out[key] = float(xtb_errors[name][both].mean()) if both.any() else float("nan")
    _plot(run, prop, targets.numpy(), preds)
    return out


def run_benchmark(
    cfg: MoleculesConfig, run: Path, preset: str = "quick", overrides: list[str] | None = None
) -> dict:
    """Train what is missing, sample, evaluate; writes ``<run>/metrics.json`` and returns it."""
    torch.set_num_threads(1)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.json")
    t0 = time.perf_counter()
    _train_in_parallel(cfg, run, preset, overrides or [])
    t_train = time.perf_counter() - t0
    splits = load_splits(cfg)
    reference = {s for s in (canonical_smiles(x) for x in splits.generator.smiles) if s}
    metrics: dict = {"preset": preset, "remove_h": cfg.remove_h, "train_seconds": t_train}
    if cfg.speed_repeats:
        metrics["speed"] = speed_comparison(batch=cfg.speed_batch, repeats=cfg.speed_repeats)
        metrics["samples_per_second"] = metrics["speed"]["samples_per_second"]
    for prop in cfg.properties:
        metrics[prop] = _evaluate_property(cfg, run, prop, splits, reference)
    first = metrics[cfg.properties[0]]
    for key in ("atom_stability", "molecule_stability", "validity", "uniqueness", "novelty"):
        metrics[key] = first["conditional"][key]
    for key in ("mae_conditional", "mae_eegsde", "mae_xtb_conditional", "mae_xtb_eegsde"):
        if key in first:
            metrics[key] = first[key]
    if "samples_per_second" not in metrics:
        metrics["samples_per_second"] = first["conditional"]["samples_per_second"]
    metrics["wall_seconds_this_call"] = time.perf_counter() - t0
    with atomic_write(run / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=float))
    return metrics
