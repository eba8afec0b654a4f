"""Chi et al.'s FiLM-conditioned 1-D U-Net: shapes, horizons, conditioning, save/load."""

import pytest
import torch

from core.nets import ConditionalUnet1D


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _net(**kw):
    torch.manual_seed(0)
    return ConditionalUnet1D(2, 6, **{"time_embed_dim": 16, "down_dims": (8, 16, 32), **kw})


@pytest.mark.parametrize("horizon", [4, 8, 16, 24])
def test_shapes_for_valid_horizons(horizon):
    net = _net()
    out = net(torch.randn(3, horizon, 2), torch.rand(3) * 99, global_cond=torch.randn(3, 6))
    assert out.shape == (3, horizon, 2)
    assert net.valid_horizons(16) == [4, 8, 12, 16]


@pytest.mark.parametrize("horizon", [6, 10, 18])
def test_unsupported_horizon_lists_valid_ones(horizon):
    with pytest.raises(ValueError, match=rf"horizon {horizon} .* multiple of 4, e.g. \[4, 8, 12, 16\]"):
        _net()(torch.randn(1, horizon, 2), torch.zeros(1), global_cond=torch.randn(1, 6))


def test_bad_inputs():
    net = _net()
    with pytest.raises(ValueError, match=r"global_cond of shape \(2, 6\)"):
        net(torch.randn(2, 8, 2), torch.zeros(2), global_cond=torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"global_cond of shape"):
        net(torch.randn(2, 8, 2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(B, horizon, 2\)"):
        net(torch.randn(2, 8, 3), torch.zeros(2), global_cond=torch.randn(2, 6))
    with pytest.raises(ValueError, match="divisible by groups"):
        ConditionalUnet1D(2, 6, down_dims=(12, 16))


def test_film_conditions_the_output():
    net = _net().eval()
    x, t = torch.randn(4, 8, 2), torch.full((4,), 10.0)
    c1, c2 = torch.randn(4, 6), torch.randn(4, 6)
    with torch.no_grad():
        assert (net(x, t, global_cond=c1) - net(x, t, global_cond=c2)).abs().max() > 1e-3
        assert (net(x, t, global_cond=c1) - net(x, t + 40, global_cond=c1)).abs().max() > 1e-3
        # FiLM is the only path of the conditioning: with its layers zeroed the network ignores it
        for m in net.modules():
            if hasattr(m, "film"):
                m.film[1].weight.zero_()
        assert torch.allclose(net(x, t, global_cond=c1), net(x, t + 40, global_cond=c2), atol=1e-6)


def test_film_is_scale_and_shift():
    """A block's FiLM output (scale, shift) = (s, b) maps its first conv block's output h to s * h + b."""
    net = _net().eval()
    block = net.downs[0][0]
    x, c = torch.randn(2, 2, 8), torch.randn(2, net.global_cond_dim + 16)
    with torch.no_grad():
        lin = block.film[1]
        lin.weight.zero_()
        lin.bias.copy_(torch.cat([torch.full((8,), 2.0), torch.full((8,), 0.5)]))
        h = block.block1(x)
        expected = block.block2(2.0 * h + 0.5) + block.residual(x)
        assert torch.allclose(block(x, c), expected, atol=1e-6)


def test_unconditional_and_scalar_time():
    net = ConditionalUnet1D(3, 0, time_embed_dim=8, down_dims=(8, 16))
    assert net(torch.randn(2, 6, 3), torch.tensor(5.0)).shape == (2, 6, 3)
    with pytest.raises(ValueError, match="global_cond_dim=0"):
        net(torch.randn(2, 6, 3), torch.tensor(5.0), global_cond=torch.randn(2, 1))


def test_save_load_round_trip(tmp_path):
    net = _net().eval()
    net.save_pretrained(tmp_path / "unet")
    back = ConditionalUnet1D.from_pretrained(tmp_path / "unet")
    assert back.init_config == net.init_config
    x, t, c = torch.randn(2, 16, 2), torch.rand(2) * 99, torch.randn(2, 6)
    with torch.no_grad():
        assert torch.equal(net(x, t, global_cond=c), back(x, t, global_cond=c))


def test_paper_size():
    """Chi et al.'s Push-T U-Net (down_dims 256-512-1024, kernel 5, embed 256) has ~65M parameters."""
    net = ConditionalUnet1D(2, 2 * 20)
    n = sum(p.numel() for p in net.parameters())
    assert 64e6 < n < 67e6
