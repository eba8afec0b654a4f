"""Read and write molecules as XYZ and SDF.

A molecule is ``(positions, elements)``: positions (n, 3) float in Å and n element symbols.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.data import atomic_write

__all__ = ["read_molecules", "read_sdf", "read_xyz", "write_sdf", "write_xyz"]

Molecule = tuple[np.ndarray, list[str]]


def write_xyz(path: str | Path, molecules: Sequence[Molecule]) -> None:
    """Concatenated XYZ records (atom count, comment line, ``El x y z`` lines), atomically."""
    lines = []
    for i, (pos, els) in enumerate(molecules):
        lines += [str(len(els)), f"molecule {i}"]
        lines += [f"{e} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for e, p in zip(els, np.asarray(pos), strict=True)]
    with atomic_write(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def read_xyz(path: str | Path) -> list[Molecule]:
    """All records of an XYZ file; a malformed record raises ValueError naming the line."""
    lines = Path(path).read_text().splitlines()
    out: list[Molecule] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            raise ValueError(f"{path}: line {i + 1}: expected an atom count, got {lines[i]!r}") from None
        if i + 2 + n > len(lines):
            raise ValueError(f"{path}: line {i + 1}: record of {n} atoms runs past the end of the file")
        els, pos = [], []
        for j in range(i + 2, i + 2 + n):
            parts = lines[j].split()
            try:
                els.append(parts[0])
                pos.append([float(v) for v in parts[1:4]])
            except (IndexError, ValueError):
                raise ValueError(
                    f"{path}: line {j + 1}: expected 'Element x y z', got {lines[j]!r}"
                ) from None
            if len(pos[-1]) != 3:
                raise ValueError(f"{path}: line {j + 1}: expected 'Element x y z', got {lines[j]!r}")
        out.append((np.array(pos, dtype=np.float64).reshape(n, 3), els))
        i += 2 + n
    if not out:
        raise ValueError(f"{path}: no molecules found")
    return out


def write_sdf(path: str | Path, molecules: Sequence[Molecule]) -> None:
    """One SDF record per molecule with EDM's table bonds (RDKit's writer), atomically."""
    from rdkit import Chem

    from .chem import build_rdkit

    with atomic_write(path) as tmp:
        writer = Chem.SDWriter(str(tmp))
        writer.SetKekulize(False)
        for pos, els in molecules:
            writer.write(build_rdkit(pos, els))
        writer.close()


def read_sdf(path: str | Path) -> list[Molecule]:
    """All records of an SDF file (hydrogens kept as written); a record that does not parse raises."""
    from rdkit import Chem

    if not Path(path).exists():
        raise FileNotFoundError(f"no such SDF file: {path}")
    out: list[Molecule] = []
    supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
    for i, mol in enumerate(supplier):
        if mol is None or mol.GetNumConformers() == 0:
            raise ValueError(f"{path}: record {i} does not parse as a 3-D molecule")
        pos = mol.GetConformer().GetPositions()
        out.append((pos, [a.GetSymbol() for a in mol.GetAtoms()]))
    if not out:
        raise ValueError(f"{path}: no molecules found")
    return out


def read_molecules(path: str | Path) -> list[Molecule]:
    """Read ``.xyz`` or ``.sdf`` by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".xyz":
        return read_xyz(path)
    if suffix in (".sdf", ".mol"):
        return read_sdf(path)
    raise ValueError(f"unknown molecule file type {suffix!r} for {path}; expected .xyz or .sdf")
