"""Equivariance of both backbones and the regressors; the dense and edge-list EGNN agree; schedule."""

import pytest
import torch

import core
from core.pointcloud import node_mask, remove_mean
from molecules.egnn import EGNN
from molecules.models import EDMDynamics, NodeCountDistribution, PropertyRegressor, polynomial_schedule
from molecules.pipeline import ClipDenoised, property_energy, sample_molecules


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q * torch.sign(torch.det(q))


def _molecules(b=3, n=6, k=4):
    mask = node_mask(torch.tensor([n, n - 2, 3]), n)
    x = torch.randn(b, n, 3 + k + 1, dtype=torch.float64)
    return remove_mean(x, mask), mask


def _transform(x, mask, rot, shift, perm):
    y = x.clone()
    y[..., :3] = x[..., :3] @ rot.T + shift
    y = y * mask[..., None]
    return y[:, perm], mask[:, perm]


@pytest.mark.parametrize("backbone", ["egnn", "e3nn"])
def test_dynamics_is_e3_equivariant_and_permutation_equivariant(backbone):
    torch.manual_seed(0)
    net = EDMDynamics(4, hidden=16, layers=2, num_steps=100, context_dim=1, backbone=backbone).double()
    x, mask = _molecules()
    mask = mask.clone()
    mask[:, :] = True  # permuting a padded batch moves padding; test permutations on full clouds
    x = remove_mean(x, mask)
    t, ctx = torch.tensor([3.0, 50.0, 99.0]), torch.randn(3, 1, dtype=torch.float64)
    out = net(x, t, mask, ctx)
    rot, perm = _rotation(1), torch.randperm(6)
    y, my = _transform(x, mask, rot, torch.zeros(3, dtype=torch.float64), perm)
    out_y = net(y, t, my, ctx)
    assert torch.allclose(out_y[..., :3], (out[..., :3] @ rot.T)[:, perm], atol=1e-7)
    assert torch.allclose(out_y[..., 3:], out[..., 3:][:, perm], atol=1e-7)


def test_dynamics_translation_invariant_and_masks_padding():
    net = EDMDynamics(4, hidden=16, layers=2, num_steps=100).double()
    x, mask = _molecules()
    t = torch.tensor([1.0, 2.0, 3.0])
    out = net(x, t, mask)
    shifted = x.clone()
    shifted[..., :3] += torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) * mask[..., None]
    assert torch.allclose(net(shifted, t, mask), out, atol=1e-8)
    assert (out[~mask] == 0).all()
    assert out[..., :3].sum(1).abs().max() < 1e-9  # zero centre of mass
    with pytest.raises(ValueError, match="context must have shape"):
        EDMDynamics(4, hidden=8, layers=1, context_dim=2).double()(x, t, mask)


def test_dense_and_edge_list_egnn_compute_the_same_function():
    dense = EGNN(5, 4, hidden=16, layers=3).double()
    for block in dense.blocks:  # coordinate updates of order 1 (the initialisation makes them tiny)
        torch.nn.init.normal_(block.coord_out.weight, std=0.5)
    edges = EGNN(5, 4, hidden=16, layers=3, layout="edges").double()
    edges.load_state_dict(dense.state_dict())
    x, mask = _molecules()
    h = torch.randn(3, 6, 5, dtype=torch.float64) * mask[..., None]
    hd, xd = dense(h, x[..., :3], mask)
    he, xe = edges(h, x[..., :3], mask)
    assert torch.allclose(hd, he, atol=1e-10) and torch.allclose(xd, xe, atol=1e-10)
    assert (xd - x[..., :3]).abs().max() > 1e-2  # the coordinate path is exercised
    with torch.no_grad():  # the sampling path (activations in place) computes the same
        hn, xn = dense(h, x[..., :3], mask)
        hen, xen = edges(h, x[..., :3], mask)
    for a, b in ((hn, hd), (xn, xd), (hen, hd), (xen, xd)):
        assert torch.allclose(a, b, atol=1e-10)
    with pytest.raises(ValueError, match="layout"):
        EGNN(5, 4, layout="sparse")


@pytest.mark.parametrize("time_dependent", [True, False])
def test_regressor_is_invariant(time_dependent):
    reg = PropertyRegressor(4, hidden=16, layers=2, num_steps=100, time_dependent=time_dependent).double()
    x, mask = _molecules()
    t = torch.tensor([5.0, 10.0, 90.0]) if time_dependent else None
    y, my = _transform(
        x, mask, _rotation(2), torch.tensor([3.0, 1.0, -1.0], dtype=torch.float64), torch.arange(6)
    )
    assert torch.allclose(reg(x, t, mask), reg(y, t, my), atol=1e-8)


