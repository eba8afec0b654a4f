"""Training: the Accelerate-based :class:`Trainer`, its config, the parameter :class:`EMA`, devices."""

from .ema import EMA
from .trainer import LossFn, Trainer, TrainerConfig, latest_checkpoint, resolve_device

__all__ = ["EMA", "LossFn", "Trainer", "TrainerConfig", "latest_checkpoint", "resolve_device"]
