"""Class-conditional WGAN-GP with an auxiliary class head on the critic (AC-WGAN-GP).

The critic maps x (B, D) to a Wasserstein score (B,) and class logits (B, C) from shared
features (Odena et al. 2017's auxiliary classifier on a WGAN-GP critic, as in the critic of
Triple-Memory Networks). Losses, for real pairs (x, y), generated pairs (G(z, y'), y'):

* critic: ``E D(fake) - E D(real) + gp * GP + cls * CE(head(real), y)``;
* generator: ``-E D(fake) + cls * CE(head(fake), y')``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .gan import _project, gradient_penalty

__all__ = ["ClassHeadCritic", "acwgan_critic_loss", "acwgan_generator_loss"]


class ClassHeadCritic(nn.Module):
    """x (B, in_dim) [, y (B,)] -> (score (B,), logits (B, num_classes)); LeakyReLU MLP trunk shared
    by both. ``projection=True`` also conditions the score on labels y by projection (Miyato &
    Koyama 2018): ``score + <embed(y), h>``; without y it returns the label-free part."""

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int = 256, depth: int = 2, *, projection: bool = False
    ) -> None:
        super().__init__()
        for name, value in {
            "in_dim": in_dim,
            "num_classes": num_classes,
            "hidden": hidden,
            "depth": depth,
        }.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_dim, self.num_classes = in_dim, num_classes
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(width, 1)
        self.head = nn.Linear(width, num_classes)
        self.embed = nn.Embedding(num_classes, width) if projection else None

    @property
    def projection(self) -> bool:
        return self.embed is not None

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self._features(x)
        if y is None:
            return self.score(h).squeeze(1), self.head(h)
        return _project(h, self.score, self.embed, y), self.head(h)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes) of x (B, in_dim)."""
        return self.head(self._features(x))

    def _features(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        return self.features(x)


def acwgan_critic_loss(
    critic: ClassHeadCritic,
    real: Tensor,
    y_real: Tensor,
    fake: Tensor,
    *,
    y_fake: Tensor | None = None,
    gp: float = 10.0,
    cls: float = 1.0,
) -> dict[str, Tensor]:
    """The critic's loss and its parts: ``{"loss", "wasserstein", "gp", "cls"}`` (scalars).

    ``real``, ``fake``: (B, D) with the same shape; ``y_real``: (B,) int64 labels of ``real``;
    ``y_fake``: the labels ``fake`` was drawn with, for a projection critic (whose penalty is taken
    at the real labels, between real and fake images).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    if critic.projection and y_fake is None:
        raise ValueError("a projection critic needs y_fake, the labels the fake images were drawn with")
    yr, yf = (y_real, y_fake) if critic.projection else (None, None)
    d_real, logits = critic(real, yr)
    d_fake, _ = critic(fake.detach(), yf)

    def score_only(x: Tensor) -> Tensor:
        return critic(x, yr)[0]

    w = d_fake.mean() - d_real.mean()
    pen = gradient_penalty(score_only, real, fake)
    ce = F.cross_entropy(logits, y_real)
    return {
        "loss": w + gp * pen + cls * ce,
        "wasserstein": -w.detach(),
        "gp": pen.detach(),
        "cls": ce.detach(),
    }


def acwgan_generator_loss(
    critic: ClassHeadCritic, fake: Tensor, y_fake: Tensor, *, cls: float = 1.0
) -> Tensor:
    """``-E D(fake) + cls * CE(head(fake), y_fake)`` for fake (B, D) drawn with labels y_fake (B,)."""
    d_fake, logits = critic(fake, y_fake if critic.projection else None)
    return -d_fake.mean() + cls * F.cross_entropy(logits, y_fake)
