"""QM9 as shipped by the PyPI package ``qm9pack``, in EDM's units and splits.

The package's CSVs hold 130,831 molecules (QM9 without the 3,054 uncharacterised ones) with
coordinates in Å, SMILES and the DFT properties. We parse them directly (``import qm9pack``
needs ``pkg_resources``), convert the orbital energies from Hartree to meV, and cache padded
tensors under ``$ANNEAL_DATA/qm9/``. Splits follow EDM: a seed-0 permutation into
100,000 / 17,748 / 13,083 (train / valid / test), and the training set cut in two halves of
50,000: the second half trains the generator and its guidance regressors, the first half the
independent evaluation classifier.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.data import DatasetNotFoundError, atomic_write, data_root

__all__ = [
    "HARTREE_TO_MEV",
    "PROPERTIES",
    "PROPERTY_UNITS",
    "QM9",
    "ELEMENTS_WITH_H",
    "ELEMENTS_NO_H",
    "SPLIT_SIZES",
    "atomic_numbers",
    "elements",
    "load_qm9",
    "qm9_csv_dir",
]

HARTREE_TO_MEV = 27211.386245988
PROPERTIES = ("mu", "alpha", "homo", "lumo", "gap", "Cv")
PROPERTY_UNITS = {"mu": "D", "alpha": "bohr^3", "homo": "meV", "lumo": "meV", "gap": "meV", "Cv": "cal/mol K"}
ELEMENTS_WITH_H = ("H", "C", "N", "O", "F")
ELEMENTS_NO_H = ("C", "N", "O", "F")
ATOMIC_NUMBER = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
_COLUMNS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "Cv": "Heatcapacity_Cv_cal_mol_K",
}
_CACHE_VERSION = 1


def elements(remove_h: bool) -> tuple[str, ...]:
    """The atom-type vocabulary (one-hot order): H C N O F, or C N O F without hydrogens."""
    return ELEMENTS_NO_H if remove_h else ELEMENTS_WITH_H


def atomic_numbers(remove_h: bool) -> Tensor:
    """Atomic numbers of the vocabulary, shape (K,)."""
    return torch.tensor([ATOMIC_NUMBER[e] for e in elements(remove_h)], dtype=torch.long)


def qm9_csv_dir() -> Path:
    """The folder of ``qm9pack``'s CSVs (located without importing the package)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "QM9 (PyPI package qm9pack)", "qm9pack", "install it with `pip install qm9pack`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "qm9_part1.csv").exists():
        raise DatasetNotFoundError("QM9 CSVs", folder, "reinstall qm9pack")
    return folder


@dataclass
class QM9:
    """Padded QM9 molecules.

    Attributes:
        positions: (M, N_max, 3) float32 coordinates in Å, zero on padding.
        types: (M, N_max) int64 indices into :func:`elements`, -1 on padding.
        num_atoms: (M,) int64.
        properties: (M, 6) float32 in :data:`PROPERTIES` order and :data:`PROPERTY_UNITS`.
        smiles: list of M SMILES strings (QM9's relaxed-geometry SMILES).
        index: (M,) int64 QM9 molecule index (gdb number).
        remove_h: whether hydrogens were removed.
    """

    positions: Tensor
    types: Tensor
    num_atoms: Tensor
    properties: Tensor
    smiles: list[str]
    index: Tensor
    remove_h: bool

    def __len__(self) -> int:
        return int(self.num_atoms.shape[0])

    @property
    def max_atoms(self) -> int:
        return int(self.positions.shape[1])

    def subset(self, idx: Tensor | np.ndarray | slice) -> QM9:
        """The molecules at ``idx`` (trimmed to their own largest molecule)."""
        if isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        idx = torch.as_tensor(idx, dtype=torch.long)
        n = self.num_atoms[idx]
        width = int(n.max()) if len(n) else 0
        return QM9(
            self.positions[idx, :width],
            self.types[idx, :width],
            n,
            self.properties[idx],
            [self.smiles[i] for i in idx.tolist()],
            self.index[idx],
            self.remove_h,
        )

    def property(self, name: str) -> Tensor:
        """One property column, shape (M,)."""
        return self.properties[:, property_index(name)]

    def split(self, name: str) -> QM9:
        """``train | valid | test | train_first_half | train_second_half``."""
        return self.subset(split_indices(len(self))[name])


