"""Score distillation: train a differentiable generator, or a set of particles, against a frozen
diffusion prior.

- **SDS** (Poole et al. 2023, DreamFusion): grad_x = w(t) (eps_prior(x_t, t) - eps) with
  x_t = alpha x + sigma eps; it seeks the prior's modes (mode collapse for a set of particles).
- **VSD** (Wang et al. 2023, ProlificDreamer): grad_x = w(t) (eps_prior(x_t, t) - eps_particle(x_t, t)),
  where a second denoiser is fine-tuned on the current particles with the ordinary denoising
  loss (e.g. low-rank adapters on a copy of the prior, :func:`lora_copy`); it matches the
  whole distribution.

Both are applied through a surrogate loss whose gradient with respect to x is the score
distillation gradient (divided by the batch size), so ``loss.backward()`` drives either
particles (a leaf tensor x) or a generator's parameters (x = g_theta(z)).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..denoiser import Denoiser
from ..guidance.base import Guide, model_fn
from .diffusion import denoising_loss

__all__ = [
    "LoRAConv2d",
    "LoRALinear",
    "add_lora",
    "lora_copy",
    "particle_loss",
    "sds_gradient",
    "sds_loss",
    "vsd_gradient",
    "vsd_loss",
]


# --- shared noising ----------------------------------------------------------------------------
def _noised(
    prior: Denoiser,
    x: Tensor,
    t: Tensor | None,
    noise: Tensor | None,
    t_range: tuple[float, float] | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    s = prior.schedule
    b = x.shape[0]
    if t is None:
        lo, hi = t_range or (s.t_min + 0.02 * (s.t_max - s.t_min), s.t_min + 0.98 * (s.t_max - s.t_min))
        if not s.t_min <= lo < hi <= s.t_max:
            raise ValueError(f"t_range {(lo, hi)} must lie inside [{s.t_min}, {s.t_max}] with lo < hi")
        u = torch.rand(b, device=x.device, dtype=torch.float64, generator=generator)
        t = lo + (hi - lo) * u
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(b)
    if noise is None:
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    a, sg = prior.coefficients(x, t)
    return a * x.detach() + sg * noise, t, noise


def _weight(prior: Denoiser, x: Tensor, t: Tensor, weight: Callable[[Tensor], Tensor] | None) -> Tensor:
    w = prior.schedule.sigma(t) ** 2 if weight is None else torch.as_tensor(weight(t), dtype=torch.float64)
    return w.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def _surrogate(x: Tensor, grad: Tensor) -> Tensor:
    """A scalar whose gradient with respect to x is grad / B."""
    return (grad.detach() * x).reshape(x.shape[0], -1).sum(1).mean()


# --- SDS ---------------------------------------------------------------------------------------
@torch.no_grad()
def sds_gradient(
    prior: Denoiser,
    x: Tensor,
    *,
    t: Tensor | float | None = None,
    noise: Tensor | None = None,
    t_range: tuple[float, float] | None = None,
    weight: Callable[[Tensor], Tensor] | None = None,
    guide: Guide | None = None,
    generator: torch.Generator | None = None,
    **cond,
) -> Tensor:
    """The SDS gradient w(t) (eps_prior(x_t, t) - eps), shape like x (B, ...).

    Args:
        prior: the frozen diffusion model.
        x: the current samples (particles or generator outputs).
        t: times (B,) or a scalar; when None, uniform on ``t_range`` (default: the middle 96%
            of the schedule's [t_min, t_max]).
        noise: eps, shape like x; drawn when None.
        weight: w(t) for float64 times (B,) -> (B,); default sigma(t)^2.
        guide: optional guide on the prior (e.g. classifier-free guidance).
        cond: passed to the prior (e.g. ``y=labels``).
    """
    xt, tt, eps = _noised(prior, x, t, noise, t_range, generator)
    _, eps_prior = model_fn(prior, guide, cond)(xt, tt)
    return _weight(prior, x, tt, weight) * (eps_prior - eps)


def sds_loss(prior: Denoiser, x: Tensor, **kwargs) -> Tensor:
    """Surrogate scalar whose gradient w.r.t. x is :func:`sds_gradient` / B (same keywords)."""
    return _surrogate(x, sds_gradient(prior, x, **kwargs))


# --- VSD ---------------------------------------------------------------------------------------
@torch.no_grad()
def vsd_gradient(
    prior: Denoiser,
    particle: Denoiser,
    x: Tensor,
    *,
    t: Tensor | float | None = None,
    noise: Tensor | None = None,
    t_range: tuple[float, float] | None = None,
    weight: Callable[[Tensor], Tensor] | None = None,
    guide: Guide | None = None,
    generator: torch.Generator | None = None,
    **cond,
) -> Tensor:
    """The VSD gradient w(t) (eps_prior(x_t, t) - eps_particle(x_t, t)), shape like x (B, ...).

    ``particle`` is the denoiser of the current particle distribution (same schedule as the
    prior), trained alongside with :func:`particle_loss`. Other arguments as :func:`sds_gradient`;
    ``guide`` applies to the prior only.
    """
    if type(particle.schedule) is not type(prior.schedule):
        raise ValueError(
            f"particle schedule {particle.schedule!r} differs from the prior's {prior.schedule!r}"
        )
    xt, tt, _ = _noised(prior, x, t, noise, t_range, generator)
    _, eps_prior = model_fn(prior, guide, cond)(xt, tt)
    eps_particle = particle.eps(xt, tt, **cond)
    return _weight(prior, x, tt, weight) * (eps_prior - eps_particle)


def vsd_loss(prior: Denoiser, particle: Denoiser, x: Tensor, **kwargs) -> Tensor:
    """Surrogate scalar whose gradient w.r.t. x is :func:`vsd_gradient` / B (same keywords)."""
    return _surrogate(x, vsd_gradient(prior, particle, x, **kwargs))


def particle_loss(particle: Denoiser, x: Tensor, **kwargs) -> Tensor:
    """The particle denoiser's training loss: the ordinary denoising loss on detached samples
    x (B, ...); keywords as :func:`denoising_loss`."""
    return denoising_loss(particle, x.detach(), **kwargs)


# --- low-rank adapters ---------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """base(x) + (alpha / rank) up(down(x)) with ``base`` frozen and ``up`` zero-initialised, so
    the adapted layer starts equal to the base layer."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base.requires_grad_(False)
        self.down = nn.Linear(
            base.in_features, rank, bias=False, device=base.weight.device, dtype=base.weight.dtype
        )
        self.up = nn.Linear(
            rank, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype
        )
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.scale = (rank if alpha is None else alpha) / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))


