"""Dirac-GAN (Mescheder, Geiger, Nowozin 2018): the smallest GAN, and the control-theory view of why
GANs oscillate (Xu, Li, Zhu, Zhang 2020).

The data distribution is a point mass at 0, the generator a point mass at ``theta`` (one parameter)
and the discriminator linear, ``D(x) = psi * x``. The game value is

    V(theta, psi) = f(psi * theta) + f(0),   f(t) = -log(1 + exp(-t))  (GAN),   f(t) = t  (WGAN),

the discriminator ascends V and the generator descends it. Simultaneous gradient flow:

    dtheta/dt = -dV/dtheta = -f'(psi theta) psi
    dpsi/dt   =  dV/dpsi - clc * psi = f'(psi theta) theta - clc * psi

where the last term is CLC-GAN's closed-loop control, the negative feedback ``-clc * D`` on the
discriminator (its squared-L2 output regulariser ``clc/2 * E_u D(u)^2`` over a reference measure
with ``E u^2 = 1``). At the equilibrium (0, 0) the Jacobian is ``[[0, -f'(0)], [f'(0), -clc]]``:
for GAN and WGAN its eigenvalues ``+-i f'(0)`` are purely imaginary (the iterates circle the
equilibrium forever, or spiral out under discrete steps), with CLC they are
``(-clc +- sqrt(clc^2 - 4 f'(0)^2)) / 2``, both with negative real part (the iterates converge).
The library computes the Jacobian by automatic differentiation of the vector field, not from the
closed form above (the tests compare the two).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DIRAC_LOSSES",
    "dirac_gan_eigenvalues",
    "dirac_gan_field",
    "dirac_gan_iterates",
    "dirac_gan_jacobian",
    "dirac_phase_plot",
]

DIRAC_LOSSES = ("gan", "wgan")


def _check(loss: str, clc: float) -> None:
    if loss not in DIRAC_LOSSES:
        raise ValueError(f"unknown Dirac-GAN loss {loss!r}; expected one of {DIRAC_LOSSES}")
    if not clc >= 0:
        raise ValueError(f"clc must be >= 0, got {clc}")


def _value(theta: Tensor, psi: Tensor, loss: str) -> Tensor:
    t = psi * theta
    return -F.softplus(-t) if loss == "gan" else t


def dirac_gan_field(state: Tensor, loss: str = "gan", clc: float = 0.0) -> Tensor:
    """The simultaneous-gradient vector field at ``state`` (..., 2) = (theta, psi), from autograd of V."""
    _check(loss, clc)
    state = torch.as_tensor(state, dtype=torch.float64)
    if state.shape[-1] != 2:
        raise ValueError(f"state must have shape (..., 2) = (theta, psi), got {tuple(state.shape)}")
    with torch.enable_grad():
        s = state if state.requires_grad else state.detach().requires_grad_(True)
        v = _value(s[..., 0], s[..., 1], loss).sum()
        (g,) = torch.autograd.grad(v, s, create_graph=state.requires_grad)
    out = torch.stack([-g[..., 0], g[..., 1] - clc * s[..., 1]], dim=-1)
    return out if state.requires_grad else out.detach()


def dirac_gan_jacobian(loss: str = "gan", clc: float = 0.0, at: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """The (2, 2) Jacobian of :func:`dirac_gan_field` at ``at`` (default: the equilibrium), float64."""
    _check(loss, clc)
    x = torch.tensor(at, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda s: dirac_gan_field(s, loss, clc), x)


def dirac_gan_eigenvalues(loss: str = "gan", clc: float = 0.0) -> Tensor:
    """Complex eigenvalues (2,) of the Jacobian at the equilibrium (0, 0)."""
    return torch.linalg.eigvals(dirac_gan_jacobian(loss, clc))


def dirac_gan_iterates(
    start: tuple[float, float] = (1.0, 1.0),
    loss: str = "gan",
    clc: float = 0.0,
    lr: float = 0.1,
    steps: int = 500,
) -> Tensor:
    """Simultaneous gradient steps ``s <- s + lr * field(s)`` from ``start``; returns (steps + 1, 2)."""
    _check(loss, clc)
    if not lr > 0 or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"lr must be > 0 and steps a positive int, got lr={lr}, steps={steps!r}")
    s = torch.tensor(start, dtype=torch.float64)
    out = [s]
    for _ in range(steps):
        s = s + lr * dirac_gan_field(s, loss, clc)
        out.append(s)
    return torch.stack(out)


def dirac_phase_plot(
    path: str | os.PathLike, *, clc: float = 1.0, lr: float = 0.1, steps: int = 400
) -> dict[str, list[complex]]:
    """Write the Dirac-GAN phase portrait (GAN and WGAN circle, CLC-GAN converges) as a PNG at ``path``.

    Returns the equilibrium eigenvalues of each curve, keyed ``"gan"``, ``"wgan"``, ``"clc_gan"``,
    ``"clc_wgan"``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    curves = {
        "gan": ("gan", 0.0),
        "wgan": ("wgan", 0.0),
        "clc_gan": ("gan", clc),
        "clc_wgan": ("wgan", clc),
    }
    eig: dict[str, list[complex]] = {}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    grid = torch.linspace(-1.6, 1.6, 15, dtype=torch.float64)
    tt, pp = torch.meshgrid(grid, grid, indexing="xy")
    for ax, loss in zip(axes, DIRAC_LOSSES, strict=True):
        field = dirac_gan_field(torch.stack([tt, pp], -1), loss)
        ax.quiver(tt, pp, field[..., 0], field[..., 1], color="0.75", angles="xy")
        for name, (kind, c) in curves.items():
            if kind != loss:
                continue
            path_ = dirac_gan_iterates((1.0, 1.0), kind, c, lr, steps)
            ev = dirac_gan_eigenvalues(kind, c)
            eig[name] = [complex(v) for v in ev.tolist()]
            label = f"{'CLC, ' if c else ''}eig {ev[0].real:+.2f}{ev[0].imag:+.2f}i"
            ax.plot(path_[:, 0], path_[:, 1], lw=1.2, label=label)
        ax.plot([0], [0], "k*", ms=10)
        ax.set(title=f"Dirac-{loss.upper()}", xlabel="generator theta", ylabel="discriminator psi")
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return eig
