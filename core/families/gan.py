"""Generative adversarial networks: GAN (minimax, non-saturating), WGAN (weight clipping, gradient
penalty) and CLC-GAN, as a :class:`~core.training.Game` the shared Trainer plays.

Losses, for critic outputs (logits for the GAN losses, scores for WGAN) on real data ``d_real``
and generated data ``d_fake``:

* GAN (Goodfellow et al. 2014): the discriminator minimises
  ``-E log sigmoid(d_real) - E log(1 - sigmoid(d_fake))``; the generator minimises
  ``E log(1 - sigmoid(d_fake))`` (minimax) or ``-E log sigmoid(d_fake)`` (non-saturating).
* WGAN (Arjovsky et al. 2017): the critic minimises ``E d_fake - E d_real``, the generator
  ``-E d_fake``; the critic is kept Lipschitz by clipping its weights to ``[-c, c]`` after each
  of its steps, or (WGAN-GP, Gulrajani et al. 2017) by the penalty
  ``gp * E (|grad_x D(x_hat)| - 1)^2`` at random interpolates ``x_hat`` of real and fake points.
* CLC-GAN (Xu, Li, Zhu, Zhang 2020): closed-loop control of the training dynamics, a negative
  feedback on the discriminator's output implemented as the squared-L2 regulariser
  ``clc / 2 * (E d_real^2 + E d_fake^2)`` added to the discriminator's loss of either base loss.
  In the function-space dynamics ``dD(x)/dt = p(x) - p_G(x)`` it adds the damping ``-clc * D(x)``
  that turns the oscillation into a decaying one (see :mod:`core.families.dirac`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets.conditioning import check_image
from ..training.game import Game, Player

__all__ = [
    "GAN",
    "GAN_FAMILIES",
    "ConvCritic",
    "ConvGenerator",
    "GANConfig",
    "GANGame",
    "MLPCritic",
    "MLPGenerator",
    "clc_penalty",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
]

LOSSES = ("minimax", "nonsaturating", "wgan")


# --- networks ------------------------------------------------------------------------------------
class MLPGenerator(nn.Module):
    """z (B, latent_dim) [, y (B,) int64] -> x (B, out_dim); ``depth`` hidden layers of ``hidden`` units."""

    def __init__(
        self, latent_dim: int, out_dim: int, hidden: int = 128, depth: int = 2, num_classes: int | None = None
    ) -> None:
        super().__init__()
        _positive(latent_dim=latent_dim, out_dim=out_dim, hidden=hidden, depth=depth)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, out_dim))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(_condition(z, y, self.embed))


class MLPCritic(nn.Module):
    """x (B, in_dim) [, y (B,)] -> score (B,); LeakyReLU MLP, class conditioning by projection."""

    def __init__(
        self, in_dim: int, hidden: int = 128, depth: int = 2, num_classes: int | None = None
    ) -> None:
        super().__init__()
        _positive(in_dim=in_dim, hidden=hidden, depth=depth)
        self.in_dim = in_dim
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width) if num_classes else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        return _project(self.features(x), self.out, self.embed, y)


class ConvGenerator(nn.Module):
    """DCGAN-style z (B, latent_dim) [, y (B,)] -> images (B, channels, size, size) in [-1, 1] (tanh).

    ``size`` must be divisible by 4 (28 for Fashion-MNIST): a linear map to (2w, size/4, size/4)
    and two stride-2 transposed convolutions.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels: int = 1,
        size: int = 28,
        width: int = 64,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        _positive(latent_dim=latent_dim, channels=channels, size=size, width=width)
        if size % 4:
            raise ValueError(f"ConvGenerator size must be divisible by 4, got {size}")
        self.latent_dim, self.channels, self.size, self.num_classes = latent_dim, channels, size, num_classes
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        s = size // 4
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * s * s), nn.BatchNorm1d(2 * width * s * s), nn.ReLU()
        )
        self.net = nn.Sequential(
            nn.Unflatten(1, (2 * width, s, s)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(self.fc(_condition(z, y, self.embed)))


class ConvCritic(nn.Module):
    """Images (B, channels, size, size) [, y (B,)] -> score (B,): two stride-2 convolutions
    (LeakyReLU, no batch norm, so the gradient penalty is per sample), then a linear layer;
    class conditioning by projection (Miyato & Koyama 2018)."""

    def __init__(
        self, channels: int = 1, size: int = 28, width: int = 64, num_classes: int | None = None
    ) -> None:
        super().__init__()
        _positive(channels=channels, size=size, width=width)
        if size % 4:
            raise ValueError(f"ConvCritic size must be divisible by 4, got {size}")
        self.channels, self.size = channels, size
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        feat = 2 * width * (size // 4) ** 2
        self.out = nn.Linear(feat, 1)
        self.embed = nn.Embedding(num_classes, feat) if num_classes else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        check_image(x, self.channels, self.size, "ConvCritic")
        return _project(self.features(x), self.out, self.embed, y)


def _condition(z: Tensor, y: Tensor | None, embed: nn.Embedding | None) -> Tensor:
    if embed is None:
        if y is not None:
            raise ValueError("labels y given to an unconditional generator (num_classes=None)")
        return z
    if y is None:
        raise ValueError(f"a class-conditional generator needs labels y in [0, {embed.num_embeddings})")
    _check_labels(y, embed.num_embeddings, z.shape[0])
    return z * (1.0 + embed(y))


def _project(h: Tensor, out: nn.Linear, embed: nn.Embedding | None, y: Tensor | None) -> Tensor:
    score = out(h).squeeze(1)
    if embed is None:
        if y is not None:
            raise ValueError("labels y given to an unconditional critic (num_classes=None)")
        return score
    if y is None:
        raise ValueError(f"a class-conditional critic needs labels y in [0, {embed.num_embeddings})")
    _check_labels(y, embed.num_embeddings, h.shape[0])
    return score + (embed(y) * h).sum(1)


def _check_labels(y: Tensor, num_classes: int, batch: int) -> None:
    if y.shape != (batch,) or y.dtype != torch.long:
        raise ValueError(f"labels y must be int64 of shape ({batch},), got {y.dtype} {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels y must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )


def _positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


# --- losses --------------------------------------------------------------------------------------
def critic_loss(d_real: Tensor, d_fake: Tensor, loss: str) -> Tensor:
    """The discriminator's/critic's scalar loss from its outputs (B,) on real and generated data."""
    _check_loss(loss)
    if loss == "wgan":
        return d_fake.mean() - d_real.mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()  # -log D(x) - log(1 - D(G(z)))


def generator_loss(d_fake: Tensor, loss: str) -> Tensor:
    """The generator's scalar loss from the critic's outputs (B,) on generated data."""
    _check_loss(loss)
    if loss == "wgan":
        return -d_fake.mean()
    if loss == "minimax":
        return -F.softplus(d_fake).mean()  # log(1 - sigmoid(d)) = -softplus(d)
    return F.softplus(-d_fake).mean()  # -log sigmoid(d)


def clc_penalty(d_real: Tensor, d_fake: Tensor, weight: float) -> Tensor:
    """CLC-GAN's closed-loop control term ``weight / 2 * (E d_real^2 + E d_fake^2)``."""
    return 0.5 * weight * (d_real.pow(2).mean() + d_fake.pow(2).mean())


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, *, y: Tensor | None = None) -> Tensor:
    """WGAN-GP's ``E (|grad_x D(x_hat)|_2 - 1)^2`` at ``x_hat = u real + (1 - u) fake``,
    u ~ U(0, 1) per sample (``y``: labels passed to a class-conditional critic)."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    u = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = (u * real.detach() + (1 - u) * fake.detach()).requires_grad_(True)
    out = critic(x_hat) if y is None else critic(x_hat, y)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown GAN loss {loss!r}; expected one of {LOSSES}")


# --- the model and its game ----------------------------------------------------------------------
class GAN(nn.Module):
    """A generator and a critic; ``sample(n)`` draws z ~ N(0, I) and returns ``generator(z)``."""

    def __init__(self, generator: nn.Module, critic: nn.Module, latent_dim: int) -> None:
        super().__init__()
        _positive(latent_dim=latent_dim)
        self.generator, self.critic, self.latent_dim = generator, critic, latent_dim

    def noise(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I) of shape (n, latent_dim) on the model's device."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, *, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n samples from the generator (in eval mode, restoring its mode after)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        was = self.generator.training
        self.generator.eval()
        try:
            z = self.noise(n, generator=generator)
            return self.generator(z) if y is None else self.generator(z, y)
        finally:
            self.generator.train(was)


@dataclass
class GANConfig:
    """One adversarial recipe.

    Attributes:
        loss: ``"minimax" | "nonsaturating" | "wgan"``.
        n_critic: critic steps per generator step.
        clip: WGAN weight clipping bound c (``None``: no clipping).
        gp: WGAN-GP penalty weight (0: none).
        clc: CLC-GAN control weight lambda (0: none).
        lr_critic, lr_generator: learning rates; ``betas``: Adam betas; ``optimizer``: ``"adam"``
            or ``"rmsprop"`` (the weight-clipped WGAN's choice).
    """

    loss: str = "nonsaturating"
    n_critic: int = 1
    clip: float | None = None
    gp: float = 0.0
    clc: float = 0.0
    lr_critic: float = 2e-4
    lr_generator: float = 2e-4
    betas: tuple[float, float] = field(default=(0.5, 0.999))
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        _check_loss(self.loss)
        if not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ValueError(f"n_critic must be a positive int, got {self.n_critic!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip}")
        for name in ("gp", "clc"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))


# The families' reference recipes (DCGAN; WGAN: RMSprop 5e-5, c = 0.01, 5 critic steps; WGAN-GP:
# Adam 1e-4, betas (0, 0.9), lambda = 10, 5 critic steps). CLC-GAN is the WGAN loss with the
# closed-loop control in place of clipping or a penalty: the control bounds the critic's outputs
# (D -> (p - p_G) / clc in the function-space dynamics), which is what keeps the game stable.
GAN_FAMILIES: dict[str, GANConfig] = {
    "gan": GANConfig(loss="nonsaturating"),
    "gan_minimax": GANConfig(loss="minimax"),
    "wgan": GANConfig(
        loss="wgan", n_critic=5, clip=0.01, lr_critic=5e-5, lr_generator=5e-5, optimizer="rmsprop"
    ),
    "wgan_gp": GANConfig(
        loss="wgan", n_critic=5, gp=10.0, lr_critic=1e-4, lr_generator=1e-4, betas=(0.0, 0.9)
    ),
    "clc_gan": GANConfig(
        loss="wgan", n_critic=5, clc=1.0, lr_critic=1e-4, lr_generator=1e-4, betas=(0.0, 0.9)
    ),
}


class GANGame(Game):
    """The critic/generator game of a :class:`GAN`: ``n_critic`` critic steps, then one generator step.

    Batches are real data ``x`` or tuples whose first item is ``x`` (labels are ignored). The EMA,
    when the Trainer keeps one, averages the generator.
    """

    ema_player = "generator"

    def __init__(self, config: GANConfig | str = "gan") -> None:
        if isinstance(config, str):
            if config not in GAN_FAMILIES:
                raise ValueError(f"unknown GAN family {config!r}; expected one of {sorted(GAN_FAMILIES)}")
            config = GAN_FAMILIES[config]
        self.config = config
        self.cycle = ("critic",) * config.n_critic + ("generator",)

    def players(self, model: nn.Module) -> dict[str, Player]:
        if not isinstance(model, GAN):
            raise TypeError(f"GANGame plays a GAN, got {type(model).__name__}")
        c = self.config
        return {
            "critic": Player(
                model.critic, lr=c.lr_critic, betas=c.betas, weight_decay=0.0, optimizer=c.optimizer
            ),
            "generator": Player(
                model.generator, lr=c.lr_generator, betas=c.betas, weight_decay=0.0, optimizer=c.optimizer
            ),
        }

    def loss(self, player: str, model: GAN, batch: Any) -> dict[str, Tensor]:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        c = self.config
        z = model.noise(real.shape[0])
        if player == "generator":
            return {"loss": generator_loss(model.critic(model.generator(z)), c.loss)}
        with torch.no_grad():
            fake = model.generator(z)
        d_real, d_fake = model.critic(real), model.critic(fake)
        loss = critic_loss(d_real, d_fake, c.loss)
        logs = {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
        if c.gp > 0:
            gp = gradient_penalty(model.critic, real, fake)
            loss = loss + c.gp * gp
            logs["gp"] = gp.detach()
        if c.clc > 0:
            loss = loss + clc_penalty(d_real, d_fake, c.clc)
        return {"loss": loss, **logs}

    def after_step(self, player: str, model: nn.Module) -> None:
        if player == "critic" and self.config.clip is not None:
            with torch.no_grad():
                for p in model.critic.parameters():
                    p.clamp_(-self.config.clip, self.config.clip)
