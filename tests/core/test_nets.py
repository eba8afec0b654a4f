"""Backbones: shapes, bad inputs, class conditioning, and the papers' parameter counts."""

import pytest
import torch

from core.nets.dit import DiT, DiTConfig
from core.nets.mlp import MLPConfig, MLPNet
from core.nets.unet import UNet, UNetConfig
from core.nets.uvit import UViT, UViTConfig


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _small(kind, **kw):
    if kind == "unet":
        cfg = dict(image_size=16, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1)
        return UNet(UNetConfig(**cfg, attention_resolutions=(8,), groups=8, dropout=0.0, **kw))
    if kind == "uvit":
        return UViT(UViTConfig(image_size=16, in_channels=1, patch_size=4, dim=32, depth=2, heads=4, **kw))
    return DiT(DiTConfig(image_size=16, in_channels=1, patch_size=4, dim=32, depth=2, heads=4, **kw))


def _perturb(model):
    """Zero-initialised output layers make a fresh net ignore its conditioning; nudge them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("kind", ["unet", "uvit", "dit"])
def test_image_backbone_shape_and_conditioning(kind):
    net = _perturb(_small(kind, num_classes=3, class_dropout=0.0)).eval()
    x = torch.randn(4, 1, 16, 16)
    t = torch.rand(4)
    out = net(x, t, y=torch.tensor([0, 1, 2, 3]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert net.null_class == 3
    a, b = net(x, t, y=torch.zeros(4, dtype=torch.long)), net(x, t, y=torch.full((4,), 2))
    assert (a - b).abs().max() > 1e-4, "class label does not change the output"
    torch.testing.assert_close(net(x, t, y=None), net(x, t, y=torch.full((4,), 3)))
    assert (net(x, 0.2) - net(x, 0.8)).abs().max() > 1e-4, "time does not change the output"
    torch.testing.assert_close(net(x, 0.3), net(x, torch.full((4,), 0.3)))


@pytest.mark.parametrize("kind", ["unet", "uvit", "dit"])
def test_image_backbone_bad_inputs(kind):
    net = _small(kind, num_classes=3)
    name = type(net).__name__
    with pytest.raises(ValueError, match=f"{name} is configured for 16x16 images, got 8x8"):
        net(torch.randn(2, 1, 8, 8), 0.5)
    with pytest.raises(ValueError, match=f"{name} is configured for 1 channels, got 3"):
        net(torch.randn(2, 3, 16, 16), 0.5)
    with pytest.raises(ValueError, match="expects images of shape"):
        net(torch.randn(2, 16, 16), 0.5)
    with pytest.raises(ValueError, match=r"label out of range: got values in \[0, 7\], expected 0..2 or 3"):
        net(torch.randn(2, 1, 16, 16), 0.5, y=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="label out of range"):
        net(torch.randn(2, 1, 16, 16), 0.5, y=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="integer tensor"):
        net(torch.randn(2, 1, 16, 16), 0.5, y=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="unconditional"):
        _small(kind)(torch.randn(2, 1, 16, 16), 0.5, y=torch.tensor([0, 1]))


def test_label_dropout_only_in_training():
    net = _perturb(_small("dit", num_classes=3, class_dropout=0.5))
    x, y = torch.randn(64, 1, 16, 16), torch.zeros(64, dtype=torch.long)
    net.eval()
    cond, uncond = net(x, 0.5, y=y), net(x, 0.5)
    net.train()
    out = net(x, 0.5, y=y)
    dropped = (out - uncond).flatten(1).abs().max(1).values < 1e-5
    kept = (out - cond).flatten(1).abs().max(1).values < 1e-5
    assert bool((dropped | kept).all()) and 10 < int(dropped.sum()) < 54


def test_config_errors():
    with pytest.raises(ValueError, match=r"must be divisible by 2\^3 for 4 levels"):
        UNetConfig(image_size=28, channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNetConfig(image_size=28, channel_mults=(1, 2, 2), attention_resolutions=(16,))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        DiTConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="depth must be even"):
        UViTConfig(depth=13)
    with pytest.raises(ValueError, match="unknown DiTConfig preset"):
        DiTConfig.preset("XXL/2")


def test_unet_28px_with_three_levels():
    net = UNet(UNetConfig(image_size=28, in_channels=1, base_channels=16, channel_mults=(1, 2, 2),
                          num_res_blocks=1, attention_resolutions=(7,), groups=8))  # fmt: skip
    assert net(torch.randn(2, 1, 28, 28), torch.rand(2)).shape == (2, 1, 28, 28)


def test_mlp():
    net = _perturb(MLPNet(MLPConfig(dim=3, hidden=32, depth=2, num_classes=4, class_dropout=0.0)))
    x = torch.randn(5, 3)
    out = net(x, torch.rand(5), y=torch.arange(5) % 4)
    assert out.shape == x.shape
    assert (
        net(x, 0.5, y=torch.zeros(5, dtype=torch.long)) - net(x, 0.5, y=torch.ones(5, dtype=torch.long))
    ).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"expects inputs of shape \(B, 3\), got \(5, 2\)"):
        net(torch.randn(5, 2), 0.5)
    with pytest.raises(ValueError, match="label out of range"):
        net(x, 0.5, y=torch.full((5,), 5))


def _meta_count(cls, cfg):
    with torch.device("meta"):
        return _count(cls(cfg))


@pytest.mark.parametrize(
    "name,build,published",
    [
        # DiT: 256x256 images -> 32x32x4 latents, 1000 classes (+ the null class); the paper's
        # models also output a variance (8 channels): +0.02% parameters, not built here.
        (
            "DiT-S/2",
            lambda: (DiT, DiTConfig.preset("S/2", image_size=32, in_channels=4, num_classes=1000)),
            33e6,
        ),
        (
            "DiT-XL/2",
            lambda: (DiT, DiTConfig.preset("XL/2", image_size=32, in_channels=4, num_classes=1000)),
            675e6,
        ),
        # U-ViT-S/2 for CIFAR-10 32x32 (unconditional, qkv without bias, no time MLP): 13 blocks.
        ("U-ViT-S/2", lambda: (UViT, UViTConfig.preset("S/2", image_size=32, in_channels=3)), 44e6),
        # DDPM's CIFAR-10 U-Net: 35.7M.
        ("DDPM-CIFAR10", lambda: (UNet, UNetConfig()), 35.7e6),
    ],
)
def test_reference_parameter_counts(name, build, published):
    cls, cfg = build()
    n = _meta_count(cls, cfg)
    assert abs(n / published - 1) < 0.02, (
        f"{name}: {n / 1e6:.2f}M parameters, published {published / 1e6:.1f}M"
    )
