"""Diffuser on Maze2D: the Temporal U-Net denoiser, its training loss and planning with inpainting.

A plan is a trajectory (B, horizon, 6) of rows ``[x, y, vx, vy, ax, ay]`` normalised to
[-1, 1]. The network predicts x0 under the discrete cosine schedule with T steps (Diffuser:
64 umaze, 256 medium/large). Start state and goal (goal position, zero velocity) fill the
state columns of the first and last rows and are imposed with ``core.guidance.Inpaint``
after every denoising step; training overwrites the same entries of the noisy input and
the prediction (Diffuser's ``apply_conditioning``), so the network sees what it will see
when planning.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from core import Denoiser, VPSchedule
from core.nets.temporal_unet import TemporalUnet
from core.schedules import cosine_betas

from ..sequence import LimitsNormalizer
from .evaluate import Policy

__all__ = ["build_denoiser", "conditioning", "diffuser_loss", "Planner", "TrackingPolicy", "OBS_DIM"]

OBS_DIM = 4


def build_denoiser(
    transition_dim: int, diffusion_steps: int, dim: int, dim_mults: tuple[int, ...]
) -> Denoiser:
    """x0-predicting Temporal U-Net under ``VPSchedule.discrete(cosine_betas(T))``."""
    net = TemporalUnet(transition_dim, dim=dim, dim_mults=tuple(dim_mults))
    return Denoiser(net, VPSchedule.discrete(cosine_betas(diffusion_steps)), prediction="x0")


def conditioning(start: Tensor, goal: Tensor, horizon: int, transition_dim: int) -> tuple[Tensor, Tensor]:
    """Inpainting (mask, values), each (B, horizon, transition_dim), from normalised start and goal (B, 4)."""
    b = start.shape[0]
    mask = torch.zeros(b, horizon, transition_dim, dtype=torch.bool, device=start.device)
    values = torch.zeros(b, horizon, transition_dim, dtype=start.dtype, device=start.device)
    mask[:, 0, :OBS_DIM] = True
    mask[:, -1, :OBS_DIM] = True
    values[:, 0, :OBS_DIM] = start
    values[:, -1, :OBS_DIM] = goal
    return mask, values


def diffuser_loss(denoiser: Denoiser, x0: Tensor) -> Tensor:
    """x0-MSE with the first and last states of each window imposed on input and output; x0 (B, H, D)."""
    b = x0.shape[0]
    t = denoiser.schedule.sample_t(b, device=x0.device).to(x0.device)
    a, s = denoiser.coefficients(x0, t)
    xt = a * x0 + s * torch.randn_like(x0)
    mask, values = conditioning(x0[:, 0, :OBS_DIM], x0[:, -1, :OBS_DIM], x0.shape[1], x0.shape[2])
    xt = torch.where(mask, values, xt)
    pred = torch.where(mask, values, denoiser(xt, t))
    return (pred - x0).pow(2).mean()


class Planner:
    """Plans normalised trajectories from start states to goals with ``core.sample``.

    Args:
        denoiser: trained x0-predicting denoiser over (B, horizon, transition_dim).
        normalizer: the training data's limits normaliser (transition_dim dims).
        horizon: plan length.
        method: ``"ddpm"`` (ancestral over the T training steps: grid t_n = (n + 1) / T) or
            ``"dpm_solver++"`` (multistep, uniform-logSNR grid from t_max to t_min = 1 / T).
        steps: solver steps; None = T - 1 for ddpm.
        order: dpm_solver++ order (multistep).

    Both end with one x0 prediction at t_min (Diffuser's last DDPM step returns the
    posterior mean, ~x0), so NFE = steps + 1 (DDPM: exactly T).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        normalizer: LimitsNormalizer,
        horizon: int,
        method: str = "ddpm",
        steps: int | None = None,
        order: int = 2,
    ) -> None:
        self.denoiser = denoiser
        self.normalizer = normalizer
        self.horizon = horizon
        self.method = method
        self.order = order
        n_train = denoiser.schedule.num_steps
        self.steps = steps or n_train - 1
        if method == "ddpm" and self.steps != n_train - 1:
            raise ValueError(
                f"ddpm plans over the model's T = {n_train} steps (steps={n_train - 1}), got {steps}"
            )
        if method not in ("ddpm", "dpm_solver++"):
            raise ValueError(f"method must be 'ddpm' or 'dpm_solver++', got {method!r}")

    @property
    def nfe(self) -> int:
        return self.steps + 1

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def sample_kwargs(self) -> dict:
        if self.method == "ddpm":
            n = self.denoiser.schedule.num_steps
            grid = torch.arange(n, 0, -1, dtype=torch.float64) / n
            return dict(method="ddpm", grid=grid)
        return dict(method=self.method, steps=self.steps, order=self.order, multistep=True, grid="logsnr")

    @torch.no_grad()
    def plan(self, start: np.ndarray, goal: np.ndarray, seed: int = 0) -> np.ndarray:
        """Plans (B, horizon, 6) in data units (gym frame) from starts (B, 4) to goal positions (B, 2).

        The returned state columns of the first and last rows equal ``start`` and
        ``(goal, 0, 0)`` up to the normaliser's round trip.
        """
        from core.guidance import Inpaint
        from core.sampling import sample

        start = np.atleast_2d(np.asarray(start, dtype=np.float32))
        goal = np.atleast_2d(np.asarray(goal, dtype=np.float32))
        if start.shape[-1] != OBS_DIM or goal.shape[-1] != 2 or len(start) != len(goal):
            raise ValueError(f"expected start (B, 4) and goal (B, 2), got {start.shape} and {goal.shape}")
        dim = len(self.normalizer.mins)
        goal_state = np.concatenate([goal, np.zeros_like(goal)], axis=-1)
        pad = np.zeros((len(start), dim - OBS_DIM), dtype=np.float32)
        s = self.normalizer.normalize(np.concatenate([start, pad], -1))[:, :OBS_DIM]
        g = self.normalizer.normalize(np.concatenate([goal_state, pad], -1))[:, :OBS_DIM]
        dev = self.device
        mask, values = conditioning(
            torch.as_tensor(s, device=dev), torch.as_tensor(g, device=dev), self.horizon, dim
        )
        gen = torch.Generator(device=dev).manual_seed(seed)
        x_t = torch.randn(len(start), self.horizon, dim, generator=gen, device=dev)
        guide = Inpaint(mask, values)
        x = sample(self.denoiser, x_t, guide=guide, generator=gen, **self.sample_kwargs())
        x0 = self.denoiser.x0_eps(x, self.denoiser.schedule.t_min)[0]
        x0 = torch.where(mask, values, x0)
        return self.normalizer.unnormalize(x0.float().cpu().numpy())

    def latency_ms(self, start: np.ndarray, goal: np.ndarray, repeats: int = 3) -> float:
        """Median wall time (ms) of one single-trajectory plan (batch 1), after one warm-up."""
        self.plan(start[:1], goal[:1])
        times = []
        for k in range(repeats):
            t0 = time.perf_counter()
            self.plan(start[:1], goal[:1], seed=k)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return 1000.0 * float(np.median(times))


