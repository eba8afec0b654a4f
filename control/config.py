"""Maze2D run configurations; presets ``quick`` (CPU minutes) and ``paper`` (Diffuser's setup)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from core.config import preset as core_preset

from .maze2d.mazes import get_maze

__all__ = ["Maze2DConfig", "PRESETS", "preset"]


@dataclass
class Maze2DConfig:
    """Everything a Maze2D run needs.

    Attributes:
        maze: ``umaze`` | ``medium`` | ``large``.
        dataset: a D4RL HDF5 path or ``~/.d4rl`` name, ``minari:<id or folder>``, or None to
            generate ``data_steps`` transitions with seed ``data_seed`` (cached under ``$ANNEAL_DATA``).
        horizon, diffusion_steps: None = Diffuser's value for the maze (128/256/384, 64/256/256).
        dim, dim_mults: Temporal U-Net width and multipliers.
        cond_input: the U-Net also receives the start and goal states broadcast along the horizon
            and each step's position (``planner.cond_features``); Diffuser's network does not.
        train_steps, batch_size, lr, ema_decay: optimisation (AdamW through ``core.Trainer``).
        warmup_steps, lr_schedule: linear warm-up, then ``constant`` or ``cosine`` decay to 0.
        ema_warmup: EMA decay ``min(ema_decay, (1 + n) / (10 + n))`` after n updates.
        episodes: evaluation episodes per task (parallel environments).
        solver_steps, solver_order: ``dpm_solver++`` steps and order (multistep); NFE = steps + 1
            (a final x0 prediction, as DDPM's T steps end with one).
        replan_every: replan every this many env steps (0: plan once, as Diffuser's maze2d).
        threads: torch CPU threads for this run.
    """

    maze: str = "umaze"
    dataset: str | None = None
    data_steps: int = 1_000_000
    data_seed: int = 0
    horizon: int | None = None
    diffusion_steps: int | None = None
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 4, 8)
    cond_input: bool = False
    train_steps: int = 2_000_000
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    ema_decay: float = 0.995
    ema_warmup: bool = False
    episodes: int = 50
    solver_steps: int = 15
    solver_order: int = 2
    replan_every: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    ckpt_every: int = 5000
    mazes: list[str] = field(default_factory=lambda: ["umaze"])

    def __post_init__(self) -> None:
        spec = get_maze(self.maze)
        self.maze = spec.name
        self.horizon = self.horizon or spec.horizon
        self.diffusion_steps = self.diffusion_steps or spec.diffusion_steps
        self.dim_mults = tuple(self.dim_mults)
        factor = 2 ** (len(self.dim_mults) - 1)
        if self.horizon % factor:
            raise ValueError(
                f"horizon {self.horizon} must be divisible by {factor} for dim_mults {self.dim_mults}"
            )
        for name in (
            "train_steps",
            "batch_size",
            "episodes",
            "solver_steps",
            "diffusion_steps",
            "data_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 1 <= self.solver_order <= 3:
            raise ValueError(f"solver_order must be 1, 2 or 3, got {self.solver_order}")
        for m in self.mazes:
            get_maze(m)

    def replace(self, **changes) -> Maze2DConfig:
        """A copy with ``changes``; maze-dependent defaults are re-derived when the maze changes."""
        base = dataclasses.asdict(self)
        if "maze" in changes:
            base.update(horizon=None, diffusion_steps=None)
        base.update({k: v for k, v in changes.items() if v is not None})
        return Maze2DConfig(**base)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, Maze2DConfig] = {
    # CPU: a narrower U-Net (dim_mults (1, 2, 4)) that also receives the start and goal
    # (cond_input), 6k steps at batch 32 on one thread, lr 1e-3 with warm-up and cosine decay.
    "quick": Maze2DConfig(
        maze="umaze",
        data_steps=1_000_000,
        dim_mults=(1, 2, 4),
        cond_input=True,
        train_steps=6_000,
        lr=1e-3,
        warmup_steps=250,
        lr_schedule="cosine",
        ema_decay=0.999,
        ema_warmup=True,
        ckpt_every=1000,
        threads=1,
        replan_every=25,
        mazes=["umaze"],
    ),
    # Diffuser's Maze2D setup (GPU): TemporalUnet 32 x (1, 4, 8), batch 32, lr 2e-4, 2M steps.
    "paper": Maze2DConfig(
        maze="umaze",
        data_steps=1_000_000,
        dim_mults=(1, 4, 8),
        train_steps=2_000_000,
        ckpt_every=50_000,
        mazes=["umaze", "medium", "large"],
    ),
}

PAPER_DATA_STEPS = {"umaze": 1_000_000, "medium": 2_000_000, "large": 4_000_000}


def preset(name: str, **changes) -> Maze2DConfig:
    """The named preset with ``changes`` applied (None values are ignored); a new maze re-derives
    the maze-dependent defaults (:meth:`Maze2DConfig.replace`)."""
    cfg = core_preset(PRESETS, name)
    if name == "paper" and "data_steps" not in changes:
        changes["data_steps"] = PAPER_DATA_STEPS[get_maze(changes.get("maze") or cfg.maze).name]
    return cfg.replace(**changes)
