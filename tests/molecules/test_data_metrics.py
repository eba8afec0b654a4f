"""QM9 from qm9pack in EDM's units and splits, and the bond-table metrics on the real data."""

import numpy as np
import pytest
import torch

from molecules.chem import bond_order, stability, validity_uniqueness_novelty
from molecules.data import PROPERTIES, SPLIT_SIZES, elements, load_qm9, property_index


@pytest.fixture(scope="module")
def qm9_h():
    return load_qm9(remove_h=False)


def test_counts_units_and_splits(qm9_h):
    assert len(qm9_h) == 130_831 and qm9_h.max_atoms == 29
    assert load_qm9(remove_h=True).max_atoms == 9
    # Methane (gdb 1): 5 atoms, gap 0.5048 Ha = 13736 meV, Cv 6.469 cal/mol K.
    assert qm9_h.num_atoms[0] == 5 and qm9_h.smiles[0] == "C"
    assert abs(float(qm9_h.property("gap")[0]) - 0.5048 * 27211.386) < 0.5
    assert abs(float(qm9_h.property("Cv")[0]) - 6.469) < 1e-4
    sizes = {
        k: len(qm9_h.split(k)) for k in ("train", "valid", "test", "train_first_half", "train_second_half")
    }
    assert sizes == {**SPLIT_SIZES, "train_first_half": 50_000, "train_second_half": 50_000}
    a = set(qm9_h.split("train_first_half").index.tolist())
    b = set(qm9_h.split("train_second_half").index.tolist())
    assert not a & b


def test_real_qm9_scores_near_edm_data_row(qm9_h):
    # EDM's table: QM9 itself is 99.0% atom-stable, 95.2% molecule-stable, 97.7% valid.
    test = qm9_h.split("test")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:800]
    els = elements(False)
    mols = []
    for i in idx.tolist():
        n = int(test.num_atoms[i])
        mols.append((test.positions[i, :n].numpy(), [els[k] for k in test.types[i, :n].tolist()]))
    atom, mol = stability(mols)
    valid = validity_uniqueness_novelty(mols)["validity"]
    assert abs(atom - 0.990) < 0.01 and abs(mol - 0.952) < 0.025 and abs(valid - 0.977) < 0.02


def test_bond_orders_and_bad_inputs():
    assert (
        bond_order("C", "C", 1.54) == 1
        and bond_order("C", "C", 1.34) == 2
        and bond_order("C", "C", 1.20) == 3
    )
    assert bond_order("C", "O", 2.0) == 0
    with pytest.raises(ValueError, match="unknown element pair"):
        bond_order("C", "Cl", 1.7)
    with pytest.raises(ValueError, match="unknown property 'beta'"):
        property_index("beta")
    assert PROPERTIES == ("mu", "alpha", "homo", "lumo", "gap", "Cv")
    ethane = (np.array([[0.0, 0, 0], [1.53, 0, 0]]), ["C", "C"])
    r = validity_uniqueness_novelty([ethane, ethane], reference_smiles={"CC"})
    assert r["validity"] == 1.0 and r["uniqueness"] == 0.5 and r["novelty"] == 0.0