class TrackingPolicy(Policy):
    """Diffuser's maze2d execution: plan at reset, then a = (wp_xy - xy) + (wp_v - v) with wp = plan[t + 1].

    After the plan's end the waypoint is its last state with zero velocity. With
    ``replan_every > 0`` a new plan from the current state is made every that many steps.
    """

    def __init__(self, planner: Planner, replan_every: int = 0, seed: int = 0) -> None:
        self.planner = planner
        self.replan_every = replan_every
        self.seed = seed
        self.plans: np.ndarray | None = None
        self.first_plans: np.ndarray | None = None
        self._t0 = 0
        self.plan_seconds = 0.0

    def _plan(self, obs: np.ndarray, goal: np.ndarray, t: int) -> None:
        t0 = time.perf_counter()
        self.plans = self.planner.plan(obs, goal, seed=self.seed + t)
        self.plan_seconds += time.perf_counter() - t0
        self._t0 = t

    def reset(self, obs: np.ndarray, goal: np.ndarray) -> None:
        self._plan(obs, goal, 0)
        self.first_plans = self.plans.copy()

    def act(self, obs: np.ndarray, goal: np.ndarray, t: int) -> np.ndarray:
        if self.replan_every and t > 0 and t % self.replan_every == 0:
            self._plan(obs, goal, t)
        k = t - self._t0 + 1
        if k < self.plans.shape[1]:
            wp = self.plans[:, k, :OBS_DIM]
        else:
            wp = self.plans[:, -1, :OBS_DIM].copy()
            wp[:, 2:] = 0.0
        return (wp[:, :2] - obs[:, :2]) + (wp[:, 2:] - obs[:, 2:4])
