"""Diffusion Policy and its regression baseline over action chunks, on one FiLM 1-D U-Net.

Observation window (B, n_obs, 5) states -> features (``env.state_features``) -> min-max
normalised to [-1, 1] -> flattened as the U-Net's global conditioning (B, n_obs * D). The
network outputs a normalised action chunk (B, n_pred, 2); rows ``n_obs - 1 .. n_obs - 2 + n_act``
are executed (the chunk starts at the oldest observed step, as in Chi et al.).

``kind="diffusion"``: ε-prediction under the discrete squared-cosine schedule with T training
steps (``VPSchedule.discrete(cosine_betas(T))``, DDPM's ``squaredcos_cap_v2``), sampled with
``core.sample``. Every sampler clips its denoised estimate x0 to [-1, 1], the range of the
normalised actions, and recomputes ε from it (diffusers' ``clip_sample=True`` with
``use_clipped_model_output=True``; Chi et al. clip too). Without it, the first step from
t_max (alpha = 4.9e-4 at T = 100, where the squared-cosine beta is capped at 0.999) multiplies
the ε error by alpha_s / alpha_t: about 31 for DDPM's step to T - 2 and 345 for a 10-step DDIM's
jump to step 88, which saturates almost every action of the chunk.

``kind="regression"``: the same network called at a fixed time with a zero chunk as input,
trained by MSE on the chunk (the mode-averaging baseline).
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core import Denoiser, VPSchedule
from core.nets import ConditionalUnet1D
from core.schedules import cosine_betas

from ..sequence import LimitsNormalizer
from .env import ACTION_DIM, feature_dim, state_dim, state_features

__all__ = ["ChunkPolicy", "SAMPLERS", "sampler_spec", "make_windows", "policy_loss"]

POLICY_FILE = "policy.json"
MODEL_DIR = "model"
# name -> (core.sample method, solver steps or None for the T-step ancestral reference)
SAMPLERS = {"ddpm100": ("ddpm", None), "ddim10": ("ddim", 9), "dpm_solver++10": ("dpm_solver++", 9)}


def sampler_spec(name: str) -> tuple[str, int | None]:
    """(method, steps) of a sampler row name such as ``ddim10``; NFE = steps + 1 (final x0)."""
    if name in SAMPLERS:
        return SAMPLERS[name]
    for method in ("dpm_solver++", "ddim", "ddpm"):
        if name.startswith(method) and name[len(method) :].isdigit():
            nfe = int(name[len(method) :])
            if nfe >= 2:
                return method, nfe - 1
    raise ValueError(f"unknown sampler {name!r}; expected e.g. {sorted(SAMPLERS)} (method + NFE)")


def make_windows(
    features: list[np.ndarray], actions: list[np.ndarray], n_obs: int, n_pred: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training windows from episodes: obs (W, n_obs, D) and action chunks (W, n_pred, A).

    One window per step t of every episode: observations t - n_obs + 1 .. t and actions
    t - n_obs + 1 .. t - n_obs + n_pred, indices clamped to the episode (the first observation
    and the last action repeat at the edges, as Chi et al.'s padded sampler does).
    """
    obs_w, act_w = [], []
    for f, a in zip(features, actions, strict=True):
        if len(f) != len(a) or len(f) == 0:
            raise ValueError(f"episode with {len(f)} observations and {len(a)} actions")
        t = np.arange(len(f))
        oi = np.clip(t[:, None] + np.arange(-n_obs + 1, 1)[None], 0, len(f) - 1)
        ai = np.clip(t[:, None] + np.arange(-n_obs + 1, -n_obs + 1 + n_pred)[None], 0, len(a) - 1)
        obs_w.append(f[oi])
        act_w.append(a[ai])
    return np.concatenate(obs_w).astype(np.float32), np.concatenate(act_w).astype(np.float32)


