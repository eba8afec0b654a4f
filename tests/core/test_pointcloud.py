"""Masked point clouds: the zero-CoM projection, its noise, pack/unpack, the masked loss and guide."""

import pytest
import torch

import core
from core.guidance import Project
from core.objectives import denoising_loss
from core.pointcloud import (
    masked_mean,
    node_mask,
    pack,
    remove_mean,
    unpack,
    zero_com_noise,
    zero_com_noise_fn,
)


def _batch():
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    mask = node_mask(torch.tensor([5, 2, 4]), 5)
    return x, mask


def test_remove_mean_is_the_orthogonal_projection():
    x, mask = _batch()
    y = torch.randn_like(x)
    px, py = remove_mean(x, mask), remove_mean(y, mask)
    assert torch.allclose(masked_mean(px, mask)[..., :3], torch.zeros(3, 1, 3, dtype=x.dtype), atol=1e-12)
    assert (px[~mask] == 0).all()
    assert torch.allclose(remove_mean(px, mask), px)  # idempotent
    assert torch.allclose((px * y).sum(), (x * py * mask[..., None]).sum())  # self-adjoint on real points
    assert torch.allclose(px[..., 3:], x[..., 3:] * mask[..., None])  # other features only masked


def test_zero_com_noise_has_the_projected_variance():
    # Projecting N(0, I) onto the zero-mean subspace of n points leaves variance (n - 1) / n per entry.
    mask = node_mask(torch.tensor([4] * 20000), 6)
    g = torch.Generator().manual_seed(0)
    eps = zero_com_noise((20000, 6, 5), mask, generator=g)
    assert (eps[:, 4:] == 0).all()
    assert eps[:, :4, :3].sum(1).abs().max() < 1e-5
    var_pos = eps[:, :4, :3].var().item()
    var_feat = eps[:, :4, 3:].var().item()
    assert abs(var_pos - 3 / 4) < 0.02 and abs(var_feat - 1.0) < 0.02


def test_pack_unpack_round_trip_and_errors():
    clouds = [torch.randn(n, 4) for n in (3, 1, 5)]
    x, mask = pack(clouds)
    assert x.shape == (3, 5, 4) and mask.sum(1).tolist() == [3, 1, 5]
    for a, b in zip(unpack(x, mask), clouds, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="more than n_max"):
        pack(clouds, n_max=4)
    with pytest.raises(ValueError, match="expected"):
        pack([torch.randn(2, 4), torch.randn(2, 3)])
    with pytest.raises(ValueError, match="node mask"):
        remove_mean(x, mask[:, :3])


def test_masked_loss_is_per_sample_mean_over_real_entries():
    net = torch.nn.Identity()
    den = core.Denoiser(lambda x, t: x * 0.5, core.VPSchedule.linear(), prediction="eps")
    del net
    x0 = torch.randn(1, 3, 4)
    noise = torch.randn(1, 3, 4)
    t = torch.tensor([0.4])
    plain = denoising_loss(den, x0, t=t, noise=noise, reduction="none")
    # The same cloud padded with two points of garbage: the masked loss must not change.
    xp = torch.cat([x0, 7 * torch.ones(1, 2, 4)], 1)
    npad = torch.cat([noise, -3 * torch.ones(1, 2, 4)], 1)
    mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)[..., None].expand(1, 5, 4)
    padded = denoising_loss(den, xp, t=t, noise=npad, mask=mask, reduction="none")
    assert torch.allclose(plain, padded)
    with pytest.raises(ValueError, match="does not broadcast"):
        denoising_loss(den, xp, t=t, noise=npad, mask=torch.ones(2, 2))


def test_masked_zero_mean_guide_reads_the_mask_from_cond():
    sch = core.VPSchedule.linear()
    den = core.Denoiser(lambda x, t, node_mask: 0.3 * x, sch)
    mask = node_mask(torch.tensor([4, 2]), 4)
    x_t = torch.randn(2, 4, 5)
    out = core.sample(
        den, x_t, method="ddpm", steps=10, guide=Project.masked_zero_mean(), cond={"node_mask": mask}
    )
    assert (out[~mask] == 0).all()
    assert masked_mean(out, mask)[..., :3].abs().max() < 1e-5
    with pytest.raises(ValueError, match="node_mask"):
        core.sample(
            den,
            x_t,
            method="ddpm",
            steps=3,
            guide=Project.masked_zero_mean("other"),
            cond={"node_mask": mask},
        )


def test_zero_com_noise_fn_feeds_core_sample_masked_noise():
    sch = core.VPSchedule.linear()
    den = core.Denoiser(lambda x, t, node_mask: 0.0 * x, sch)
    mask = node_mask(torch.tensor([3, 2]), 4)
    seen = []

    def callback(i, t, x, x0):
        seen.append(x.clone())

    core.sample(
        den,
        zero_com_noise((2, 4, 5), mask, dtype=torch.float64),
        method="ddpm",
        steps=5,
        cond={"node_mask": mask},
        noise_fn=zero_com_noise_fn(),
        callback=callback,
    )
    for x in seen:  # without any projection guide, every state stays centred and padded with zeros
        assert (x[~mask] == 0).all() and masked_mean(x, mask)[..., :3].abs().max() < 1e-5
