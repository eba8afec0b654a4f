"""VFlow (Chen et al. 2020): a flow on data augmented with extra variables.

Augmented channels v (``aug_channels`` of the image's size) are drawn from a diagonal Gaussian
q(v | x) whose mean and log-std come from a small convolutional network of the (logit-transformed)
image; a RealNVP :class:`MultiScaleFlow` models the joint (x, v) in C + aug_channels channels. The
training objective is the evidence lower bound

    log p(x) >= E_{q(v|x)} [log p(x, v) - log q(v | x)],

and a K-sample importance-weighted version of the same bound (:meth:`VFlow.log_prob_bound`)
tightens it at evaluation. (The paper's q(v|x) is itself a conditional flow; the Gaussian is the
simplest member of that class.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .densities import check_k, standard_normal_log_prob
from .flows import LogitTransform, MultiScaleFlow

__all__ = ["VFlow"]


class VFlow(ModelMixin):
    """VFlow on dequantised images in [0, 1)^(C, H, W).

    Args:
        data_shape: (C, H, W).
        aug_channels: channels of the augmented variable v (same H, W).
        num_scales, hidden, couplings: the joint flow's :class:`MultiScaleFlow` settings.
        q_hidden: channels of the q(v|x) network.
    """

    def __init__(
        self, data_shape: tuple[int, ...] | list[int] = (1, 28, 28), aug_channels: int = 1,
        num_scales: int = 2, hidden: int = 32, couplings: int = 3, q_hidden: int = 16, alpha: float = 0.05,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if len(self.data_shape) != 3:
            raise ValueError(f"data_shape must be (C, H, W), got {data_shape}")
        if aug_channels < 1:
            raise ValueError(f"aug_channels must be >= 1, got {aug_channels}")
        c, h, w = self.data_shape
        self.aug_channels = aug_channels
        self.logit = LogitTransform(alpha)
        self.q_net = nn.Sequential(
            nn.Conv2d(c, q_hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(q_hidden, 2 * aug_channels, 3, padding=1),
        )
        nn.init.zeros_(self.q_net[-1].weight)
        nn.init.zeros_(self.q_net[-1].bias)
        self.flow = MultiScaleFlow((c + aug_channels, h, w), num_scales, hidden, couplings)

    def _log_weights(self, x: Tensor, k: int) -> Tensor:
        """log p(x, v_k) - log q(v_k | x) for k draws v_k ~ q(v|x): (k, B)."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"this VFlow is built for inputs {self.data_shape}, got {tuple(x.shape[1:])} per example"
            )
        y, ld0 = self.logit(x)
        mu, log_std = self.q_net(y).chunk(2, dim=1)
        log_std = log_std.clamp(-7.0, 3.0)
        b = x.shape[0]
        eps = torch.randn(k, *mu.shape, device=x.device, dtype=x.dtype)
        v = (mu + eps * log_std.exp()).flatten(0, 1)
        log_q = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).flatten(2).sum(2)
        joint = torch.cat([y.repeat(k, 1, 1, 1), v], dim=1)
        z, ld = self.flow(joint)
        log_p = (standard_normal_log_prob(z) + ld).reshape(k, b) + ld0
        return log_p - log_q

    def elbo(self, x: Tensor) -> Tensor:
        """One-sample ELBO (B,) in nats of x (B, C, H, W) in [0, 1) (the training objective)."""
        return self._log_weights(x, 1)[0]

    def log_prob_bound(self, x: Tensor, k: int = 1) -> Tensor:
        """The K-sample importance-weighted lower bound on log p(x) (B,) in nats (ELBO at K = 1)."""
        check_k(k)
        return torch.logsumexp(self._log_weights(x, k), 0) - math.log(k)

    def log_prob(self, x: Tensor) -> Tensor:
        """The one-sample ELBO, so that generic likelihood losses train VFlow on its bound."""
        return self.elbo(x)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """n images (n, C, H, W) in [0, 1]: sample (x, v) from the joint flow, keep x."""
        c, h, w = self.data_shape
        d = (c + self.aug_channels) * h * w
        z = torch.randn(n, d, device=next(self.parameters()).device) * temperature
        return self.logit.inverse(self.flow.inverse(z)[:, :c])