class LoRAConv2d(nn.Module):
    """Low-rank adapter for a Conv2d (groups = 1): base(x) + (alpha / rank) up(down(x)), where
    ``down`` has the base kernel, stride and padding with ``rank`` outputs and ``up`` is a
    zero-initialised 1x1 convolution."""

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        if base.groups != 1:
            raise ValueError(f"LoRAConv2d needs groups=1, got {base.groups}")
        kw = {"device": base.weight.device, "dtype": base.weight.dtype, "bias": False}
        self.base = base.requires_grad_(False)
        self.down = nn.Conv2d(
            base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
            padding_mode=base.padding_mode, **kw,
        )  # fmt: skip
        self.up = nn.Conv2d(rank, base.out_channels, 1, **kw)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.scale = (rank if alpha is None else alpha) / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))


def add_lora(module: nn.Module, rank: int = 4, alpha: float | None = None) -> list[nn.Parameter]:
    """Freeze ``module`` and wrap, in place, every ``nn.Linear`` and ``nn.Conv2d`` (groups = 1)
    inside it with a low-rank adapter; returns the adapters' (trainable) parameters."""
    module.requires_grad_(False)
    params: list[nn.Parameter] = []

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                new = LoRALinear(child, rank, alpha)
            elif type(child) is nn.Conv2d and child.groups == 1:
                new = LoRAConv2d(child, rank, alpha)
            else:
                visit(child)
                continue
            setattr(parent, name, new)
            params.extend([new.down.weight, new.up.weight])

    visit(module)
    if not params:
        raise ValueError(f"{type(module).__name__} has no nn.Linear or nn.Conv2d layer to adapt")
    return params


def lora_copy(denoiser: Denoiser, rank: int = 4, alpha: float | None = None) -> Denoiser:
    """A deep copy of ``denoiser`` whose network is frozen except for new low-rank adapters
    (the VSD particle denoiser); at creation it predicts exactly what ``denoiser`` does."""
    if not isinstance(denoiser.net, nn.Module):
        raise TypeError(f"lora_copy needs an nn.Module network, got {type(denoiser.net).__name__}")
    twin = copy.deepcopy(denoiser)
    add_lora(twin.net, rank, alpha)
    return twin
