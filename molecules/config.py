"""Configs and presets: ``quick`` (CPU, heavy atoms, one property) and ``paper`` (EDM's sizes, GPU)."""

from __future__ import annotations

from dataclasses import dataclass

from .data import PROPERTIES

__all__ = ["MoleculesConfig", "PRESETS"]


@dataclass
class MoleculesConfig:
    """Everything a run needs.

    Sizes: ``hidden`` / ``layers`` for EDM's dynamics, ``reg_*`` for the time-dependent guidance
    regressors, ``eval_*`` for the independent evaluation classifier (trained on the other half
    of QM9's training set). ``num_steps`` is T of EDM's polynomial schedule; ``sample_steps`` the
    number of ancestral steps used when sampling (a sub-grid of the T steps); EEGSDE's energy
    acts for t <= ``guide_until`` (a fraction of the schedule's time); the regressors train on
    clean molecules for ``reg_clean_fraction`` of their steps, then on noise up to ``guide_until``.
    ``properties`` lists the properties benchmarked one at a time (conditional EDM vs EEGSDE).
    """

    remove_h: bool = True
    properties: tuple[str, ...] = ("gap",)
    backbone: str = "egnn"
    hidden: int = 64
    layers: int = 4
    num_steps: int = 500
    batch_size: int = 64
    edm_steps: int = 32_000
    edm_lr: float = 3e-4
    ema_decay: float = 0.999
    reg_hidden: int = 64
    reg_layers: int = 4
    reg_steps: int = 6000
    reg_lr: float = 5e-4
    reg_clean_fraction: float = 0.5
    eval_hidden: int = 64
    eval_layers: int = 4
    eval_steps: int = 3000
    eval_lr: float = 5e-4
    num_targets: int = 1000
    sample_steps: int = 100
    sample_batch: int = 400
    scales: tuple[float, ...] = (1.0,)
    guide_until: float = 0.6
    xtb_calibration: int = 300
    speed_batch: int = 32
    speed_repeats: int = 5
    subset: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        self.properties = tuple(self.properties)
        self.scales = tuple(float(s) for s in self.scales)
        for p in self.properties:
            if p not in PROPERTIES:
                raise ValueError(f"unknown property {p!r}; expected one of {PROPERTIES}")
        positive = ("hidden", "layers", "num_steps", "batch_size", "edm_steps", "reg_steps", "eval_steps")
        for name in (*positive, "num_targets", "sample_steps", "sample_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.reg_clean_fraction <= 1.0:
            raise ValueError(f"reg_clean_fraction must be in [0, 1], got {self.reg_clean_fraction}")
        if not 0.0 < self.guide_until <= 1.0:
            raise ValueError(f"guide_until must be in (0, 1], got {self.guide_until}")
        if self.sample_steps > self.num_steps - 1:
            raise ValueError(
                f"sample_steps must be <= num_steps - 1 = {self.num_steps - 1}, got {self.sample_steps}"
            )


PRESETS = {
    "quick": MoleculesConfig(),
    "demo": MoleculesConfig(
        hidden=32,
        layers=3,
        num_steps=200,
        edm_steps=300,
        reg_hidden=32,
        reg_layers=2,
        reg_steps=200,
        eval_hidden=32,
        eval_layers=2,
        eval_steps=150,
        num_targets=48,
        sample_steps=40,
        sample_batch=48,
        xtb_calibration=0,
        subset=4000,
        speed_repeats=0,
    ),
    "paper": MoleculesConfig(
        remove_h=False,
        properties=PROPERTIES,
        hidden=256,
        layers=9,
        num_steps=1000,
        edm_steps=1_700_000,
        edm_lr=1e-4,
        ema_decay=0.9999,
        reg_hidden=192,
        reg_layers=7,
        reg_steps=300_000,
        reg_lr=1e-4,
        eval_hidden=128,
        eval_layers=7,
        eval_steps=300_000,
        eval_lr=5e-4,
        num_targets=10_000,
        sample_steps=999,
        sample_batch=500,
        xtb_calibration=1000,
        speed_batch=64,
    ),
}
