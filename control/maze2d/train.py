"""Train a Diffuser planner on a Maze2D dataset through ``core.Trainer``; save it as a pretrained folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from core.files import read_json, write_json
from core.nets.temporal_unet import TemporalUnet
from core.training import Trainer, TrainerConfig

from ..config import Maze2DConfig
from ..sequence import LimitsNormalizer, SequenceDataset, episode_bounds
from .dataset import diffuser_timeouts, load_maze2d, make_dataset
from .mazes import MazeSpec, get_maze
from .planner import build_denoiser, diffuser_loss

__all__ = ["build_sequence_dataset", "train", "load_model"]

MODEL_DIR = "model"
PLANNER_FILE = "planner.json"


def build_sequence_dataset(cfg: Maze2DConfig, maze: MazeSpec, progress: bool = False) -> SequenceDataset:
    """Load or generate the data, segment it as Diffuser does and wrap it in horizon windows."""
    source = cfg.dataset or make_dataset(maze, cfg.data_steps, cfg.data_seed, progress=progress)
    data = load_maze2d(source, maze)
    obs = data["observations"]
    goal = maze.cell_center(np.array(maze.goal_cell))
    timeouts = diffuser_timeouts(obs[:, :2], goal) | data["timeouts"] & data["terminals"]
    return SequenceDataset(obs, data["actions"], episode_bounds(timeouts), cfg.horizon)


def train(cfg: Maze2DConfig, run_dir: str | Path, progress: bool = True) -> Path:
    """Train on ``cfg.maze`` and write ``run_dir/model`` (U-Net weights) and ``run_dir/planner.json``."""
    run_dir = Path(run_dir)
    maze = get_maze(cfg.maze)
    torch.manual_seed(cfg.seed)
    dataset = build_sequence_dataset(cfg, maze, progress=progress)
    denoiser = build_denoiser(
        dataset.transition_dim, cfg.diffusion_steps, cfg.dim, cfg.dim_mults, cfg.cond_input
    )
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    tcfg = TrainerConfig(
        steps=cfg.train_steps,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        schedule=cfg.lr_schedule,
        ema_decay=cfg.ema_decay,
        ema_warmup=cfg.ema_warmup,
        log_every=100,
        ckpt_every=cfg.ckpt_every,
        keep_last=1,
        out_dir=run_dir / "train",
        seed=cfg.seed,
        device=cfg.device,
        progress=progress,
        tensorboard=False,
    )
    trainer = Trainer(denoiser, lambda model, batch: diffuser_loss(model, batch), loader, tcfg)
    trainer.fit()
    if trainer.ema is not None:
        trainer.ema.copy_to(denoiser)
    net = denoiser.net.cpu()
    net.save_pretrained(run_dir / MODEL_DIR)
    meta = {
        "maze": maze.name,
        "horizon": cfg.horizon,
        "diffusion_steps": cfg.diffusion_steps,
        "normalizer": dataset.normalizer.state_dict(),
        "train_windows": len(dataset),
    }
    write_json(run_dir / PLANNER_FILE, meta)
    return run_dir


def load_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(denoiser, normalizer, meta) from a folder written by :func:`train`."""
    run_dir = Path(run_dir)
    meta_path = run_dir / PLANNER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no trained planner in {run_dir} ({PLANNER_FILE} missing)")
    meta = read_json(meta_path)
    net = TemporalUnet.from_pretrained(run_dir / MODEL_DIR, map_location=device)
    arch = net.init_config
    denoiser = build_denoiser(
        arch["transition_dim"],
        meta["diffusion_steps"],
        arch["dim"],
        arch["dim_mults"],
        bool(arch["cond_dim"]),
    )
    denoiser.net = net
    return denoiser.eval(), LimitsNormalizer.from_state_dict(meta["normalizer"]), meta
