"""A physics check with GFN2-xTB (``tblite``): orbital energies and dipoles of generated molecules.

Heavy-atom molecules get hydrogens from RDKit (``AddHs(addCoords=True)``) first. xTB's gap and
dipole correlate with QM9's DFT values (r ~ 0.89 and 0.99) but are offset, so each property is
mapped through a linear calibration fitted on held-out QM9 molecules processed the same way.
Set ``OMP_NUM_THREADS=1``: one single point takes ~10 ms.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .chem import build_rdkit

__all__ = ["XTB_PROPERTIES", "LinearCalibration", "add_hydrogens", "xtb_properties", "xtb_batch"]

XTB_PROPERTIES = ("homo", "lumo", "gap", "mu")
_ANGSTROM_TO_BOHR = 1.0 / 0.52917721092
_HARTREE_TO_MEV = 27211.386245988
_AU_TO_DEBYE = 2.541746473
_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def add_hydrogens(positions: np.ndarray, elements: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Atomic numbers (n',) and positions (n', 3) Å with hydrogens added; None if it does not sanitise."""
    from rdkit import Chem

    mol = build_rdkit(positions, elements)
    try:
        Chem.SanitizeMol(mol)
        mol = Chem.AddHs(mol, addCoords=True)
    except Exception:
        return None
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    pos = mol.GetConformer().GetPositions()
    return numbers, pos


def xtb_properties(numbers: np.ndarray, positions: np.ndarray) -> dict[str, float]:
    """GFN2-xTB single point: HOMO, LUMO, gap (meV) and dipole norm (D); positions in Å."""
    from tblite.interface import Calculator

    calc = Calculator(
        "GFN2-xTB", np.asarray(numbers), np.asarray(positions, dtype=np.float64) * _ANGSTROM_TO_BOHR
    )
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    energies = res.get("orbital-energies")
    occ = res.get("orbital-occupations")
    homo = float(energies[occ > 1.0].max())
    lumo = float(energies[occ < 1.0].min())
    dipole = float(np.linalg.norm(res.get("dipole")))
    return {
        "homo": homo * _HARTREE_TO_MEV,
        "lumo": lumo * _HARTREE_TO_MEV,
        "gap": (lumo - homo) * _HARTREE_TO_MEV,
        "mu": dipole * _AU_TO_DEBYE,
    }


def electric_field(values: Sequence[float]) -> ctypes.Array:
    """A field vector as the C ``double[3]`` that tblite's ``ElectricField`` needs (not a numpy array)."""
    if len(values) != 3:
        raise ValueError(f"an electric field has 3 components, got {len(values)}")
    return (ctypes.c_double * 3)(*map(float, values))


def xtb_batch(molecules: Sequence[tuple[np.ndarray, Sequence[str]]], implicit_hydrogens: bool) -> np.ndarray:
    """(M, 4) array of :data:`XTB_PROPERTIES`; NaN rows where a molecule fails to build or converge."""
    out = np.full((len(molecules), len(XTB_PROPERTIES)), np.nan)
    for i, (pos, els) in enumerate(molecules):
        if implicit_hydrogens:
            built = add_hydrogens(pos, els)
            if built is None:
                continue
            numbers, positions = built
        else:
            numbers, positions = np.array([_Z[e] for e in els]), np.asarray(pos)
        try:
            props = xtb_properties(numbers, positions)
        except Exception:
            continue
        out[i] = [props[k] for k in XTB_PROPERTIES]
    return out


@dataclass
class LinearCalibration:
    """dft ~ slope * xtb + intercept, per property, fitted by least squares."""

    slope: float
    intercept: float
    r: float

    @classmethod
    def fit(cls, xtb: np.ndarray, dft: np.ndarray) -> LinearCalibration:
        ok = np.isfinite(xtb) & np.isfinite(dft)
        if ok.sum() < 3:
            raise ValueError(f"need at least 3 finite pairs to calibrate, got {int(ok.sum())}")
        slope, intercept = np.polyfit(xtb[ok], dft[ok], 1)
        r = float(np.corrcoef(xtb[ok], dft[ok])[0, 1])
        return cls(float(slope), float(intercept), r)

    def __call__(self, xtb: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(xtb) + self.intercept
