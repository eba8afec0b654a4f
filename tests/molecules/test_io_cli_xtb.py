"""XYZ / SDF round trips and bad files, the CLI's errors, the xTB oracle, and the paper preset on CPU."""

import ctypes
import warnings

import numpy as np
import pytest
import torch

import core
from molecules.__main__ import main
from molecules.benchmark import speed_comparison
from molecules.commands import check_atoms, check_targets
from molecules.config import PRESETS, MoleculesConfig
from molecules.io import read_molecules, write_sdf, write_xyz
from molecules.models import EDMDynamics, NodeCountDistribution, PropertyRegressor
from molecules.pipeline import molecule_state, train_edm
from molecules.xtb import LinearCalibration, add_hydrogens, electric_field, xtb_properties

ETHANOL = (
    np.array([[-1.17, -0.25, 0.0], [0.23, 0.33, 0.0], [1.16, -0.73, 0.0]]),
    ["C", "C", "O"],
)


@pytest.mark.parametrize("suffix", [".xyz", ".sdf"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    (write_xyz if suffix == ".xyz" else write_sdf)(path, [ETHANOL, ETHANOL])
    mols = read_molecules(path)
    assert len(mols) == 2 and mols[0][1] == ["C", "C", "O"]
    assert np.allclose(mols[1][0], ETHANOL[0], atol=1e-4)


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\nC 0 0 0\nC 1.5 zero 0\nO 2 0 0\n")
    with pytest.raises(ValueError, match="line 4"):
        read_molecules(bad)
    short = tmp_path / "short.xyz"
    short.write_text("5\ncomment\nC 0 0 0\n")
    with pytest.raises(ValueError, match="runs past the end"):
        read_molecules(short)
    junk = tmp_path / "junk.sdf"
    junk.write_text("not a molecule\n$$$$\n")
    with pytest.raises(ValueError, match="does not parse"):
        read_molecules(junk)
    with pytest.raises(ValueError, match="expected .xyz or .sdf"):
        read_molecules(tmp_path / "m.pdb")


def test_unknown_element_and_size_and_target_checks():
    with pytest.raises(ValueError, match="unknown element"):
        from molecules.chem import stability

        stability([(np.zeros((2, 3)) + np.array([[0, 0, 0], [1.5, 0, 0]]), ["C", "Si"])])
    law = NodeCountDistribution(torch.tensor([5, 9]))
    with pytest.raises(ValueError, match="1 to 9"):
        check_atoms(12, law)

    class _Split:
        def property(self, name):
            return torch.tensor([1000.0, 9000.0])

    class _Splits:
        generator = _Split()

    with pytest.warns(UserWarning, match=r"outside QM9's range \[1000, 9000\]"):
        check_targets(("gap",), [20000.0], _Splits())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_targets(("gap",), [5000.0], _Splits())
    with pytest.raises(ValueError, match="unknown property"):
        MoleculesConfig(properties=("beta",))


def test_cli_reports_bad_input_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("1\n\nXx 0 0 0\n")
    assert main(["evaluate", str(bad)]) == 2
    assert "unknown element(s) ['Xx']" in capsys.readouterr().err
    assert main(["train", "--stage", "edm", "--property", "beta"]) == 2
    assert "unknown property 'beta'" in capsys.readouterr().err
    assert main(["benchmark", "--set", "edm_steps=many"]) == 2
    assert "cannot read 'many'" in capsys.readouterr().err


def test_xtb_gap_dipole_and_calibration():
    built = add_hydrogens(*ETHANOL)
    assert built is not None and sorted(built[0].tolist()).count(1) == 6
    props = xtb_properties(*built)
    assert 5000 < props["gap"] < 20000 and 0.5 < props["mu"] < 3.5
    assert abs(props["gap"] - (props["lumo"] - props["homo"])) < 1e-6
    cal = LinearCalibration.fit(np.array([1.0, 2.0, 3.0, np.nan]), np.array([3.0, 5.0, 7.0, 1.0]))
    assert abs(cal.slope - 2) < 1e-9 and abs(cal.intercept - 1) < 1e-9 and cal.r > 0.999
    field = electric_field([0.0, 0.0, 0.01])
    assert isinstance(field, ctypes.Array) and field[2] == 0.01


def test_paper_preset_builds_and_takes_steps_on_cpu(tmp_path):
    cfg = PRESETS["paper"]
    assert not cfg.remove_h and cfg.hidden == 256 and cfg.layers == 9 and cfg.num_steps == 1000
    net = EDMDynamics(5, cfg.hidden, cfg.layers, cfg.num_steps, context_dim=1)
    pos = torch.randn(2, 29, 3)
    types = torch.randint(0, 5, (2, 29))
    types[1, 20:] = -1
    x, mask = molecule_state(pos, types, 5, torch.tensor([1, 6, 7, 8, 9]))
    tc = core.TrainerConfig(
        steps=2, out_dir=tmp_path / "edm", progress=False, tensorboard=False, device="cpu"
    )
    train_edm(net, x, mask, torch.randn(2, 1), tc, batch_size=2)
    assert (tmp_path / "edm" / "checkpoints").exists()
    reg = PropertyRegressor(5, cfg.reg_hidden, cfg.reg_layers, cfg.num_steps)
    reg(x, torch.tensor([10.0, 900.0]), mask).sum().backward()


def test_speed_comparison_reports_both_layouts():
    out = speed_comparison(hidden=16, layers=2, atoms=5, batch=2, repeats=1, steps=10)
    assert out["dense_forward_molecules_per_s"] > 0 and out["edges_forward_molecules_per_s"] > 0
    assert out["samples_per_second"] == pytest.approx(out["dense_forward_molecules_per_s"] / 10)
