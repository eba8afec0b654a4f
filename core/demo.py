"""The core demo: a small diffusion model on a 2-D toy density, sampled by several solvers, then
the classic families.

Trains a time-conditioned MLP (eps prediction, linear VP schedule) on "two moons" with the
:class:`core.Trainer`, then draws the same initial noise through DDPM, DDIM, DPM-Solver(-3),
DPM-Solver++(2M), Heun and Euler-Maruyama, and reports each solver's sliced Wasserstein
distance to held-out data against its number of network evaluations (NFE). The classic-families
stage (:mod:`core.demo_families`) draws the Dirac-GAN phase portrait (GAN and WGAN circle, CLC-GAN
converges) and trains GAN, WGAN-GP, CLC-GAN, a VAE and RNADE on the same data.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from .config import save_config  # noqa: E402
from .demo_families import report_lines, run_families_stage  # noqa: E402
from .denoiser import Denoiser  # noqa: E402
from .files import atomic_write  # noqa: E402
from .metrics import sliced_wasserstein  # noqa: E402
from .nets.mlp import MLPConfig, MLPNet  # noqa: E402
from .objectives import denoising_loss  # noqa: E402
from .plotting import scatter_panels  # noqa: E402
from .sampling import CountingNet, sample  # noqa: E402
from .schedules import VPSchedule  # noqa: E402
from .training import Trainer, TrainerConfig, resolve_device  # noqa: E402

__all__ = ["ToyDemoConfig", "PRESETS", "two_moons", "run_toy_demo"]


@dataclass
class ToyDemoConfig:
    """Settings of the 2-D demo; ``samples`` points are drawn by every solver."""

    train_steps: int = 4000
    batch_size: int = 512
    hidden: int = 128
    depth: int = 3
    lr: float = 2e-3
    data_size: int = 20000
    samples: int = 4000
    ddpm_steps: int = 1000
    family_steps: int = 600
    family_hidden: int = 64


PRESETS = {
    "quick": ToyDemoConfig(),
    "smoke": ToyDemoConfig(
        train_steps=200,
        batch_size=256,
        hidden=64,
        data_size=2000,
        samples=500,
        ddpm_steps=100,
        family_steps=60,
        family_hidden=32,
    ),  # fmt: skip
}

# (label, core.sample keyword arguments); NFE is read from the counting wrapper, not assumed.
SOLVERS = [
    ("DDPM (ancestral)", dict(method="ddpm")),
    ("DDIM, 20 steps", dict(method="ddim", steps=20)),
    ("DPM-Solver-3, 4 steps", dict(method="dpm_solver", order=3, multistep=False, steps=4)),
    ("DPM-Solver++(2M), 10 steps", dict(method="dpm_solver++", order=2, multistep=True, steps=10)),
    ("Heun (EDM), 10 steps", dict(method="heun", steps=10)),
    ("Euler-Maruyama, 100 steps", dict(method="euler_maruyama", steps=100)),
]


def two_moons(n: int, generator: torch.Generator, noise: float = 0.06) -> torch.Tensor:
    """n points of the two-moons density, standardised to zero mean and unit scale, shape (n, 2)."""
    u = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(u), 1.0 - torch.cos(u))
    y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
    pts = torch.stack([x, y], 1) + noise * torch.randn(n, 2, generator=generator)
    return (pts - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])


def run_toy_demo(
    config: ToyDemoConfig, out: Path, device: str = "cpu", seed: int = 0, progress: bool = True
) -> dict:
    """Train, sample with every solver, run the classic-families stage; write ``metrics.json``,
    ``samplers.png``, ``dirac_gan.png``, ``families.png`` and ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed)
    data = two_moons(config.data_size, g)
    held_out = two_moons(config.samples, g)

    schedule = VPSchedule.linear()
    net = MLPNet(MLPConfig(dim=2, hidden=config.hidden, depth=config.depth))
    denoiser = Denoiser(net, schedule, prediction="eps")
    loader = DataLoader(TensorDataset(data), batch_size=config.batch_size, shuffle=True, drop_last=True)
    trainer = Trainer(
        denoiser,
        lambda model, batch: denoising_loss(model, batch[0]),
        loader,
        TrainerConfig(
            steps=config.train_steps,
            lr=config.lr,
            schedule="cosine",
            warmup_steps=100,
            ema_decay=0.999,
            out_dir=str(out / "train"),
            seed=seed,
            device=str(dev),
            progress=progress,
            ckpt_every=None,
            log_every=100,
            tensorboard=False,
        ),
    )
    start = time.perf_counter()
    trainer.fit(resume=False)
    train_seconds = time.perf_counter() - start
    trainer.ema.copy_to(denoiser)
    net.eval().to(dev)

    counting = CountingNet(net)
    model = Denoiser(counting, schedule, prediction="eps")
    x_T = schedule.prior_std() * torch.randn(config.samples, 2, generator=g)
    rows, samples = [], {}
    for label, kwargs in SOLVERS:
        kwargs = dict(kwargs)
        if kwargs["method"] == "ddpm":
            kwargs["steps"] = config.ddpm_steps
            label = f"DDPM (ancestral), {config.ddpm_steps} steps"
        counting.calls = 0
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        start = time.perf_counter()
        x = sample(model, x_T.to(dev), generator=gen, grid="logsnr", **kwargs).cpu()
        seconds = time.perf_counter() - start
        sw = float(sliced_wasserstein(x, held_out, generator=torch.Generator().manual_seed(0)))
        rows.append(
            {"solver": label, **kwargs, "nfe": counting.calls, "sliced_wasserstein": sw, "seconds": seconds}
        )
        samples[label] = x
    floor = float(
        sliced_wasserstein(two_moons(config.samples, g), held_out, generator=torch.Generator().manual_seed(0))
    )

    classic = run_families_stage(
        data, held_out, out, steps=config.family_steps, hidden=config.family_hidden,
        batch_size=config.batch_size, device=str(dev), seed=seed, progress=progress,
    )  # fmt: skip
    metrics = {
        "train_steps": config.train_steps,
        "train_seconds": train_seconds,
        "final_loss": _last_loss(out / "train" / "metrics.csv"),
        "data_vs_data_sliced_wasserstein": floor,
        "solvers": rows,
        **classic,
    }
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    _plot(data, samples, rows, out / "samplers.png")
    _report(metrics, out / "report.md")
    return metrics


