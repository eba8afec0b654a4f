"""Cached, resumable training stages of a run folder.

``<run>/edm_<prop>/``, ``<run>/regressor_<prop>/`` and ``<run>/evaluator_<prop>/`` each hold the
Trainer's checkpoints and log; the finished model is saved with ``save_pretrained`` in ``model/``
and reused on the next call. An interrupted stage resumes from its last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import core
from core.checkpoint import from_pretrained

from .config import MoleculesConfig
from .data import QM9, elements, load_qm9
from .models import EDMDynamics, PropertyRegressor, polynomial_schedule
from .pipeline import dataset_state, train_edm, train_regressor

__all__ = [
    "STAGES",
    "Splits",
    "load_splits",
    "stage_edm",
    "stage_evaluator",
    "stage_regressor",
    "trainer_config",
]

STAGES = ("edm", "regressor", "evaluator")


@dataclass
class Splits:
    """The generator's half (EDM, regressors), the evaluator's half, and the test set."""

    generator: QM9
    evaluator: QM9
    test: QM9

    def stats(self, prop: str) -> tuple[float, float]:
        """Mean and standard deviation of a property on the generator's half."""
        v = self.generator.property(prop).double()
        return float(v.mean()), float(v.std())


def load_splits(cfg: MoleculesConfig) -> Splits:
    data = load_qm9(cfg.remove_h)
    parts = [data.split(k) for k in ("train_second_half", "train_first_half", "test")]
    if cfg.subset is not None:
        parts = [p.subset(slice(0, cfg.subset)) for p in parts]
    return Splits(*parts)


def trainer_config(cfg: MoleculesConfig, out: Path, steps: int, lr: float, seed: int) -> core.TrainerConfig:
    """The Trainer settings of every stage.

    The EMA warms up (the Trainer's default: decay ``min(ema_decay, (1 + n) / (10 + n))`` after n
    updates): a run of a few thousand steps with a fixed decay of 0.999 would keep
    ``0.999^steps`` of the random initialisation (5% after 3,000 steps) in the averaged weights
    that sampling uses, and such a network's noise prediction at high noise makes ancestral sampling diverge.
    """
    return core.TrainerConfig(
        steps=steps,
        lr=lr,
        ema_decay=cfg.ema_decay,
        out_dir=out,
        ckpt_every=max(100, min(1000, steps // 5)),
        log_every=min(100, steps),
        seed=seed,
        device=cfg.device,
        tensorboard=False,
        keep_last=1,
    )


def _normalised(splits_part: QM9, props: tuple[str, ...], splits: Splits) -> Tensor:
    cols = []
    for p in props:
        mean, std = splits.stats(p)
        cols.append((splits_part.property(p) - mean) / std)
    return torch.stack(cols, 1).float()


def stage_edm(cfg: MoleculesConfig, run: Path, props: tuple[str, ...], splits: Splits) -> core.Denoiser:
    """Conditional EDM on ``props`` (normalised, as the context vector), trained on the generator half."""
    out = run / f"edm_{'+'.join(props)}"
    schedule = polynomial_schedule(cfg.num_steps)
    if (out / "model" / "config.json").exists():
        net = from_pretrained(EDMDynamics, out / "model")
        return core.Denoiser(net, schedule).eval()
    k = len(elements(cfg.remove_h))
    torch.manual_seed(cfg.seed)  # the initial weights, like the training, follow the seed
    net = EDMDynamics(k, cfg.hidden, cfg.layers, cfg.num_steps, context_dim=len(props), backbone=cfg.backbone)
    x, mask = dataset_state(splits.generator)
    ctx = _normalised(splits.generator, props, splits)
    tc = trainer_config(cfg, out, cfg.edm_steps, cfg.edm_lr, cfg.seed)
    den = train_edm(net, x, mask, ctx, tc, cfg.batch_size)
    net.save_pretrained(out / "model")
    return den


def stage_regressor(cfg: MoleculesConfig, run: Path, prop: str, splits: Splits) -> PropertyRegressor:
    """The time-dependent guidance regressor of ``prop`` (generator half)."""
    return _regressor(cfg, run / f"regressor_{prop}", prop, splits, time_dependent=True)


def stage_evaluator(cfg: MoleculesConfig, run: Path, prop: str, splits: Splits) -> PropertyRegressor:
    """The independent clean-molecule evaluator of ``prop`` (the other half)."""
    return _regressor(cfg, run / f"evaluator_{prop}", prop, splits, time_dependent=False)


def _regressor(
    cfg: MoleculesConfig, out: Path, prop: str, splits: Splits, time_dependent: bool
) -> PropertyRegressor:
    if (out / "model" / "config.json").exists():
        return from_pretrained(PropertyRegressor, out / "model").eval()
    part = splits.generator if time_dependent else splits.evaluator
    mean, std = splits.stats(prop)
    k = len(elements(cfg.remove_h))
    hidden, layers = (
        (cfg.reg_hidden, cfg.reg_layers) if time_dependent else (cfg.eval_hidden, cfg.eval_layers)
    )
    steps, lr = (cfg.reg_steps, cfg.reg_lr) if time_dependent else (cfg.eval_steps, cfg.eval_lr)
    seed = cfg.seed + (1 if time_dependent else 2)
    torch.manual_seed(seed)  # the initial weights, like the training, follow the seed
    net = PropertyRegressor(k, hidden, layers, cfg.num_steps, time_dependent, mean, std)
    x, mask = dataset_state(part)
    y = ((part.property(prop).double() - mean) / std).float()
    tc = trainer_config(cfg, out, steps, lr, seed)
    train_regressor(net, x, mask, y, tc, cfg.batch_size, cfg.reg_clean_fraction, cfg.guide_until)
    net.save_pretrained(out / "model")
    return net
