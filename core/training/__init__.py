"""Training: the Accelerate-based :class:`Trainer` (one model or a several-player :class:`Game`), its
config, the parameter :class:`EMA`, devices."""

from .ema import EMA
from .game import Game, Player
from .trainer import LossFn, Trainer, TrainerConfig, latest_checkpoint, resolve_device

__all__ = [
    "EMA",
    "Game",
    "LossFn",
    "Player",
    "Trainer",
    "TrainerConfig",
    "latest_checkpoint",
    "resolve_device",
]