def _last_loss(csv_path: Path) -> float | None:
    if not csv_path.exists():
        return None
    lines = csv_path.read_text().strip().splitlines()
    header = lines[0].split(",")
    return float(lines[-1].split(",")[header.index("loss")]) if len(lines) > 1 else None


def _plot(data: torch.Tensor, samples: dict, rows: list[dict], path: Path) -> None:
    panels = [
        (f"{r['solver']}\nNFE {r['nfe']}, SW {r['sliced_wasserstein']:.3f}", samples[r["solver"]])
        for r in rows
    ]
    scatter_panels(data, panels, path, color="C0")


def _report(metrics: dict, path: Path) -> None:
    lines = [
        "## core — one diffusion model, six samplers",
        "",
        f"A 2-D two-moons diffusion model (MLP, eps prediction, linear VP schedule) trained for "
        f"{metrics['train_steps']} steps ({metrics['train_seconds']:.0f} s, "
        f"final loss {metrics['final_loss']:.3f}), "
        "sampled from the same noise by each solver on a uniform log-SNR grid. Sliced Wasserstein "
        "distance to held-out data (two fresh data sets differ by "
        f"{metrics['data_vs_data_sliced_wasserstein']:.3f}):",
        "",
        "| solver | NFE | sliced W2 | seconds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['solver']} | {r['nfe']} | {r['sliced_wasserstein']:.4f} | {r['seconds']:.2f} |"
        for r in metrics["solvers"]
    ]
    lines += ["", "![samples of each solver](./samplers.png)", ""]
    lines += report_lines(metrics)
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines))
