"""Train a diffusion or regression chunk policy on a replay buffer through ``core.Trainer``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.config import config_to_dict, save_config
from core.nets import ConditionalUnet1D
from core.training import Trainer, TrainerConfig

from ..sequence import LimitsNormalizer
from .config import PushTConfig
from .demos import generate_demos
from .env import ACTION_DIM, feature_dim, state_features
from .policy import POLICY_FILE, ChunkPolicy, make_windows, policy_loss
from .replay import ReplayBuffer, read_replay

__all__ = ["load_buffer", "build_policy", "train_policy"]


def load_buffer(cfg: PushTConfig, progress: bool = True) -> ReplayBuffer:
    """The training replay buffer: ``cfg.dataset`` or the cached expert demonstrations."""
    path = cfg.dataset or generate_demos(cfg.demos, cfg.data_seed, progress=progress)
    buf = read_replay(path)
    return buf.take(cfg.train_episodes) if cfg.train_episodes else buf


def build_policy(cfg: PushTConfig, buf: ReplayBuffer, kind: str) -> tuple[ChunkPolicy, TensorDataset]:
    """A fresh policy with normalisers fitted to ``buf``, and its normalised training windows."""
    feats = [
        state_features(s.astype(np.float64), cfg.obs_kind).astype(np.float32) for s in buf.episodes("state")
    ]
    acts = [a.astype(np.float32) for a in buf.episodes("action")]
    obs_norm = LimitsNormalizer.fit(np.concatenate(feats))
    act_norm = LimitsNormalizer.fit(np.concatenate(acts))
    obs_w, act_w = make_windows(feats, acts, cfg.n_obs, cfg.n_pred)
    net = ConditionalUnet1D(
        ACTION_DIM,
        cfg.n_obs * feature_dim(cfg.obs_kind),
        time_embed_dim=cfg.time_embed_dim,
        down_dims=tuple(cfg.down_dims),
        kernel_size=cfg.kernel_size,
    )
    policy = ChunkPolicy(
        net, obs_norm, act_norm, cfg.obs_kind, cfg.n_obs, cfg.n_pred, cfg.n_act, kind, cfg.diffusion_steps
    )
    data = TensorDataset(
        torch.as_tensor(obs_norm.normalize(obs_w)), torch.as_tensor(act_norm.normalize(act_w))
    )
    return policy, data


def train_policy(
    cfg: PushTConfig, run_dir: str | Path, kind: str = "diffusion", progress: bool = True
) -> ChunkPolicy:
    """Train into ``run_dir`` (``model/``, ``policy.json``, ``train/`` checkpoints); resumable.

    An existing finished policy with the same config is loaded instead of retrained; checkpoints
    of a different config are discarded.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    same = cfg_path.is_file() and json.loads(cfg_path.read_text()) == config_to_dict(cfg)
    if same and (run_dir / POLICY_FILE).is_file():
        return ChunkPolicy.load(run_dir)
    if not same:
        shutil.rmtree(run_dir / "train", ignore_errors=True)
        (run_dir / POLICY_FILE).unlink(missing_ok=True)
    save_config(cfg, cfg_path)
    torch.manual_seed(cfg.seed)
    policy, data = build_policy(cfg, load_buffer(cfg, progress), kind)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    tcfg = TrainerConfig(
        steps=cfg.train_steps,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        schedule="cosine",
        ema_decay=cfg.ema_decay,
        log_every=100,
        ckpt_every=cfg.ckpt_every,
        keep_last=1,
        out_dir=run_dir / "train",
        seed=cfg.seed,
        device=cfg.device,
        progress=progress,
        tensorboard=False,
    )
    trainer = Trainer(policy, policy_loss, loader, tcfg)
    trainer.fit()
    if trainer.ema is not None:
        trainer.ema.copy_to(policy)
    policy = policy.cpu().eval()
    policy.save(run_dir)
    return policy
