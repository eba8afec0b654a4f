"""Coupling flows: NICE (additive coupling, Dinh et al. 2015) and RealNVP (affine coupling,
multi-scale, Dinh et al. 2017) with exact log-likelihoods of uniformly dequantised images.

Every layer maps ``x -> (y, log|det dy/dx|)`` with ``y`` shaped like ``x`` and the log-determinant
(B,) in nats, and has an exact ``inverse``. Masks are (C, H, W) tensors: checkerboard masks
alternate in space, channel masks split the channels; a coupling checks that its input matches
its mask's shape.

:class:`MultiScaleFlow` is the RealNVP architecture on real tensors (B, C, H, W): per scale,
checkerboard couplings, a squeeze (space to depth), channel couplings, and half the channels
factored out to the prior; the last scale has checkerboard couplings only. :class:`RealNVP` puts
a logit transform in front (images in [0, 1) -> R) and a standard normal prior behind;
``coupling="additive"`` gives the NICE variant of the same architecture.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .densities import standard_normal_log_prob

__all__ = [
    "AffineCoupling",
    "LogitTransform",
    "MultiScaleFlow",
    "RealNVP",
    "Scaling",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
    "count_parameters",
    "flow_nll_loss",
]

COUPLINGS = ("affine", "additive")


def checkerboard_mask(shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """(C, H, W) mask with 1 where (i + j + parity) is even."""
    c, h, w = shape
    ij = torch.arange(h)[:, None] + torch.arange(w)[None, :] + parity
    return ((ij % 2) == 0).float().expand(c, h, w).clone()


def channel_mask(shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """(C, H, W) mask with 1 on the first half of the channels (the second half if ``parity``)."""
    c, h, w = shape
    if c < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got shape {shape}")
    m = torch.zeros(c, h, w)
    m[: c // 2] = 1.0
    return 1.0 - m if parity else m


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _ConvNet(nn.Module):
    """3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv (zero-initialised output)."""

    def __init__(self, c_in: int, hidden: int, c_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, c_out, 3, padding=1),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AffineCoupling(nn.Module):
    """y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)); additive (NICE): s = 0.

    ``s = scale * tanh(raw)`` with a learned per-channel ``scale`` keeps the log-scales bounded.
    log|det| = sum over the transformed entries of s.
    """

    def __init__(self, mask: Tensor, hidden: int, coupling: str = "affine") -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {coupling!r}; expected one of {COUPLINGS}")
        if mask.dim() != 3:
            raise ValueError(f"mask must be (C, H, W), got shape {tuple(mask.shape)}")
        self.register_buffer("mask", mask.float())
        self.coupling = coupling
        c = mask.shape[0]
        self.net = _ConvNet(c + 1, hidden, 2 * c if coupling == "affine" else c)
        if coupling == "affine":
            self.scale = nn.Parameter(torch.ones(c, 1, 1))

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.mask.shape):
            raise ValueError(
                f"coupling mask has shape {tuple(self.mask.shape)} but the input is {tuple(x.shape[1:])} "
                "per example; the flow was built for another input dimension"
            )

    def _st(self, xm: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mask[:1].expand(xm.shape[0], 1, *self.mask.shape[1:])
        out = self.net(torch.cat([xm, m], dim=1))
        inv = 1.0 - self.mask
        if self.coupling == "additive":
            return torch.zeros_like(xm), out * inv
        s, t = out.chunk(2, dim=1)
        return self.scale * torch.tanh(s) * inv, t * inv

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        s, t = self._st(x * self.mask)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        self._check(y)
        s, t = self._st(y * self.mask)
        return (y - t) * torch.exp(-s)


class Squeeze(nn.Module):
    """Space to depth: (B, C, H, W) -> (B, 4C, H/2, W/2); volume-preserving."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


