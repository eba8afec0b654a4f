"""SDS vs VSD on a 2-D prior with a known target (a stage of the image benchmark).

The target is a ring of ``modes`` equal Gaussians (radius ``radius``, std ``mode_std``). A small
MLP diffusion model (eps prediction, linear VP schedule) is trained on it and frozen: the prior.
From the same initial particles, score distillation sampling (SDS) and variational score
distillation (VSD, particle denoiser = low-rank adapters on a copy of the prior, fine-tuned on
the particles) each move a set of particles. Reported per method: sliced Wasserstein distance
to fresh target samples, the number of modes holding a particle (within 3 std), the spread
(rms distance to the nearest mode over ``mode_std``: about 1 for the target) and the extent
(rms distance to the origin over the target's: about 1 for the target, near 0 for a collapse
onto the centre, the mode of the heavily noised prior).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from core.config import save_config
from core.denoiser import Denoiser
from core.files import atomic_write
from core.metrics import sliced_wasserstein
from core.nets.mlp import MLPConfig, MLPNet
from core.objectives import denoising_loss, lora_copy, particle_loss, sds_loss, vsd_loss
from core.plotting import save_figure
from core.schedules import VPSchedule
from core.training import Trainer, TrainerConfig

__all__ = ["Distill2DConfig", "DISTILL2D_PRESETS", "ring_mixture", "run_distill2d"]


@dataclass
class Distill2DConfig:
    """Settings of the SDS/VSD comparison; times in optimisation steps."""

    modes: int = 8
    radius: float = 2.0
    mode_std: float = 0.2
    prior_steps: int = 3000
    prior_hidden: int = 128
    particles: int = 512
    iterations: int = 2000
    particle_lr: float = 0.02
    lora_rank: int = 8
    lora_lr: float = 3e-3
    lora_steps_per_iteration: int = 2
    init_std: float = 0.5


DISTILL2D_PRESETS = {
    "smoke": Distill2DConfig(prior_steps=150, prior_hidden=32, particles=64, iterations=40),
    "quick": Distill2DConfig(),
    "paper": Distill2DConfig(prior_steps=20000, prior_hidden=256, particles=2000, iterations=5000),
}


def _centres(config: Distill2DConfig) -> torch.Tensor:
    a = 2 * math.pi * torch.arange(config.modes, dtype=torch.float32) / config.modes
    return config.radius * torch.stack([a.cos(), a.sin()], 1)


def ring_mixture(config: Distill2DConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """n samples (n, 2) of the target: equal Gaussians of std ``mode_std`` on a ring."""
    k = torch.randint(0, config.modes, (n,), generator=generator)
    return _centres(config)[k] + config.mode_std * torch.randn(n, 2, generator=generator)


def _mode_stats(x: torch.Tensor, config: Distill2DConfig) -> dict:
    """Modes holding a particle within 3 std; rms distance to the nearest mode / mode_std;
    rms distance to the origin / the target's (radius^2 + 2 std^2)^1/2."""
    c = _centres(config)
    d = torch.cdist(x, c)
    nearest = d.argmin(1)
    close = d.min(1).values < 3 * config.mode_std
    covered = int(torch.unique(nearest[close]).numel())
    spread = float((x - c[nearest]).pow(2).sum(1).mean().div(2).sqrt()) / config.mode_std
    extent = float(x.pow(2).sum(1).mean().sqrt()) / math.sqrt(config.radius**2 + 2 * config.mode_std**2)
    return {"modes_covered": covered, "spread_ratio": spread, "extent_ratio": extent}


def _train_prior(config: Distill2DConfig, out: Path, seed: int, progress: bool) -> Denoiser:
    g = torch.Generator().manual_seed(seed)
    data = ring_mixture(config, 20000, g)
    den = Denoiser(MLPNet(MLPConfig(dim=2, hidden=config.prior_hidden, depth=3)), VPSchedule.linear(), "eps")
    loader = DataLoader(TensorDataset(data), batch_size=512, shuffle=True, drop_last=True)
    cfg = TrainerConfig(
        steps=config.prior_steps, lr=2e-3, schedule="cosine", warmup_steps=min(100, config.prior_steps // 2),
        ema_decay=0.999, out_dir=str(out / "prior"), seed=seed, device="cpu",
        progress=progress, ckpt_every=None, log_every=100, tensorboard=False,
    )  # fmt: skip
    trainer = Trainer(den, lambda m, b: denoising_loss(m, b[0]), loader, cfg)
    trainer.fit(resume=True)
    trainer.ema.copy_to(den)
    return den.eval().requires_grad_(False)


def _distill(
    method: str, prior: Denoiser, x_init: torch.Tensor, config: Distill2DConfig, seed: int
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = x_init.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.particle_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.iterations)
    if method == "vsd":
        particle = lora_copy(prior, rank=config.lora_rank)
        particle.train()
        lora_opt = torch.optim.Adam([p for p in particle.parameters() if p.requires_grad], lr=config.lora_lr)
    for _ in range(config.iterations):
        if method == "vsd":
            for _ in range(config.lora_steps_per_iteration):
                loss = particle_loss(particle, x, generator=g)
                lora_opt.zero_grad(set_to_none=True)
                loss.backward()
                lora_opt.step()
            loss = vsd_loss(prior, particle, x, generator=g)
        else:
            loss = sds_loss(prior, x, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return x.detach()


def run_distill2d(config: Distill2DConfig, out: str | Path, *, seed: int = 0, progress: bool = False) -> dict:
    """Train the prior, run SDS and VSD from the same particles, write ``metrics.json`` and
    ``sds_vs_vsd.png`` into ``out``; returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    torch.manual_seed(seed)
    start = time.perf_counter()
    prior = _train_prior(config, out, seed, progress)
    g = torch.Generator().manual_seed(seed + 1)
    target = ring_mixture(config, 4000, g)
    x_init = config.init_std * torch.randn(config.particles, 2, generator=g)
    sw_gen = torch.Generator()

    def row(x: torch.Tensor) -> dict:
        sw = float(sliced_wasserstein(x, target, generator=sw_gen.manual_seed(0)))
        return {"sliced_wasserstein": sw, **_mode_stats(x, config)}

    results = {"target (fresh samples)": row(ring_mixture(config, config.particles, g))}
    results["initial particles"] = row(x_init)
    samples = {}
    for method in ("sds", "vsd"):
        t0 = time.perf_counter()
        samples[method] = _distill(method, prior, x_init, config, seed + 2)
        results[method] = row(samples[method]) | {"seconds": time.perf_counter() - t0}
    metrics = {"modes": config.modes, "results": results, "seconds": time.perf_counter() - start}
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    _plot(target, x_init, samples, results, out / "sds_vs_vsd.png")
    return metrics


def _plot(target, x_init, samples, results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("target", target[:1000]), ("initial particles", x_init)]
    panels += [(m.upper(), x) for m, x in samples.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, panels, strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.6)
        key = name.lower()
        if key in results:
            r = results[key]
            sw, modes, ext = r["sliced_wasserstein"], r["modes_covered"], r["extent_ratio"]
            name = f"{name}\nSW {sw:.3f}, modes {modes}, extent {ext:.2f}"
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
    save_figure(fig, path)
