"""Sampling a trained image model: any ``core.sample`` method (consistency sampling included),
classifier-free guidance, in batches, with an exact count of network evaluations (NFE)."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from core.denoiser import Denoiser
from core.guidance import ClassifierFree
from core.sampling import CountingNet, grid_names, method_names, sample

from .classic import CLASSIC_FAMILIES, DIRECT, sample_classic
from .config import ImageConfig
from .datasets import balanced_labels, check_labels

__all__ = ["CONSISTENCY", "DEFAULT_METHOD", "check_direct", "generate"]

#: The method name of (one- or multi-step) consistency sampling.
CONSISTENCY = "consistency"


def _consistency_grid(den: Denoiser, steps: int) -> Tensor:
    """t_max, for 2+ steps inner times at EDM noise levels sigma~ = 0.8, 0.3, 0.1, then t_min."""
    if not 1 <= steps <= 4:
        raise ValueError(f"consistency sampling here takes 1 to 4 steps, got {steps}")
    sch = den.schedule
    lam = -torch.log(torch.tensor([0.8, 0.3, 0.1][: steps - 1], dtype=torch.float64))
    inner = sch.t_of_log_snr(lam).to(torch.float64)
    ends = torch.tensor([sch.t_max, sch.t_min], dtype=torch.float64)
    return torch.cat([ends[:1], inner, ends[1:]])


#: The default solver of the diffusion families.
DEFAULT_METHOD = "dpm_solver++"


def check_direct(family: str, method: str | None, cfg_scale: float = 1.0, grid: str | None = None) -> None:
    """Raise a ValueError when solver settings are given for a classic family (which samples directly)."""
    bad = []
    if method not in (None, DIRECT):
        bad.append(f"method={method!r}")
    if cfg_scale != 1.0:
        bad.append(f"cfg_scale={cfg_scale}")
    if grid is not None:
        bad.append(f"grid={grid!r}")
    if bad:
        raise ValueError(
            f"family {family!r} samples directly (method {DIRECT!r}); {', '.join(bad)} apply to the "
            "diffusion families only"
        )


@torch.no_grad()
def generate(
    denoiser: nn.Module,
    config: ImageConfig,
    n: int,
    *,
    method: str | None = None,
    steps: int | None = 20,
    cfg_scale: float = 1.0,
    grid: str | None = None,
    labels: Tensor | None = None,
    noise: Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict]:
    """n images (n, C, S, S) in [-1, 1] (clamped) and ``{"nfe", "seconds", ...}``.

    A classic family's model (``config.family`` in :data:`~vision.generation.classic.CLASSIC_FAMILIES`)
    samples directly (:func:`~vision.generation.classic.sample_classic`); the solver settings,
    ``noise`` and ``steps`` are for the diffusion families.

    Args:
        method: a ``core.sample`` method (default ``dpm_solver++``, which is 2M; ``ddim``, ``ddpm``,
            ``euler``, ``heun``, ``consistency`` re-noised at EDM noise levels 0.8, 0.3, 0.1, ...); ``ddpm``
            with ``steps=None`` is the full ancestral chain (``timesteps - 1`` steps on the model's
            own discrete times).
        steps: solver steps.
        grid: the step grid (``core.sampling.grid_names()``); default uniform in log-SNR,
            time-uniform for ``ddpm`` (then the full chain visits every discrete step).
        cfg_scale: classifier-free guidance scale (1 = plain conditional sampling).
        labels: class labels (n,); default balanced 0, 1, ..., 9, 0, ...
        noise: starting noise (n, C, S, S); default drawn from ``seed``.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if config.family in CLASSIC_FAMILIES:
        check_direct(config.family, method, cfg_scale, grid)
        if noise is not None:
            raise ValueError(f"family {config.family!r} draws its own latent noise; noise= is for diffusion")
        return sample_classic(
            denoiser, config, n, labels=labels, seed=seed, batch_size=batch_size, progress=progress
        )
    method = method or DEFAULT_METHOD
    if method not in method_names():
        raise ValueError(f"unknown method {method!r}; expected one of {method_names()}")
    dev = next(denoiser.parameters()).device
    labels = balanced_labels(n, config.num_classes) if labels is None else labels
    check_labels(labels, config.num_classes, n)
    g = torch.Generator().manual_seed(seed)
    shape = (n, config.channels, config.image_size, config.image_size)
    if noise is None:
        noise = torch.randn(shape, generator=g)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    counting = CountingNet(denoiser.net)
    den = Denoiser(counting, denoiser.schedule, prediction=denoiser.prediction)
    guide = None
    if cfg_scale != 1.0:
        guide = ClassifierFree(cfg_scale, {"y": denoiser.net.null_class})
    grid = grid or ("time_uniform" if method == "ddpm" else "logsnr")
    if grid not in grid_names():
        raise ValueError(f"unknown grid {grid!r}; expected one of {grid_names()}")
    if method == CONSISTENCY:
        steps = steps or 1
        grid = _consistency_grid(den, steps)
    if method == "ddpm" and steps is None:
        steps = round((den.schedule.t_max - den.schedule.t_min) * config.timesteps)
    bs = batch_size or config.eval_batch
    out, nfe = [], 0
    sampler_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    t0 = time.perf_counter()
    for i in tqdm(range(0, n, bs), desc=f"sample {method}", disable=not progress, leave=False):
        z, y = noise[i : i + bs].to(dev), labels[i : i + bs].to(dev)
        counting.calls = 0
        x = sample(
            den,
            z,
            method=method,
            steps=steps,
            guide=guide,
            cond={"y": y},
            grid=grid,
            generator=sampler_gen,
        )
        nfe = counting.calls
        out.append(x.clamp(-1, 1).cpu())
    info = {
        "method": method,
        "steps": steps,
        "nfe": nfe,
        "cfg_scale": cfg_scale,
        "seconds": time.perf_counter() - t0,
    }
    return torch.cat(out), info