def property_index(name: str) -> int:
    """Column of a property; a clear error for a name not among the six."""
    if name not in PROPERTIES:
        raise ValueError(f"unknown property {name!r}; expected one of {PROPERTIES}")
    return PROPERTIES.index(name)


def split_indices(m: int) -> dict[str, Tensor]:
    """EDM's splits: a seed-0 permutation into train / valid / test and the training halves."""
    if m != sum(SPLIT_SIZES.values()):
        raise ValueError(f"QM9 must hold {sum(SPLIT_SIZES.values())} molecules for EDM's split, got {m}")
    perm = torch.from_numpy(np.random.RandomState(0).permutation(m))
    n_tr, n_va = SPLIT_SIZES["train"], SPLIT_SIZES["valid"]
    train = perm[:n_tr]
    return {
        "train": train,
        "valid": perm[n_tr : n_tr + n_va],
        "test": perm[n_tr + n_va :],
        "train_first_half": train[: n_tr // 2],
        "train_second_half": train[n_tr // 2 :],
    }


def _parse_csvs(folder: Path) -> dict:
    import pandas as pd

    cols = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang", *_COLUMNS.values()]
    frames = [pd.read_csv(folder / f"qm9_part{k}.csv", usecols=cols) for k in (1, 2, 3)]
    df = pd.concat(frames, ignore_index=True).sort_values("Index").reset_index(drop=True)
    m = len(df)
    n_max = int(df["N_atoms"].max())
    pos = np.zeros((m, n_max, 3), np.float32)
    z = np.zeros((m, n_max), np.int64)
    code = {e: ATOMIC_NUMBER[e] for e in ELEMENTS_WITH_H}
    for i, (els, xyz) in enumerate(zip(df["Elements"], df["XYZ_Ang"], strict=True)):
        names = json.loads(els.replace("'", '"'))
        coords = np.array(xyz.replace("[", "").replace("]", "").split(","), np.float32).reshape(-1, 3)
        pos[i, : len(names)] = coords
        z[i, : len(names)] = [code[a] for a in names]
    props = np.stack([df[c].to_numpy(np.float64) for c in _COLUMNS.values()], 1)
    for k in ("homo", "lumo", "gap"):
        props[:, PROPERTIES.index(k)] *= HARTREE_TO_MEV
    return {
        "positions": torch.from_numpy(pos),
        "charges": torch.from_numpy(z),
        "properties": torch.from_numpy(props.astype(np.float32)),
        "smiles": df["SMILES"].astype(str).tolist(),
        "index": torch.from_numpy(df["Index"].to_numpy(np.int64).copy()),
    }


def _from_raw(raw: dict, remove_h: bool) -> QM9:
    z = raw["charges"]
    pos = raw["positions"]
    keep = z > (1 if remove_h else 0)
    n = keep.sum(1)
    n_max = int(n.max())
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n_max]
    z = torch.gather(z, 1, order)
    pos = torch.gather(pos, 1, order[..., None].expand(-1, -1, 3))
    valid = torch.arange(n_max)[None] < n[:, None]
    lookup = torch.full((10,), -1, dtype=torch.long)
    for k, a in enumerate(atomic_numbers(remove_h).tolist()):
        lookup[a] = k
    types = torch.where(valid, lookup[z], torch.full_like(z, -1))
    pos = pos * valid[..., None]
    return QM9(pos.contiguous(), types, n, raw["properties"], raw["smiles"], raw["index"], remove_h)


def load_qm9(remove_h: bool = True, root: str | Path | None = None) -> QM9:
    """All 130,831 QM9 molecules, parsed once from ``qm9pack`` and cached under ``$ANNEAL_DATA``."""
    root = Path(root) if root is not None else data_root() / "qm9"
    cache = root / f"qm9_v{_CACHE_VERSION}.pt"
    if cache.exists():
        raw = torch.load(cache, weights_only=True)
    else:
        raw = _parse_csvs(qm9_csv_dir())
        with atomic_write(cache) as tmp:
            torch.save(raw, tmp)
    return _from_raw(raw, remove_h)
