"""Variational autoencoders (AEVB, Kingma & Welling 2014) and importance-weighted autoencoders
(IWAE, Burda, Grosse & Salakhutdinov 2016).

One latent layer z ~ N(0, I) of ``latent_dim``; a Gaussian encoder q(z|x) with the
reparameterisation z = mu + sigma * eps; a Bernoulli (logits) or Gaussian (mean, learned
per-pixel log-scale) decoder p(x|z); MLP or convolutional encoder/decoder.

The K-sample bound L_K = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)] is the ELBO at K = 1, increases
with K and tends to log p(x); with a large K it is the importance-sampled log-likelihood estimate
(:func:`log_likelihood`) used to compare models trained with any K.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .densities import check_binary, check_k

__all__ = ["VAE", "iwae_loss", "log_likelihood", "vae_loss"]

DECODERS = ("bernoulli", "gaussian")
ARCHS = ("mlp", "conv")
_LOG2PI = math.log(2 * math.pi)


def _conv_encoder(c: int, h: int, w: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.SiLU(),
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), hidden), nn.SiLU(), nn.Linear(hidden, out),
    )  # fmt: skip


class _ConvDecoder(nn.Module):
    def __init__(self, latent: int, hidden: int, c: int, h: int, w: int) -> None:
        super().__init__()
        self.shape = (64, h // 4, w // 4)
        n = math.prod(self.shape)
        self.fc = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, n))
        self.deconv = nn.Sequential(
            nn.SiLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(32, c, 4, 2, 1)
        )

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.shape)
        out = self.deconv(h)
        return out.reshape(*lead, -1)


def _mlp(i: int, hidden: int, o: int) -> nn.Module:
    layers = [nn.Linear(i, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, o)]
    return nn.Sequential(*layers)


class VAE(ModelMixin):
    """A one-latent-layer VAE over images (or vectors) of ``data_shape``.

    Args:
        data_shape: (C, H, W) or (D,); ``arch="conv"`` needs (C, H, W) with H, W divisible by 4.
        latent_dim: size of z.
        hidden: width of the hidden layers.
        decoder: ``"bernoulli"`` (binary data, logits) or ``"gaussian"`` (real data).
        arch: ``"mlp"`` or ``"conv"``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] | list[int] = (1, 28, 28),
        latent_dim: int = 32,
        hidden: int = 256,
        decoder: str = "bernoulli",
        arch: str = "mlp",
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.dim = math.prod(self.data_shape)
        self.latent_dim, self.decoder_kind = latent_dim, decoder
        if arch == "conv":
            if len(self.data_shape) != 3 or self.data_shape[1] % 4 or self.data_shape[2] % 4:
                raise ValueError(
                    f"arch='conv' needs data_shape (C, H, W) with H, W divisible by 4, got {data_shape}"
                )
            c, h, w = self.data_shape
            self.encoder = _conv_encoder(c, h, w, hidden, 2 * latent_dim)
            self.decoder = _ConvDecoder(latent_dim, hidden, c, h, w)
        else:
            self.encoder = nn.Sequential(nn.Flatten(), _mlp(self.dim, hidden, 2 * latent_dim))
            self.decoder = _mlp(latent_dim, hidden, self.dim)
        if decoder == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.dim))

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"expected data of shape (B, {self.data_shape}), got {tuple(x.shape)}")
        if self.decoder_kind == "bernoulli":
            check_binary(x, "data given to a Bernoulli decoder")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): mean and log-std, each (B, latent_dim)."""
        mu, log_std = self.encoder(x).chunk(2, dim=-1)
        return mu, log_std.clamp(-10.0, 5.0)

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats: x (B, *data_shape), z (..., B, latent_dim) -> (..., B)."""
        out = self.decoder(z)
        xf = x.flatten(1).expand_as(out)
        if self.decoder_kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, xf, reduction="none").sum(-1)
        ls = self.log_scale
        return (-0.5 * ((xf - out) * torch.exp(-ls)).pow(2) - ls - 0.5 * _LOG2PI).sum(-1)

    def log_weights(self, x: Tensor, k: int) -> Tensor:
        """Importance log-weights log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x): (k, B)."""
        check_k(k)
        self._check(x)
        mu, log_std = self.encode(x)
        eps = torch.randn(k, *mu.shape, device=x.device, dtype=mu.dtype)
        z = mu + eps * log_std.exp()
        log_q = (-0.5 * eps.pow(2) - log_std - 0.5 * _LOG2PI).sum(-1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * _LOG2PI).sum(-1)
        return self.log_px_given_z(x, z) + log_prior - log_q

    def elbo(self, x: Tensor) -> Tensor:
        """The ELBO (B,) in nats with the KL term in closed form and one reconstruction sample."""
        self._check(x)
        mu, log_std = self.encode(x)
        z = mu + torch.randn_like(mu) * log_std.exp()
        kl = 0.5 * (mu.pow(2) + (2 * log_std).exp() - 1.0 - 2 * log_std).sum(-1)
        return self.log_px_given_z(x, z) - kl

    def iwae_bound(self, x: Tensor, k: int) -> Tensor:
        """The K-sample importance-weighted bound L_K (B,) in nats (a one-sample ELBO at K = 1)."""
        return torch.logsumexp(self.log_weights(x, k), dim=0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n samples (n, *data_shape): decoder probabilities / means (``mean=True``) or draws."""
        p = next(self.parameters())
        out = self.decoder(torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype))
        if self.decoder_kind == "bernoulli":
            out = torch.sigmoid(out)
            out = out if mean else torch.bernoulli(out)
        elif not mean:
            out = out + torch.randn_like(out) * self.log_scale.exp()
        return out.reshape(n, *self.data_shape)


def vae_loss(model: VAE, batch: Tensor | tuple | list) -> dict[str, Tensor]:
    """Negative ELBO per example (nats), for ``core.Trainer``; ``batch`` is x or (x, ...)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return {"loss": -model.elbo(x).mean()}


def iwae_loss(k: int):
    """``loss_fn(model, batch)`` = -L_K per example (nats), for ``core.Trainer``."""
    check_k(k)

    def loss_fn(model: VAE, batch: Tensor | tuple | list) -> dict[str, Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return {"loss": -model.iwae_bound(x, k).mean()}

    return loss_fn


@torch.no_grad()
def log_likelihood(model: VAE, x: Tensor, k: int = 5000, chunk: int = 500, batch_size: int = 100) -> Tensor:
    """Importance-sampled estimate of log p(x) (B,) in nats: L_K with K = ``k`` proposals from
    q(z|x), drawn ``chunk`` at a time and combined exactly with a running log-sum-exp."""
    check_k(k)
    check_k(chunk, "chunk")
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        acc, left = None, k
        while left > 0:
            m = min(chunk, left)
            lse = torch.logsumexp(model.log_weights(xb, m), dim=0)
            acc = lse if acc is None else torch.logaddexp(acc, lse)
            left -= m
        out.append(acc - math.log(k))
    return torch.cat(out)
