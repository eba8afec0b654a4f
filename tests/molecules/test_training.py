"""Real QM9: a stage returns trained weights (its EMA); decoding noised molecules keeps their validity."""

import copy
from dataclasses import replace

import pytest
import torch

import core
from core.objectives import denoising_loss
from core.pointcloud import zero_com_noise
from molecules.chem import validity_uniqueness_novelty
from molecules.config import PRESETS
from molecules.data import load_qm9
from molecules.models import EDMDynamics, polynomial_schedule
from molecules.pipeline import dataset_state, decode, train_edm
from molecules.stages import trainer_config


@pytest.fixture(scope="module")
def heavy_atoms():
    torch.set_num_threads(1)
    data = load_qm9(remove_h=True).split("test").subset(slice(0, 256))
    return dataset_state(data)


def _loss(den: core.Denoiser, x: torch.Tensor, mask: torch.Tensor) -> float:
    g = torch.Generator().manual_seed(1)
    t = den.schedule.sample_t(x.shape[0], generator=g)
    noise = zero_com_noise(x.shape, mask, generator=g)
    with torch.no_grad():
        loss = denoising_loss(den, x, t=t, noise=noise, mask=mask[..., None].expand_as(x), node_mask=mask)
    return float(loss)


def test_short_edm_run_returns_trained_weights_not_the_initialisation(heavy_atoms, tmp_path):
    """With the quick preset's EMA decay (0.999) and no warm-up, a short run returns weights that
    are still 0.999^steps initialisation: their loss stays near the untrained network's and
    ancestral sampling from them diverges (the cause of near-zero validity in short runs)."""
    x, mask = heavy_atoms
    cfg = PRESETS["quick"]
    assert cfg.ema_decay == 0.999
    torch.manual_seed(0)
    net = EDMDynamics(4, hidden=16, layers=2, num_steps=cfg.num_steps)
    untrained = core.Denoiser(copy.deepcopy(net), polynomial_schedule(cfg.num_steps))
    tc = replace(trainer_config(cfg, tmp_path, steps=80, lr=2e-3, seed=0), progress=False, device="cpu")
    den = train_edm(net, x, mask, None, tc, batch_size=32)
    assert _loss(den, x, mask) < 0.7 * _loss(untrained, x, mask)


def test_decoding_noised_qm9_keeps_the_data_validity_at_small_noise(heavy_atoms):
    """State -> decode -> RDKit on real molecules: at EDM's first noise level (sigma = 0.004 Å and
    0.004 on the scaled features) validity stays at the data's; at sigma = 0.14 Å bonds break."""
    x, mask = heavy_atoms
    sch = polynomial_schedule(500)
    data = validity_uniqueness_novelty(decode(x, mask, remove_h=True))["validity"]
    assert data > 0.95
    noise = zero_com_noise(x.shape, mask, generator=torch.Generator().manual_seed(0))
    found = {}
    for step in (0, 50):
        t = torch.tensor((step + 1) / 500, dtype=torch.float64)
        a, s = float(sch.alpha(t)), float(sch.sigma(t))
        mols = decode(a * x + s * noise, mask, remove_h=True)
        found[step] = validity_uniqueness_novelty(mols)["validity"]
    assert found[0] >= data - 0.02
    assert found[50] < data - 0.3


def test_stages_train_the_same_models_whatever_the_global_rng(tmp_path):
    """Every stage seeds its initial weights: two runs of one config give identical models."""
    from molecules.stages import load_splits, stage_edm, stage_evaluator, stage_regressor

    cfg = replace(
        PRESETS["demo"], subset=64, hidden=8, layers=1, edm_steps=2, reg_hidden=8, reg_layers=1, reg_steps=2,
        eval_hidden=8, eval_layers=1, eval_steps=2, batch_size=16, device="cpu",
    )  # fmt: skip
    splits = load_splits(cfg)
    weights = []
    for run, seed in ((tmp_path / "a", 1), (tmp_path / "b", 2)):
        torch.manual_seed(seed)  # whatever ran before must not matter
        models = [stage_edm(cfg, run, ("gap",), splits).net]
        models += [stage(cfg, run, "gap", splits) for stage in (stage_regressor, stage_evaluator)]
        weights.append([copy.deepcopy(m.state_dict()) for m in models])
    for a, b in zip(*weights, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k])