def test_polynomial_schedule_matches_edm_closed_form():
    sch = polynomial_schedule(500)
    # Away from the ends, alpha^2 = (1 - 2e-5) (1 - (s/T)^2)^2 + 1e-5 at EDM's step s = n + 1.
    for s in (50, 250, 400):
        a2 = (1 - 2e-5) * (1 - (s / 500) ** 2) ** 2 + 1e-5
        assert abs(float(sch.alpha(torch.tensor(s / 500, dtype=torch.float64))) ** 2 - a2) < 1e-9
    assert (
        abs(float(sch.alpha(torch.tensor(1.0, dtype=torch.float64))) ** 2 - 1e-5) < 3e-8
    )  # + the clipped step


def test_energy_guided_sampling_with_two_properties_runs_and_centres():
    torch.manual_seed(0)
    net = EDMDynamics(4, hidden=8, layers=1, num_steps=50, context_dim=2)
    den = core.Denoiser(net, polynomial_schedule(50)).eval()
    regs = [PropertyRegressor(4, hidden=8, layers=1, num_steps=50).eval() for _ in range(2)]
    targets = torch.zeros(3, 2, dtype=torch.float64)
    energy = property_energy(regs, targets, den.schedule, weights=[1.0, 0.5])
    n = torch.tensor([4, 3, 2])
    x, mask = sample_molecules(den, n, torch.zeros(3, 2), energy=energy, scale=1.0, steps=10)
    assert (x[~mask] == 0).all() and x[..., :3].sum(1).abs().max() < 1e-4
    assert x[..., :3].norm(dim=-1).max() < 50
    with pytest.raises(ValueError, match="one target column"):
        property_energy(regs, targets[:, :1], den.schedule)


def test_clip_denoised_is_rotation_equivariant():
    clip = ClipDenoised(2.0)
    x, _ = _molecules()
    x = x * 5
    rot = _rotation(3)
    y = x.clone()
    y[..., :3] = x[..., :3] @ rot.T
    cx, cy = clip(x), clip(y)
    assert torch.allclose(cx[..., :3] @ rot.T, cy[..., :3], atol=1e-10)
    assert cx[..., :3].norm(dim=-1).max() <= 2.0 + 1e-9


def test_node_count_distribution():
    law = NodeCountDistribution(torch.tensor([9, 9, 8, 7]), torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert torch.allclose(
        law.log_prob(torch.tensor([9, 3])).exp(), torch.tensor([0.5, 0.0], dtype=torch.float64)
    )
    n, p = law.sample(100, torch.Generator().manual_seed(0))
    assert set(n.tolist()) <= {7, 8, 9} and p.shape == (100, 1)


def _toy_property_set(m=128, n=5, k=3, seed=0):
    """Random molecules whose target is the (normalised) count of type-0 atoms."""
    from molecules.pipeline import molecule_state

    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, n + 1, (m,), generator=g)
    types = torch.randint(0, k, (m, n), generator=g)
    types[torch.arange(n)[None] >= counts[:, None]] = -1
    x, mask = molecule_state(3 * torch.randn(m, n, 3, generator=g), types, k, torch.tensor([6, 7, 8]))
    y = (types == 0).sum(1).float()
    return x, mask, (y - y.mean()) / y.std()


def test_regressor_learns_clean_then_noisy_and_resumes(tmp_path):
    from molecules.pipeline import train_regressor

    x, mask, y = _toy_property_set()
    cfg = core.TrainerConfig(
        steps=120, lr=3e-3, ema_decay=0.9, out_dir=str(tmp_path), ckpt_every=30, log_every=30,
        progress=False, tensorboard=False, device="cpu",
    )  # fmt: skip

    def clean_mse(net):
        with torch.no_grad():
            return float(((net(x, torch.zeros(len(y)), mask) - y) ** 2).mean())

    torch.manual_seed(0)
    net = PropertyRegressor(3, hidden=16, layers=2, num_steps=50)
    before = clean_mse(net)
    train_regressor(net, x, mask, y, cfg, batch_size=32, clean_fraction=0.5, max_noise=0.5)
    assert clean_mse(net) < 0.5 * before
    for phase in ("clean", "noisy"):
        assert (tmp_path / phase / "metrics.csv").is_file()
    torch.manual_seed(1)  # a fresh network picks up both finished phases from their checkpoints
    again = train_regressor(PropertyRegressor(3, hidden=16, layers=2, num_steps=50), x, mask, y, cfg, 32)
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="clean_fraction"):
        train_regressor(net, x, mask, y, cfg, clean_fraction=1.5)


def test_paired_errors_refuse_a_column_of_targets():
    import numpy as np

    from molecules.benchmark import paired_abs_errors

    np.testing.assert_allclose(paired_abs_errors([1.0, 5.0], [2.0, 2.0]), [1.0, 3.0])
    with pytest.raises(ValueError, match=r"1-D of one length, got shapes \(3,\) and \(3, 1\)"):
        paired_abs_errors(np.zeros(3), np.zeros((3, 1)))
