"""Several-player training: named players, each with its own optimizer, updated in a fixed cycle.

A :class:`Game` tells the :class:`~core.training.Trainer` which parameters each player owns, in
which order the players take optimizer steps (``cycle``, e.g. five critic steps then one generator
step for WGAN), the loss of each player, and what happens after each of its steps (weight clipping,
a target-network update). One Trainer step is one optimizer step of one player; the position in
the cycle is part of every checkpoint, so a run resumes mid-cycle exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "Game", "Player", "SingleModel"]

OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")


@dataclass
class Player:
    """One player: the module whose trainable parameters it updates and its optimizer settings.

    ``lr``, ``betas`` and ``weight_decay`` left as ``None`` take the :class:`TrainerConfig` values.
    ``optimizer`` is ``"adamw" | "adam" | "rmsprop" | "sgd"`` (RMSprop for weight-clipped WGAN).
    """

    module: nn.Module
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise TypeError(f"Player.module must be an nn.Module, got {type(self.module).__name__}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Player.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"Player.lr must be > 0, got {self.lr}")

    def build_optimizer(
        self, lr: float, betas: tuple[float, float], weight_decay: float
    ) -> torch.optim.Optimizer:
        """The optimizer over the module's parameters with ``requires_grad`` (ValueError if none)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"player module {type(self.module).__name__} has no trainable parameters")
        lr = self.lr if self.lr is not None else lr
        betas = self.betas if self.betas is not None else betas
        wd = self.weight_decay if self.weight_decay is not None else weight_decay
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
        if self.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)


class Game:
    """Base class of a several-player game trained by :class:`~core.training.Trainer`.

    Subclasses set ``cycle`` (player names in update order, repeated for the whole run) and
    ``ema_player`` (the player whose parameters the Trainer's EMA averages, e.g. the generator;
    ``None`` for none), and implement :meth:`players` and :meth:`loss`.
    """

    cycle: Sequence[str] = ()
    ema_player: str | None = None

    def players(self, model: nn.Module) -> Mapping[str, Player]:
        """The players of ``model`` by name."""
        raise NotImplementedError

    def loss(self, player: str, model: nn.Module, batch: Any) -> torch.Tensor | Mapping[str, torch.Tensor]:
        """The scalar loss ``player`` minimises on ``batch`` (or a dict with ``"loss"`` and logs)."""
        raise NotImplementedError

    def after_step(self, player: str, model: nn.Module) -> None:
        """Called after each optimizer step of ``player`` (and after the EMA update)."""


class SingleModel(Game):
    """The one-player game of ``Trainer(model, loss_fn, ...)``: player ``"model"`` owns every parameter."""

    cycle = ("model",)
    ema_player = "model"

    def __init__(
        self, loss_fn: Callable[[nn.Module, Any], Any], after_step: Callable[[nn.Module], None] | None
    ) -> None:
        self.loss_fn = loss_fn
        self.hook = after_step

    def players(self, model: nn.Module) -> Mapping[str, Player]:
        return {"model": Player(model)}

    def loss(self, player: str, model: nn.Module, batch: Any) -> Any:
        return self.loss_fn(model, batch)

    def after_step(self, player: str, model: nn.Module) -> None:
        if self.hook is not None:
            self.hook(model)
