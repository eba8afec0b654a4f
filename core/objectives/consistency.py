"""Consistency distillation (Song et al. 2023): a one-step generator f(x_t, t) ~ x_0 learned from a
teacher diffusion model through one ODE solver step per training pair, against an EMA target.

The consistency function wraps any student :class:`Denoiser` as the student's own DDIM step
from x_t to the boundary time eps = t_min (any schedule, in the model's units):

    f(x, t) = c_skip(t) x + c_out(t) x0_student(x, t),
    c_skip = sigma(eps) / sigma(t),  c_out = alpha(eps) - c_skip alpha(t),

so f(x, eps) = x exactly (the boundary condition), f is the teacher's DDIM jump to eps when the
student starts from the teacher's weights (the distillation starts from a good one-step
denoiser rather than from scalings the network has to unlearn), and f -> alpha(eps) x0_student
at high noise. Use a student whose prediction is well conditioned at high noise (``x0``, ``v``
or ``velocity``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from ..denoiser import Denoiser
from ..guidance.base import Guide, model_fn
from ..sampling import sample
from ..schedules import NoiseSchedule

__all__ = ["ConsistencyDistillation", "ConsistencyModel", "consistency_sample", "karras_times"]

SOLVERS = ("ddim", "heun")
DISTANCES = ("l2", "pseudo_huber")
WEIGHTINGS = ("uniform", "ict")


def _sigma_tilde(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    return torch.exp(-schedule.log_snr(t.to(torch.float64)))


def _bc(c: Tensor, x: Tensor) -> Tensor:
    return c.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype) if c.dim() else c.to(x.dtype)


class ConsistencyModel(nn.Module):
    """f(x, t) = c_skip(t) x + c_out(t) x0_student(x, t); shapes like x, t scalar or (B,).

    Args:
        denoiser: the student (any backbone, schedule and prediction).
        t_min: the boundary time eps (defaults to the schedule's ``t_min``).
    """

    def __init__(self, denoiser: Denoiser, t_min: float | None = None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.t_min = float(denoiser.schedule.t_min if t_min is None else t_min)
        eps = torch.tensor(self.t_min, dtype=torch.float64)
        self._alpha_min = float(denoiser.schedule.alpha(eps))
        self._sigma_min = float(denoiser.schedule.sigma(eps))

    @property
    def schedule(self) -> NoiseSchedule:
        return self.denoiser.schedule

    def scalings(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip, c_out) at times t, float64, same shape as t."""
        t = t.to(torch.float64)
        c_skip = self._sigma_min / self.schedule.sigma(t)
        return c_skip, self._alpha_min - c_skip * self.schedule.alpha(t)

    def forward(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if tt.dim() == 0:
            tt = tt.expand(x.shape[0])
        c_skip, c_out = self.scalings(tt)
        return _bc(c_skip, x) * x + _bc(c_out, x) * self.denoiser.x0(x, tt, **cond)


def karras_times(schedule: NoiseSchedule, n: int, rho: float = 7.0, t_min: float | None = None) -> Tensor:
    """n times (float64, increasing from t_min to t_max) whose EDM noise levels sigma~ follow
    Karras et al.'s rho-spacing: sigma~_i^(1/rho) uniform between the end points."""
    if n < 2:
        raise ValueError(f"need at least 2 discretisation points, got {n}")
    t_min = schedule.t_min if t_min is None else t_min
    lo = _sigma_tilde(schedule, torch.tensor(t_min, dtype=torch.float64))
    hi = _sigma_tilde(schedule, torch.tensor(schedule.t_max, dtype=torch.float64))
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    sig = (lo ** (1 / rho) + u * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho
    ts = schedule.t_of_log_snr(-torch.log(sig)).to(torch.float64)
    ts[0] = t_min
    ts[-1] = schedule.t_max
    return ts


class ConsistencyDistillation(nn.Module):
    """Consistency distillation loss with an EMA target network.

    Each call draws n ~ U{0..N-2}, x_{t_{n+1}} = alpha x_0 + sigma z, takes one teacher ODE step
    to t_n (``solver``: ``"ddim"`` = first-order exponential integrator, 1 evaluation;
    ``"heun"`` = EDM's second-order step, 2 evaluations) and returns
    d(f_student(x_{t_{n+1}}), f_target(x_{t_n})). After each optimiser step on
    ``student.parameters()`` call :meth:`update_target`.

    Args:
        student: the :class:`ConsistencyModel` being trained (e.g. initialised from the teacher's
            weights); switch off its label dropout for conditional teachers.
        teacher: a trained, frozen :class:`Denoiser` with the same schedule.
        num_steps: N, the number of discretisation times (Karras rho-spacing).
        ema_decay: mu of the target network theta- <- mu theta- + (1 - mu) theta.
        distance: ``"l2"`` (mean squared error) or ``"pseudo_huber"`` (sqrt(|a-b|^2 + c^2) - c,
            c = 0.00054 sqrt(dim), as in improved consistency training).
        weighting: ``"uniform"`` (lambda = 1, as in consistency distillation) or ``"ict"``
            (lambda_n = 1 / (sigma~_{n+1} - sigma~_n) of improved consistency training, normalised
            to mean 1 over the N - 1 intervals: the fine low-noise intervals weigh most).
        guide: optional guide applied to the teacher (e.g. classifier-free guidance).
    """

    def __init__(
        self,
        student: ConsistencyModel,
        teacher: Denoiser,
        *,
        num_steps: int = 18,
        rho: float = 7.0,
        solver: str = "heun",
        ema_decay: float = 0.95,
        distance: str = "l2",
        weighting: str = "uniform",
        guide: Guide | None = None,
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; expected one of {DISTANCES}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if type(teacher.schedule) is not type(student.schedule):
            raise ValueError(
                f"teacher schedule {teacher.schedule!r} differs from student's {student.schedule!r}"
            )
        self.student = student
        self.target = copy.deepcopy(student).requires_grad_(False)
        self.teacher = teacher.requires_grad_(False)
        self.solver, self.distance, self.ema_decay, self.guide = solver, distance, float(ema_decay), guide
        self.register_buffer("times", karras_times(student.schedule, num_steps, rho, student.t_min))
        weights = torch.ones(num_steps - 1, dtype=torch.float64)
        if weighting == "ict":
            weights = 1.0 / _sigma_tilde(student.schedule, self.times).diff()
        self.register_buffer("weights", (weights / weights.mean()).float())
        self.train()

    def train(self, mode: bool = True) -> ConsistencyDistillation:
        """Only the student switches mode; teacher and target always run in eval mode."""
        super().train(mode)
        self.teacher.eval()
        self.target.eval()
        return self

    @torch.no_grad()
    def teacher_step(self, x: Tensor, t: Tensor, s: Tensor, **cond) -> Tensor:
        """One teacher probability-flow ODE step of x (B, ...) from times t (B,) to s (B,)."""
        fn = model_fn(self.teacher, self.guide, cond)
        sch = self.teacher.schedule
        a_t, a_s = _bc(sch.alpha(t), x), _bc(sch.alpha(s), x)
        sg_t, sg_s = _bc(_sigma_tilde(sch, t), x), _bc(_sigma_tilde(sch, s), x)
        x0, eps = fn(x, t)
        if self.solver == "ddim":
            return a_s * x0 + a_s * sg_s * eps
        xt = x / a_t  # EDM variables: d x~ / d sigma~ = eps
        x_euler = xt + (sg_s - sg_t) * eps
        _, eps2 = fn(a_s * x_euler, s)
        return a_s * (xt + (sg_s - sg_t) * 0.5 * (eps + eps2))

    def forward(self, x0: Tensor, *, generator: torch.Generator | None = None, **cond) -> Tensor:
        """The scalar loss for clean data x0 (B, ...); ``cond`` goes to teacher and student."""
        b = x0.shape[0]
        n = torch.randint(0, len(self.times) - 1, (b,), device=x0.device, generator=generator)
        t_hi, t_lo = self.times[n + 1], self.times[n]
        z = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        sch = self.teacher.schedule
        x_hi = _bc(sch.alpha(t_hi), x0) * x0 + _bc(sch.sigma(t_hi), x0) * z
        x_lo = self.teacher_step(x_hi, t_hi, t_lo, **cond)
        pred = self.student(x_hi, t_hi, **cond)
        with torch.no_grad():
            target = self.target(x_lo, t_lo, **cond)
        diff2 = (pred - target).reshape(b, -1).pow(2)
        if self.distance == "l2":
            per_sample = diff2.mean(1)
        else:
            c = 0.00054 * math.sqrt(diff2.shape[1])
            per_sample = torch.sqrt(diff2.sum(1) + c * c) - c
        return (self.weights[n].to(per_sample.dtype) * per_sample).mean()

    @torch.no_grad()
    def update_target(self) -> None:
        """EMA update of the target network from the student."""
        for pt, ps in zip(self.target.parameters(), self.student.parameters(), strict=True):
            pt.lerp_(ps, 1.0 - self.ema_decay)
        for bt, bs in zip(self.target.buffers(), self.student.buffers(), strict=True):
            bt.copy_(bs)


@torch.no_grad()
def consistency_sample(
    model: ConsistencyModel,
    x_T: Tensor,
    times: list[float] | None = None,
    *,
    generator: torch.Generator | None = None,
    **cond,
) -> Tensor:
    """One- or multi-step consistency sampling: ``core.sample(method="consistency")`` on the
    grid ``times`` followed by the model's boundary time ``model.t_min``.

    ``x_T`` (B, ...) is the starting noise at ``times[0]`` (default: the schedule's t_max, one
    step). Each later time tau in ``times`` (decreasing) re-noises the estimate,
    x = alpha(tau) x_0 + sigma(tau) z, and applies f again. Returns x_0, shape like x_T.
    """
    sch = model.schedule
    times = [sch.t_max] if times is None else list(times)
    if any(b >= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError(f"times must be strictly decreasing, got {times}")
    grid = torch.tensor([*times, model.t_min], dtype=torch.float64)
    return sample(model.denoiser, x_T, method="consistency", grid=grid, generator=generator, cond=cond)
