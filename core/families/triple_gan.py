"""Triple-GAN (Li, Xu, Zhu, Zhang 2017): a classifier C, a class-conditional generator G and a
discriminator D over (x, y) pairs, for semi-supervised learning from few labels.

With d(x, y) the discriminator's logit, D = sigmoid(d), and the game value

    U = E_{(x,y)~p}[log D(x, y)] + alpha E_{x~p(x), y~p_c(y|x)}[log(1 - D(x, y))]
        + (1 - alpha) E_{y~p(y), x~p_g(x|y)}[log(1 - D(x, y))],

D ascends U, while C and G descend it, C also minimising the cross-entropy terms
``R_L = E_{(x,y) labelled}[-log p_c(y|x)]`` and ``alpha_p * R_P``, ``R_P = E_{p_g}[-log p_c(y|x)]``
(the pseudo-discriminative loss on generated pairs). The expectation over C's labels is taken
exactly, ``sum_y p_c(y|x) log(1 - D(x, y))``, which costs one discriminator pass for all labels
with a projection discriminator (:meth:`ProjectionCritic.all_scores`). The generator uses the
non-saturating form ``-log D(G(z, y), y)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training.game import Game, Player
from .gan import ConvCritic, MLPCritic

__all__ = ["ConvClassifier", "MLPClassifier", "TripleGAN", "TripleGANGame", "all_class_scores"]


class ConvClassifier(nn.Module):
    """Images (B, channels, size, size) -> class logits (B, num_classes): two conv + pool blocks,
    dropout, two linear layers (size divisible by 4)."""

    def __init__(self, num_classes: int = 10, channels: int = 1, size: int = 28, width: int = 32) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"ConvClassifier size must be divisible by 4, got {size}")
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(2 * width * (size // 4) ** 2, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPClassifier(nn.Module):
    """x (B, in_dim) -> class logits (B, num_classes)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.net(x))


def all_class_scores(critic: ConvCritic | MLPCritic, x: Tensor) -> Tensor:
    """A projection critic's logits d(x, y) for every label y at once: (B, num_classes)."""
    if getattr(critic, "embed", None) is None:
        raise ValueError("all_class_scores needs a class-conditional critic (num_classes set)")
    h = critic.features(x)
    return critic.out(h) + h @ critic.embed.weight.T