class Scaling(nn.Module):
    """NICE's diagonal scaling: y = x * exp(s) with a learned s per entry (C, H, W)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(*shape))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.log_scale.exp(), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale)


class LogitTransform(nn.Module):
    """Images in [0, 1) -> logit(alpha + (1 - 2 alpha) x) in R (RealNVP's preprocessing)."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"dequantised data must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        ld = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)
        return y, ld.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        return ((torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)).clamp(0, 1)


class MultiScaleFlow(nn.Module):
    """RealNVP's multi-scale flow on (B, C, H, W) -> z (B, C*H*W) and log|det| (B,).

    Args:
        shape: (C, H, W); H and W must be divisible by 2^(num_scales - 1).
        num_scales: scales; each but the last squeezes and factors out half the channels.
        hidden: channels of the coupling networks.
        couplings: couplings per group (3 checkerboard + 3 channel per scale; the last scale
            has ``couplings + 1`` checkerboard).
        coupling: ``"affine"`` (RealNVP) or ``"additive"`` (NICE).
    """

    def __init__(
        self, shape: tuple[int, int, int], num_scales: int = 2, hidden: int = 32, couplings: int = 3,
        coupling: str = "affine",
    ) -> None:  # fmt: skip
        super().__init__()
        c, h, w = (int(s) for s in shape)
        self.shape = (c, h, w)
        if num_scales < 1 or h % 2 ** (num_scales - 1) or w % 2 ** (num_scales - 1):
            raise ValueError(
                f"shape {shape} cannot be squeezed {num_scales - 1} times (H, W must halve evenly)"
            )
        self.scales = nn.ModuleList()
        self.out_shapes: list[tuple[int, int, int]] = []
        for i in range(num_scales):
            last = i == num_scales - 1
            layers: list[nn.Module] = []
            n_cb = couplings + 1 if last else couplings
            masks = [checkerboard_mask((c, h, w), k % 2) for k in range(n_cb)]
            layers += [AffineCoupling(m, hidden, coupling) for m in masks]
            if not last:
                layers.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
                masks = [channel_mask((c, h, w), k % 2) for k in range(couplings)]
                layers += [AffineCoupling(m, hidden, coupling) for m in masks]
                self.out_shapes.append((c // 2, h, w))
                c = c - c // 2
            else:
                layers.append(Scaling((c, h, w)))
                self.out_shapes.append((c, h, w))
            self.scales.append(nn.ModuleList(layers))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"this flow's masks are for inputs {self.shape}, got {tuple(x.shape[1:])} per example"
            )
        logdet = x.new_zeros(x.shape[0])
        zs = []
        for i, layers in enumerate(self.scales):
            for layer in layers:
                x, ld = layer(x)
                logdet = logdet + ld
            if i < len(self.scales) - 1:
                k = self.out_shapes[i][0]
                zs.append(x[:, :k].flatten(1))
                x = x[:, k:]
        zs.append(x.flatten(1))
        return torch.cat(zs, dim=1), logdet

    def inverse(self, z: Tensor) -> Tensor:
        sizes = [math.prod(s) for s in self.out_shapes]
        if z.shape[1] != sum(sizes):
            raise ValueError(f"z must have {sum(sizes)} entries per example, got {z.shape[1]}")
        parts = list(z.split(sizes, dim=1))
        x = parts[-1].reshape(-1, *self.out_shapes[-1])
        for i in range(len(self.scales) - 1, -1, -1):
            if i < len(self.scales) - 1:
                x = torch.cat([parts[i].reshape(-1, *self.out_shapes[i]), x], dim=1)
            for layer in reversed(self.scales[i]):
                x = layer.inverse(x)
        return x


class RealNVP(ModelMixin):
    """RealNVP (or NICE with ``coupling="additive"``) on dequantised images in [0, 1)^(C, H, W):
    logit transform, :class:`MultiScaleFlow`, standard normal prior; exact ``log_prob``."""

    def __init__(
        self, data_shape: tuple[int, ...] | list[int] = (1, 28, 28), num_scales: int = 2, hidden: int = 32,
        couplings: int = 3, coupling: str = "affine", alpha: float = 0.05,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if len(self.data_shape) != 3:
            raise ValueError(f"data_shape must be (C, H, W), got {data_shape}")
        self.logit = LogitTransform(alpha)
        self.flow = MultiScaleFlow(self.data_shape, num_scales, hidden, couplings, coupling)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density (B,) in nats of x (B, C, H, W) in [0, 1)."""
        y, ld0 = self.logit(x)
        z, ld = self.flow(y)
        return standard_normal_log_prob(z) + ld + ld0

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """n images (n, C, H, W) in [0, 1]."""
        p = next(self.parameters())
        z = torch.randn(n, math.prod(self.data_shape), device=p.device) * temperature
        return self.logit.inverse(self.flow.inverse(z))


def flow_nll_loss(model: nn.Module, batch: Tensor | tuple | list) -> dict[str, Tensor]:
    """Mean negative log density per dimension (nats) of dequantised images, for ``core.Trainer``
    (per dimension keeps the loss O(1) for gradient clipping); ``batch`` is x or (x, ...)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return {"loss": -model.log_prob(x).mean() / x[0].numel()}
