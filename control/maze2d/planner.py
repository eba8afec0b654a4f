"""Diffuser on Maze2D: the Temporal U-Net denoiser, its training loss and planning with inpainting.

A plan is a trajectory (B, horizon, 6) of rows ``[x, y, vx, vy, ax, ay]`` normalised to
[-1, 1]. The network predicts x0 under the discrete cosine schedule with T steps (Diffuser:
64 umaze, 256 medium/large). Start state and goal (goal position, zero velocity) fill the
state columns of the first and last rows and are imposed with ``core.guidance.Inpaint``
after every denoising step; training overwrites the same entries of the noisy input and
the prediction (Diffuser's ``apply_conditioning``), so the network sees what it will see
when planning.

With ``cond_input=True`` (the ``quick`` preset) the network also receives the start and goal
states repeated along the horizon plus each row's position (:func:`cond_features`), so the
model is p(trajectory | start, goal) *and* the start and goal are still imposed by inpainting.
Diffuser's network gets neither: its convolutions are translation-equivariant and must find the
two clean rows through the zero padding at the horizon's edges, which took them 2M steps; at
CPU budgets (1-3k steps) such a model ignores the start (its plan's row 1 lands ~1.3 units from
row 0) and scores ~20, while the conditioned one plans from the start after 1k steps.
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

__all__ = [
    "build_denoiser",
    "net_cond",
    "conditioning",
    "diffuser_loss",
    "Planner",
    "TrackingPolicy",
    "OBS_DIM",
]

OBS_DIM = 4
COND_DIM = 2 * OBS_DIM + 1


def build_denoiser(
    transition_dim: int,
    diffusion_steps: int,
    dim: int,
    dim_mults: tuple[int, ...],
    cond_input: bool = False,
) -> Denoiser:
    """x0-predicting Temporal U-Net under ``VPSchedule.discrete(cosine_betas(T))``.

    ``cond_input``: the network also receives :func:`cond_features` (start and goal states
    broadcast along the horizon, and each step's position); Diffuser's network does not.
    """
    net = TemporalUnet(
        transition_dim, dim=dim, dim_mults=tuple(dim_mults), cond_dim=COND_DIM if cond_input else 0
    )
    return Denoiser(net, VPSchedule.discrete(cosine_betas(diffusion_steps)), prediction="x0")


def cond_features(start: Tensor, goal: Tensor, horizon: int) -> Tensor:
    """Conditioning channels (B, horizon, 9): normalised start (4) and goal (4) states repeated on
    every step, and the step's position in [-1, 1]."""
    b = start.shape[0]
    pos = torch.linspace(-1.0, 1.0, horizon, dtype=start.dtype, device=start.device)
    return torch.cat(
        [
            start[:, None, :].expand(b, horizon, -1),
            goal[:, None, :].expand(b, horizon, -1),
            pos[None, :, None].expand(b, horizon, 1),
        ],
        dim=-1,
    )


def net_cond(denoiser: Denoiser, start: Tensor, goal: Tensor, horizon: int) -> dict[str, Tensor]:
    """Keyword inputs of the network: :func:`cond_features` when it takes them, else nothing."""
    if getattr(denoiser.net, "cond_dim", 0):
        return {"cond": cond_features(start, goal, horizon)}
    return {}


def conditioning(start: Tensor, goal: Tensor, horizon: int, transition_dim: int) -> tuple[Tensor, Tensor]:
    """Inpainting (mask, values), each (B, horizon, transition_dim), from normalised states.

    ``start`` (B, 4) fills row 0, or (B, P, 4) the first P rows (a start and the states executed
    since, for replanning); ``goal`` (B, 4) fills the last row.
    """
    prefix = start[:, None, :] if start.dim() == 2 else start
    b, p = prefix.shape[:2]
    if not 1 <= p < horizon:
        raise ValueError(f"expected 1 to {horizon - 1} known first states, got {p}")
    mask = torch.zeros(b, horizon, transition_dim, dtype=torch.bool, device=start.device)
    values = torch.zeros(b, horizon, transition_dim, dtype=start.dtype, device=start.device)
    mask[:, :p, :OBS_DIM] = True
    mask[:, -1, :OBS_DIM] = True
    values[:, :p, :OBS_DIM] = prefix
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
    cond = net_cond(denoiser, x0[:, 0, :OBS_DIM], x0[:, -1, :OBS_DIM], x0.shape[1])
    pred = torch.where(mask, values, denoiser(xt, t, **cond))
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
        """Plans (B, horizon, 6) in data units (gym frame) to goal positions (B, 2).

        ``start``: start states (B, 4), or (B, P, 4) to fix the first P states (a start and the
        states executed since: replanning that keeps the plan's clock). The returned state
        columns of those rows and of the last row equal ``start`` and ``(goal, 0, 0)`` up to the
        normaliser's round trip.
        """
        from core.guidance import Inpaint
        from core.sampling import sample

        start = np.asarray(start, dtype=np.float32)
        start = start[None] if start.ndim == 1 else start
        goal = np.atleast_2d(np.asarray(goal, dtype=np.float32))
        if start.shape[-1] != OBS_DIM or goal.shape[-1] != 2 or len(start) != len(goal) or start.ndim > 3:
            raise ValueError(
                f"expected start (B, 4) or (B, P, 4) and goal (B, 2), got {start.shape} and {goal.shape}"
            )
        dim = len(self.normalizer.mins)
        norm = self.normalizer
        goal_state = np.concatenate([goal, np.zeros_like(goal)], axis=-1)
        s = norm.normalize(np.concatenate([start, np.zeros((*start.shape[:-1], dim - OBS_DIM))], -1))
        g = norm.normalize(np.concatenate([goal_state, np.zeros((len(goal), dim - OBS_DIM))], -1))
        dev = self.device
        s_t = torch.as_tensor(s[..., :OBS_DIM], dtype=torch.float32, device=dev)
        g_t = torch.as_tensor(g[..., :OBS_DIM], dtype=torch.float32, device=dev)
        mask, values = conditioning(s_t, g_t, self.horizon, dim)
        gen = torch.Generator(device=dev).manual_seed(seed)
        x_t = torch.randn(len(start), self.horizon, dim, generator=gen, device=dev)
        guide = Inpaint(mask, values)
        cond = net_cond(self.denoiser, s_t if s_t.dim() == 2 else s_t[:, 0], g_t, self.horizon)
        x = sample(self.denoiser, x_t, guide=guide, cond=cond, generator=gen, **self.sample_kwargs())
        x0 = self.denoiser.x0_eps(x, self.denoiser.schedule.t_min, **cond)[0]
        x0 = torch.where(mask, values, x0)
        return norm.unnormalize(x0.float().cpu().numpy())

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
    ``replan_every > 0`` the plan is redrawn every that many steps while it lasts, with its
    first t + 1 rows fixed to the states actually visited (start included): the new plan
    continues from the current state on the same clock, reaching the goal on its last row as
    the first plan does. (Replanning from the current state as a new row 0 would postpone the
    arrival by t on every replan, and the agent never arrives.)
    """

    def __init__(self, planner: Planner, replan_every: int = 0, seed: int = 0) -> None:
        self.planner = planner
        self.replan_every = replan_every
        self.seed = seed
        self.plans: np.ndarray | None = None
        self.first_plans: np.ndarray | None = None
        self.history: list[np.ndarray] = []
        self.plan_seconds = 0.0

    def _plan(self, goal: np.ndarray, t: int) -> None:
        t0 = time.perf_counter()
        self.plans = self.planner.plan(np.stack(self.history, axis=1), goal, seed=self.seed + t)
        self.plan_seconds += time.perf_counter() - t0

    def reset(self, obs: np.ndarray, goal: np.ndarray) -> None:
        self.history = [np.asarray(obs, dtype=np.float64)[:, :OBS_DIM].copy()]
        self._plan(goal, 0)
        self.first_plans = self.plans.copy()

    def act(self, obs: np.ndarray, goal: np.ndarray, t: int) -> np.ndarray:
        horizon = self.plans.shape[1]
        if t > 0 and len(self.history) < horizon - 1:
            self.history.append(np.asarray(obs, dtype=np.float64)[:, :OBS_DIM].copy())
            if self.replan_every and t % self.replan_every == 0:
                self._plan(goal, t)
        k = t + 1
        if k < horizon:
            wp = self.plans[:, k, :OBS_DIM]
        else:
            wp = self.plans[:, -1, :OBS_DIM].copy()
            wp[:, 2:] = 0.0
        return (wp[:, :2] - obs[:, :2]) + (wp[:, 2:] - obs[:, 2:4])