class TripleGAN(nn.Module):
    """Classifier, conditional generator and pair discriminator, plus the few labelled examples.

    Args:
        classifier: x -> logits (B, K).
        generator: ``generator(z, y)`` -> x, class-conditional over K classes.
        discriminator: a class-conditional :class:`ConvCritic` / :class:`MLPCritic` (projection).
        latent_dim: the generator's noise width.
        labeled_x, labeled_y: the labelled set (N, ...) and (N,) int64 in [0, K); kept as buffers
            (they travel with the model and its checkpoints).
    """

    def __init__(
        self,
        classifier: nn.Module,
        generator: nn.Module,
        discriminator: ConvCritic | MLPCritic,
        latent_dim: int,
        labeled_x: Tensor,
        labeled_y: Tensor,
    ) -> None:
        super().__init__()
        k = getattr(discriminator.embed, "num_embeddings", None) if hasattr(discriminator, "embed") else None
        if k is None:
            raise ValueError("the discriminator must be class-conditional (num_classes set)")
        if labeled_y.dim() != 1 or labeled_y.dtype != torch.long or labeled_x.shape[0] != labeled_y.shape[0]:
            raise ValueError(
                f"labeled_x (N, ...) and labeled_y (N,) int64 must match, got {tuple(labeled_x.shape)} and "
                f"{labeled_y.dtype} {tuple(labeled_y.shape)}"
            )
        if labeled_y.numel() == 0 or int(labeled_y.min()) < 0 or int(labeled_y.max()) >= k:
            raise ValueError(f"labeled_y must be non-empty with labels in [0, {k})")
        self.classifier, self.generator, self.discriminator = classifier, generator, discriminator
        self.latent_dim, self.num_classes = latent_dim, k
        self.register_buffer("labeled_x", labeled_x.float().clone())
        self.register_buffer("labeled_y", labeled_y.clone())
        self.register_buffer("classifier_steps", torch.zeros((), dtype=torch.long))  # R_P's clock

    def sample(self, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Generated x for labels y (B,), with the generator in eval mode."""
        was = self.generator.training
        self.generator.eval()
        try:
            with torch.no_grad():
                z = torch.randn(y.shape[0], self.latent_dim, device=y.device, generator=generator)
                return self.generator(z, y)
        finally:
            self.generator.train(was)


class TripleGANGame(Game):
    """Triple-GAN's three players, each stepping once per cycle: discriminator, classifier, generator.

    Batches are unlabelled x (a tensor, or a tuple whose first item is x; labels in the tuple are
    ignored). Each step also draws ``labeled_batch`` labelled pairs from the model's labelled set.

    Args:
        alpha: weight of C's pairs in the mixture (1 - alpha for G's), in [0, 1].
        alpha_p: weight of the pseudo-discriminative loss R_P on generated pairs.
        rp_start: classifier steps before R_P is switched on (G's pairs are noise at first).
        lr_*: learning rates; all players use Adam with ``betas``.
    """

    cycle = ("discriminator", "classifier", "generator")
    ema_player = "generator"

    def __init__(
        self,
        alpha: float = 0.5,
        alpha_p: float = 0.1,
        rp_start: int = 0,
        labeled_batch: int = 64,
        lr_discriminator: float = 3e-4,
        lr_classifier: float = 3e-4,
        lr_generator: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if alpha_p < 0 or rp_start < 0 or labeled_batch < 1:
            raise ValueError(
                "alpha_p and rp_start must be >= 0 and labeled_batch >= 1, got "
                f"{alpha_p}, {rp_start}, {labeled_batch}"
            )
        self.alpha, self.alpha_p, self.rp_start, self.labeled_batch = alpha, alpha_p, rp_start, labeled_batch
        self.lrs = {"discriminator": lr_discriminator, "classifier": lr_classifier, "generator": lr_generator}
        self.betas = betas

    def players(self, model: nn.Module) -> dict[str, Player]:
        if not isinstance(model, TripleGAN):
            raise TypeError(f"TripleGANGame plays a TripleGAN, got {type(model).__name__}")
        return {
            name: Player(
                getattr(model, name), lr=self.lrs[name], betas=self.betas, weight_decay=0.0, optimizer="adam"
            )
            for name in self.cycle
        }

    def _labeled(self, model: TripleGAN) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, model.labeled_y.shape[0], (self.labeled_batch,), device=model.labeled_y.device)
        return model.labeled_x[idx], model.labeled_y[idx]

    def _fake(self, model: TripleGAN, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, model.num_classes, (n,), device=device)
        z = torch.randn(n, model.latent_dim, device=device)
        return model.generator(z, y), y

    def loss(self, player: str, model: TripleGAN, batch: Any) -> dict[str, Tensor]:
        x_u = batch[0] if isinstance(batch, (list, tuple)) else batch
        n, a = x_u.shape[0], self.alpha
        if player == "discriminator":
            x_l, y_l = self._labeled(model)
            with torch.no_grad():
                p_c = F.softmax(model.classifier(x_u), dim=1)
                x_g, y_g = self._fake(model, n, x_u.device)
            d = model.discriminator
            real = F.softplus(-d(x_l, y_l)).mean()
            c_pairs = (p_c * F.softplus(all_class_scores(d, x_u))).sum(1).mean()
            g_pairs = F.softplus(d(x_g, y_g)).mean()
            return {"loss": real + a * c_pairs + (1 - a) * g_pairs, "d_real": real.detach()}
        if player == "classifier":
            x_l, y_l = self._labeled(model)
            r_l = F.cross_entropy(model.classifier(x_l), y_l)
            logits_u = model.classifier(x_u)
            p_c = F.softmax(logits_u, dim=1)
            adv = -(p_c * F.softplus(all_class_scores(model.discriminator, x_u))).sum(1).mean()  # log(1 - D)
            loss = a * adv + r_l
            logs = {"r_l": r_l.detach()}
            if self.alpha_p > 0 and int(model.classifier_steps) >= self.rp_start:
                with torch.no_grad():
                    x_g, y_g = self._fake(model, n, x_u.device)
                r_p = F.cross_entropy(model.classifier(x_g), y_g)
                loss = loss + self.alpha_p * r_p
                logs["r_p"] = r_p.detach()
            return {"loss": loss, **logs}
        x_g, y_g = self._fake(model, n, x_u.device)
        return {"loss": F.softplus(-model.discriminator(x_g, y_g)).mean()}

    def after_step(self, player: str, model: nn.Module) -> None:
        if player == "classifier":
            model.classifier_steps += 1
