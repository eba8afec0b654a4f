"""The classic-families stage of the core demo: the Dirac-GAN phase portrait, and samples of a few
classic families trained on the same 2-D two-moons data as the diffusion model.

- Dirac-GAN (:mod:`core.families.dirac`): the equilibrium eigenvalues of the simultaneous-gradient
  dynamics of GAN and WGAN (zero real part: the iterates circle) and with CLC-GAN's control
  (negative real part: they converge), computed by the library, with the phase portrait and the
  iterates' final distance to the equilibrium.
- GAN, WGAN-GP and CLC-GAN (MLP generator and critic, :class:`~core.families.GANGame`), a VAE with a
  Gaussian decoder and RNADE, each trained for the same number of optimizer steps (all players of a
  game together) by :class:`core.Trainer`, scored by the sliced Wasserstein distance of their
  samples to held-out data.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .families import (
    GAN,
    GAN_FAMILIES,
    RNADE,
    VAE,
    GANGame,
    MLPCritic,
    MLPGenerator,
    dirac_gan_iterates,
    dirac_phase_plot,
    nll_loss,
    vae_loss,
)
from .metrics import sliced_wasserstein
from .plotting import scatter_panels
from .training import Trainer, TrainerConfig

__all__ = ["TOY_FAMILIES", "dirac_summary", "report_lines", "run_families_stage"]

#: The families of the 2-D panel, in plotting order, with their labels.
TOY_FAMILIES = {"gan": "GAN", "wgan_gp": "WGAN-GP", "clc_gan": "CLC-GAN", "vae": "VAE", "rnade": "RNADE"}


def dirac_summary(path: Path, clc: float = 1.0, lr: float = 0.1, steps: int = 400) -> dict:
    """Write the Dirac-GAN phase portrait to ``path``; returns the equilibrium eigenvalues (as
    ``[real, imag]`` pairs) of GAN, WGAN, CLC-GAN and CLC-WGAN and the distance to the equilibrium
    after ``steps`` simultaneous gradient steps of size ``lr`` from (1, 1)."""
    eig = dirac_phase_plot(path, clc=clc, lr=lr, steps=steps)
    runs = {"gan": ("gan", 0.0), "wgan": ("wgan", 0.0), "clc_gan": ("gan", clc), "clc_wgan": ("wgan", clc)}
    dist = {}
    for key, (loss, c) in runs.items():
        dist[key] = float(dirac_gan_iterates((1.0, 1.0), loss, c, lr, steps)[-1].norm())
    return {
        "clc": clc,
        "eigenvalues": {k: [[v.real, v.imag] for v in vals] for k, vals in eig.items()},
        "final_distance": dist,
        "lr": lr,
        "steps": steps,
    }


def _model(name: str, hidden: int) -> tuple[nn.Module, object]:
    if name in GAN_FAMILIES:
        model = GAN(MLPGenerator(2, 2, hidden=hidden, depth=3), MLPCritic(2, hidden=hidden, depth=3), 2)
        return model, GANGame(replace(GAN_FAMILIES[name], lr_critic=1e-3, lr_generator=1e-3))
    if name == "vae":
        return VAE((2,), latent_dim=2, hidden=hidden, decoder="gaussian", arch="mlp"), vae_loss
    return RNADE(2, hidden=hidden, components=8), nll_loss


def _draw(name: str, model: nn.Module, n: int) -> Tensor:
    if name == "vae":
        return model.sample(n, mean=False)  # with the decoder's noise: draws from p(x)
    return model.sample(n)


def run_families_stage(
    data: Tensor,
    held_out: Tensor,
    out: Path,
    *,
    steps: int,
    hidden: int,
    batch_size: int,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Train every family of :data:`TOY_FAMILIES` on ``data`` (N, 2) for ``steps`` optimizer steps,
    sample as many points as ``held_out`` (M, 2) holds, and write ``families.png`` and
    ``dirac_gan.png`` into ``out``; returns ``{"families": [rows], "dirac_gan": {...}}``."""
    rows, samples = [], {}
    for name, label in TOY_FAMILIES.items():
        torch.manual_seed(seed)
        model, objective = _model(name, hidden)
        game = isinstance(objective, GANGame)
        loader = DataLoader(TensorDataset(data), batch_size=batch_size, shuffle=True, drop_last=True)
        cfg = TrainerConfig(
            steps=steps, lr=2e-3, schedule="cosine", grad_clip=None if game else 1.0,
            ema_decay=0.999 if game else None, out_dir=str(out / "families" / name),
            seed=seed, device=device, progress=progress, ckpt_every=None, log_every=max(1, steps // 10),
            tensorboard=False,
        )  # fmt: skip
        trainer = Trainer(model, objective, loader, cfg)
        start = time.perf_counter()
        trainer.fit(resume=False)
        seconds = time.perf_counter() - start
        if trainer.ema is not None:
            trainer.ema.copy_to(model.generator)
        model.eval()
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
            torch.manual_seed(seed + 1)
            with torch.no_grad():
                x = _draw(name, model, len(held_out)).float().cpu()
        sw = float(sliced_wasserstein(x, held_out, generator=torch.Generator().manual_seed(0)))
        rows.append({"family": label, "key": name, "sliced_wasserstein": sw, "train_seconds": seconds})
        samples[name] = x
    _plot(data, samples, rows, out / "families.png")
    return {"families": rows, "dirac_gan": dirac_summary(out / "dirac_gan.png"), "family_steps": steps}


def _plot(data: Tensor, samples: dict[str, Tensor], rows: list[dict], path: Path) -> None:
    panels = [(f"{r['family']}\nSW {r['sliced_wasserstein']:.3f}", samples[r["key"]]) for r in rows]
    scatter_panels(data, panels, path, color="C1")


def report_lines(metrics: dict) -> list[str]:
    """The markdown of the stage for the core demo's report."""
    d = metrics["dirac_gan"]
    ev = d["eigenvalues"]

    def fmt(pair: list[float]) -> str:
        return f"{pair[0]:+.3f}{pair[1]:+.3f}i"

    lines = [
        "### Classic families",
        "",
        "Dirac-GAN (a point-mass generator theta, a linear discriminator psi x): the library's "
        "Jacobian of the simultaneous-gradient field at the equilibrium has purely imaginary "
        "eigenvalues for GAN and WGAN, so the iterates circle it (and spiral outwards under discrete "
        "simultaneous steps); CLC-GAN's closed-loop control "
        f"(weight {d['clc']:g}) moves them into the left half-plane and the iterates converge "
        f"(distance to the equilibrium after {d['steps']} steps of size {d['lr']:g} from (1, 1)):",
        "",
        "| dynamics | eigenvalues | final distance |",
        "|---|---|---|",
    ]
    for key, label in (("gan", "GAN"), ("wgan", "WGAN"), ("clc_gan", "CLC-GAN"), ("clc_wgan", "CLC-WGAN")):
        pair = ", ".join(fmt(v) for v in ev[key])
        lines.append(f"| {label} | {pair} | {d['final_distance'][key]:.3g} |")
    lines += [
        "",
        "![Dirac-GAN phase portrait](./dirac_gan.png)",
        "",
        f"Classic families on the same two moons, {metrics['family_steps']} optimizer steps each "
        "(all players of a game together: WGAN-GP and CLC-GAN take five critic steps per generator "
        "step), one seed; sliced Wasserstein distance of their samples to held-out data:",
        "",
        "| family | sliced W2 | train seconds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['family']} | {r['sliced_wasserstein']:.4f} | {r['train_seconds']:.1f} |"
        for r in metrics["families"]
    ]
    lines += ["", "![samples of each family](./families.png)", ""]
    return lines
