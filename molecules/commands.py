"""The ``sample``, ``guide`` and ``evaluate`` commands (trained models come from the run folder)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from core.data import atomic_write

from .chem import stability, validity_uniqueness_novelty
from .config import MoleculesConfig
from .io import read_molecules, write_sdf, write_xyz
from .models import NodeCountDistribution
from .pipeline import decode, property_energy, sample_molecules
from .stages import Splits, load_splits

__all__ = ["check_atoms", "check_targets", "evaluate_command", "guide_command", "sample_command"]


def check_targets(props: tuple[str, ...], targets: list[float], splits: Splits) -> None:
    """One target per property; warn (naming the range) when a target lies outside the data's range."""
    if len(targets) != len(props):
        raise ValueError(
            f"got {len(targets)} targets for properties {list(props)}; give one --target per property"
        )
    for p, v in zip(props, targets, strict=True):
        values = splits.generator.property(p)
        lo, hi = float(values.min()), float(values.max())
        if not lo <= v <= hi:
            warnings.warn(f"target {p} = {v} lies outside QM9's range [{lo:.4g}, {hi:.4g}]", stacklevel=2)


def check_atoms(n: int, law: NodeCountDistribution) -> None:
    """A requested atom count must be one the model was trained on."""
    if not 1 <= n <= law.max_atoms:
        raise ValueError(f"cannot sample molecules of {n} atoms: this model handles 1 to {law.max_atoms}")


def _draw(cfg: MoleculesConfig, args, splits: Splits):
    props = cfg.properties
    law = NodeCountDistribution(
        splits.generator.num_atoms, torch.stack([splits.generator.property(p) for p in props], 1)
    )
    g = torch.Generator().manual_seed(cfg.seed)
    n, values = law.sample(args.num, g)
    if args.atoms is not None:
        check_atoms(args.atoms, law)
        n = torch.full((args.num,), args.atoms)
    if args.target:
        check_targets(props, args.target, splits)
        values = torch.tensor(args.target, dtype=torch.float32).expand(args.num, len(props))
    stats = [splits.stats(p) for p in props]
    mean = torch.tensor([m for m, _ in stats])
    std = torch.tensor([s for _, s in stats])
    return n, values, ((values - mean) / std).float(), law


def _load(cfg: MoleculesConfig, run: Path, splits: Splits):
    from core.checkpoint import from_pretrained

    from .models import EDMDynamics, polynomial_schedule

    name = "+".join(cfg.properties)
    folder = run / f"edm_{name}" / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"no trained EDM for {name!r} in {run}; run `python -m molecules train --stage edm"
            + "".join(f" --property {p}" for p in cfg.properties)
            + (" --joint" if len(cfg.properties) > 1 else "")
            + "` first"
        )
    import core

    return core.Denoiser(from_pretrained(EDMDynamics, folder), polynomial_schedule(cfg.num_steps)).eval()


def _finish(cfg: MoleculesConfig, run: Path, tag: str, x, mask, values) -> None:
    mols = decode(x, mask, cfg.remove_h)
    write_sdf(run / f"{tag}.sdf", mols)
    write_xyz(run / f"{tag}.xyz", mols)
    vun = validity_uniqueness_novelty(mols)
    report = {"molecules": len(mols), "validity": vun["validity"], "uniqueness": vun["uniqueness"]}
    report["targets"] = values.tolist()
    report["smiles"] = vun["smiles"]
    with atomic_write(run / f"{tag}.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("smiles", "targets")}, indent=2))
    print(f"wrote {run / (tag + '.sdf')} and .xyz")


def sample_command(cfg: MoleculesConfig, run: Path, args) -> None:
    """Conditional EDM samples (targets drawn from QM9 jointly with the atom count unless given)."""
    splits = load_splits(cfg)
    den = _load(cfg, run, splits)
    n, values, ctx, _ = _draw(cfg, args, splits)
    g = torch.Generator().manual_seed(cfg.seed)
    x, mask = sample_molecules(den, n, ctx, steps=cfg.sample_steps, generator=g, progress=True)
    _finish(cfg, run, "sample", x, mask, values)


def guide_command(cfg: MoleculesConfig, run: Path, args) -> None:
    """EEGSDE: conditional EDM plus the energy of every property's regressor (several at once)."""
    from core.checkpoint import from_pretrained

    from .models import PropertyRegressor

    splits = load_splits(cfg)
    den = _load(cfg, run, splits)
    regs = []
    for p in cfg.properties:
        folder = run / f"regressor_{p}" / "model"
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"no regressor for {p!r} in {run}; "
                f"run `python -m molecules train --stage regressor --property {p}`"
            )
        regs.append(from_pretrained(PropertyRegressor, folder).eval())
    n, values, ctx, _ = _draw(cfg, args, splits)
    g = torch.Generator().manual_seed(cfg.seed)
    energy = property_energy(regs, ctx.double(), den.schedule)
    x, mask = sample_molecules(
        den,
        n,
        ctx,
        energy=energy,
        scale=args.scale,
        guide_until=cfg.guide_until,
        steps=cfg.sample_steps,
        generator=g,
        progress=True,
    )
    _finish(cfg, run, f"guide_s{args.scale:g}", x, mask, values)


def evaluate_command(cfg: MoleculesConfig, args) -> dict:
    """Stability and RDKit validity / uniqueness of the molecules in an XYZ or SDF file."""
    mols = read_molecules(args.file)
    implicit = not any("H" in els for _, els in mols)
    atom_st, mol_st = stability(mols, implicit_hydrogens=implicit)
    vun = validity_uniqueness_novelty(mols)
    return {
        "molecules": len(mols),
        "implicit_hydrogens": implicit,
        "atom_stability": atom_st,
        "molecule_stability": mol_st,
        "validity": vun["validity"],
        "uniqueness": vun["uniqueness"],
    }