def policy_loss(policy: ChunkPolicy, batch: tuple[Tensor, Tensor]) -> Tensor:
    """ε-MSE (diffusion) or chunk MSE (regression) on normalised (obs window, action chunk)."""
    obs, act = batch
    cond = obs.flatten(1)
    if policy.kind == "regression":
        return (policy.regress(cond) - act).pow(2).mean()
    den = policy.denoiser
    t = den.schedule.sample_t(act.shape[0], device=act.device).to(act.device)
    a, s = den.coefficients(act, t)
    eps = torch.randn_like(act)
    return (den(a * act + s * eps, t, global_cond=cond) - eps).pow(2).mean()


class ChunkPolicy(torch.nn.Module):
    """A chunk policy: network, normalisers, horizons and (for diffusion) the schedule.

    Args:
        net: ``ConditionalUnet1D(ACTION_DIM, n_obs * feature_dim(obs_kind), ...)``.
        obs_norm, act_norm: min-max normalisers of the features (D,) and actions (2,).
        obs_kind: ``keypoints`` or ``state`` (see ``env.state_features``).
        n_obs, n_pred, n_act: observation, prediction and action horizons (2, 16, 8).
        kind: ``diffusion`` or ``regression``.
        diffusion_steps: T of the training schedule.
    """

    def __init__(
        self,
        net: ConditionalUnet1D,
        obs_norm: LimitsNormalizer,
        act_norm: LimitsNormalizer,
        obs_kind: str = "keypoints",
        n_obs: int = 2,
        n_pred: int = 16,
        n_act: int = 8,
        kind: str = "diffusion",
        diffusion_steps: int = 100,
    ) -> None:
        super().__init__()
        if kind not in ("diffusion", "regression"):
            raise ValueError(f"kind must be 'diffusion' or 'regression', got {kind!r}")
        if not (1 <= n_obs and 1 <= n_act and n_obs - 1 + n_act <= n_pred):
            raise ValueError(
                f"need n_obs >= 1, n_act >= 1 and n_obs - 1 + n_act <= n_pred, got {n_obs}, {n_act}, {n_pred}"
            )
        if n_pred % net.horizon_factor:
            raise ValueError(
                f"prediction horizon {n_pred} is not supported by a U-Net with "
                f"{len(net.init_config['down_dims'])} levels; valid horizons: "
                f"{net.valid_horizons(4 * net.horizon_factor)}"
            )
        expected = n_obs * feature_dim(obs_kind)
        if net.global_cond_dim != expected or net.input_dim != ACTION_DIM:
            raise ValueError(
                f"network takes global_cond_dim={net.global_cond_dim}, input_dim={net.input_dim}; "
                f"{n_obs} x {obs_kind} observations and {ACTION_DIM}-D actions need "
                f"{expected} and {ACTION_DIM}"
            )
        self.obs_norm, self.act_norm = obs_norm, act_norm
        self.obs_kind, self.kind = obs_kind, kind
        self.n_obs, self.n_pred, self.n_act = n_obs, n_pred, n_act
        self.diffusion_steps = diffusion_steps
        self.denoiser = Denoiser(
            net,
            VPSchedule.discrete(cosine_betas(diffusion_steps)),
            prediction="eps",
            thresholding=partial(torch.clamp, min=-1.0, max=1.0),
        )
        self.sampler = "ddpm100" if kind == "diffusion" else "regression"

    @property
    def net(self) -> ConditionalUnet1D:
        return self.denoiser.net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def nfe(self) -> int:
        if self.kind == "regression":
            return 1
        method, steps = sampler_spec(self.sampler)
        return (self.diffusion_steps - 1 if steps is None else steps) + 1

    def regress(self, cond: Tensor) -> Tensor:
        x = torch.zeros(cond.shape[0], self.n_pred, ACTION_DIM, device=cond.device, dtype=cond.dtype)
        return self.net(x, torch.zeros(cond.shape[0], device=cond.device), global_cond=cond)

    def encode(self, states: np.ndarray) -> Tensor:
        """States (B, n_obs, S) -> normalised flattened conditioning (B, n_obs * D)."""
        states = np.asarray(states)
        sd = state_dim(self.obs_kind)
        if states.ndim != 3 or states.shape[1:] != (self.n_obs, sd):
            raise ValueError(
                f"this policy takes observation windows (B, {self.n_obs}, {sd}) of {self.obs_kind} states, "
                f"got shape {states.shape}"
            )
        f = self.obs_norm.normalize(state_features(states, self.obs_kind).astype(np.float32))
        return torch.as_tensor(f, dtype=torch.float32, device=self.device).flatten(1)

    @torch.no_grad()
    def predict(self, states: np.ndarray, seed: int = 0) -> np.ndarray:
        """Action chunks (B, n_pred, 2) in pixels from observation windows (B, n_obs, 5)."""
        from core.sampling import sample

        cond = self.encode(states)
        if self.kind == "regression":
            return self.act_norm.unnormalize(self.regress(cond).cpu().numpy())
        dev = self.device
        gen = torch.Generator(device=dev).manual_seed(seed)
        x_t = torch.randn(cond.shape[0], self.n_pred, ACTION_DIM, generator=gen, device=dev)
        method, steps = sampler_spec(self.sampler)
        sch = self.denoiser.schedule
        if steps is None:
            n = sch.num_steps
            kw = dict(method=method, grid=torch.arange(n, 0, -1, dtype=torch.float64) / n)
        elif method == "ddim":
            kw = dict(method=method, steps=steps, grid="time_uniform")
        else:
            kw = dict(method=method, steps=steps, order=3, multistep=True, grid="logsnr")
        c = {"global_cond": cond}
        x = sample(self.denoiser, x_t, cond=c, generator=gen, **kw)
        x0 = self.denoiser.x0_eps(x, sch.t_min, **c)[0].clamp(-1, 1)
        return self.act_norm.unnormalize(x0.float().cpu().numpy())

    def actions(self, states: np.ndarray, seed: int = 0) -> np.ndarray:
        """The executed part of the chunk, (B, n_act, 2)."""
        chunk = self.predict(states, seed)
        return chunk[:, self.n_obs - 1 : self.n_obs - 1 + self.n_act]

    def latency_ms(self, states: np.ndarray, repeats: int = 10) -> float:
        """Wall time (ms) of one chunk for one environment (batch 1): the fastest of ``repeats``
        after a warm-up (as ``timeit`` advises: slower repeats measure other processes' load)."""
        self.predict(states[:1])
        times = []
        for k in range(repeats):
            t0 = time.perf_counter()
            self.predict(states[:1], seed=k)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return 1000.0 * float(np.min(times))

    # --- persistence ---------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """``directory/model`` (pretrained U-Net folder) and ``directory/policy.json``."""
        from core.data import atomic_write

        directory = Path(directory)
        self.net.save_pretrained(directory / MODEL_DIR)
        meta = {
            "obs_norm": self.obs_norm.state_dict(),
            "act_norm": self.act_norm.state_dict(),
            "obs_kind": self.obs_kind,
            "n_obs": self.n_obs,
            "n_pred": self.n_pred,
            "n_act": self.n_act,
            "kind": self.kind,
            "diffusion_steps": self.diffusion_steps,
        }
        with atomic_write(directory / POLICY_FILE) as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> ChunkPolicy:
        directory = Path(directory)
        meta_path = directory / POLICY_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no trained policy in {directory} ({POLICY_FILE} missing)")
        meta = json.loads(meta_path.read_text())
        net = ConditionalUnet1D.from_pretrained(directory / MODEL_DIR, map_location=device)
        obs_norm = LimitsNormalizer.from_state_dict(meta.pop("obs_norm"))
        act_norm = LimitsNormalizer.from_state_dict(meta.pop("act_norm"))
        feat = feature_dim(meta["obs_kind"])
        if len(obs_norm.mins) != feat or net.global_cond_dim != meta["n_obs"] * feat:
            raise ValueError(
                f"checkpoint {directory} is inconsistent: observation normaliser has {len(obs_norm.mins)} "
                f"dims and the network {net.global_cond_dim} conditioning dims; {meta['obs_kind']} "
                f"observations have {feat} dims x n_obs {meta['n_obs']}"
            )
        return cls(net, obs_norm, act_norm, **meta).eval()
