"""Bond orders from bond lengths, stability, RDKit validity, uniqueness and novelty (EDM's metrics).

A molecule here is ``(positions, elements)``: positions (n, 3) in Å and a list of n element
symbols. Bond orders follow EDM: a pair is bonded with order 1, 2 or 3 when its distance is below
the typical single / double / triple bond length plus a margin of 10 / 5 / 3 pm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "VALENCE",
    "bond_orders",
    "build_rdkit",
    "canonical_smiles",
    "stability",
    "validity_uniqueness_novelty",
]

# Typical bond lengths in pm (single / double / triple) between H, C, N, O, F.
_SINGLE = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142,
    ("F", "F"): 142,
}  # fmt: skip
_DOUBLE = {
    ("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120,
    ("N", "N"): 125, ("N", "O"): 121,
    ("O", "O"): 121,
}  # fmt: skip
_TRIPLE = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
_MARGINS = (10, 5, 3)
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}


def _lookup(table: dict, a: str, b: str) -> float | None:
    return table.get((a, b), table.get((b, a)))


def bond_order(a: str, b: str, distance: float) -> int:
    """EDM's bond order (0-3) of elements a, b at ``distance`` Å."""
    d = 100.0 * distance
    single = _lookup(_SINGLE, a, b)
    if single is None:
        raise ValueError(f"unknown element pair ({a!r}, {b!r}); expected elements among {sorted(VALENCE)}")
    if d >= single + _MARGINS[0]:
        return 0
    double = _lookup(_DOUBLE, a, b)
    if double is None or d >= double + _MARGINS[1]:
        return 1
    triple = _lookup(_TRIPLE, a, b)
    if triple is None or d >= triple + _MARGINS[2]:
        return 2
    return 3


def bond_orders(positions: np.ndarray, elements: Sequence[str]) -> np.ndarray:
    """Symmetric (n, n) int matrix of bond orders; positions (n, 3) in Å."""
    unknown = sorted(set(elements) - set(VALENCE))
    if unknown:
        raise ValueError(f"unknown element(s) {unknown}; expected elements among {sorted(VALENCE)}")
    pos = np.asarray(positions, dtype=np.float64)
    n = len(elements)
    if pos.shape != (n, 3):
        raise ValueError(f"positions must have shape ({n}, 3), got {pos.shape}")
    dist = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    orders = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            orders[i, j] = orders[j, i] = bond_order(elements[i], elements[j], dist[i, j])
    return orders


def stability(
    molecules: Iterable[tuple[np.ndarray, Sequence[str]]], implicit_hydrogens: bool = False
) -> tuple[float, float]:
    """(atom stability, molecule stability) as fractions.

    An atom is stable when its bond-order sum equals its valence (H1 C4 N3 O2 F1); a molecule when
    all its atoms are. With ``implicit_hydrogens`` (heavy-atom molecules) an atom is stable when
    the sum does not exceed its valence (hydrogens fill the rest) and is at least 1 in a molecule
    of several atoms.
    """
    stable_atoms = total_atoms = stable_mols = total_mols = 0
    for positions, elements in molecules:
        orders = bond_orders(positions, elements)
        sums = orders.sum(1)
        val = np.array([VALENCE[e] for e in elements])
        if implicit_hydrogens:
            ok = (sums <= val) & ((sums >= 1) | (len(elements) == 1))
        else:
            ok = sums == val
        stable_atoms += int(ok.sum())
        total_atoms += len(elements)
        stable_mols += int(ok.all())
        total_mols += 1
    if total_mols == 0:
        raise ValueError("stability needs at least one molecule")
    return stable_atoms / total_atoms, stable_mols / total_mols


def build_rdkit(positions: np.ndarray, elements: Sequence[str]):
    """An RDKit molecule with EDM's table bonds and a 3-D conformer (not sanitised)."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    orders = bond_orders(positions, elements)
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    for e in elements:
        mol.AddAtom(Chem.Atom(e))
    n = len(elements)
    for i in range(n):
        for j in range(i + 1, n):
            if orders[i, j]:
                mol.AddBond(i, j, kinds[int(orders[i, j])])
    conf = Chem.Conformer(n)
    for i, p in enumerate(np.asarray(positions, dtype=np.float64)):
        conf.SetAtomPosition(i, Point3D(*map(float, p)))
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


def largest_fragment_smiles(positions: np.ndarray, elements: Sequence[str]) -> str | None:
    """Canonical SMILES of the largest fragment if the molecule sanitises, else None."""
    from rdkit import Chem

    mol = build_rdkit(positions, elements)
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        return None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    smiles = Chem.MolToSmiles(largest)
    return smiles or None


def canonical_smiles(smiles: str, remove_h: bool = True) -> str | None:
    """RDKit canonical SMILES (hydrogens implicit), None if it does not parse."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    if remove_h:
        mol = Chem.RemoveHs(mol)
    return Chem.MolToSmiles(mol)


def validity_uniqueness_novelty(
    molecules: Sequence[tuple[np.ndarray, Sequence[str]]], reference_smiles: set[str] | None = None
) -> dict[str, float]:
    """EDM's validity (largest fragment sanitises), uniqueness (of valid) and novelty (of unique).

    Returns ``validity``, ``uniqueness``, ``novelty`` (NaN without a reference set) and
    ``smiles``: the canonical SMILES of each molecule (None where invalid).
    """
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    if not molecules:
        raise ValueError("validity needs at least one molecule")
    smiles = [largest_fragment_smiles(p, e) for p, e in molecules]
    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    out = {
        "validity": len(valid) / len(molecules),
        "uniqueness": len(unique) / len(valid) if valid else 0.0,
        "novelty": float("nan"),
        "smiles": smiles,
    }
    if reference_smiles is not None and unique:
        out["novelty"] = len(unique - reference_smiles) / len(unique)
    return out
