"""Parity with diffusers on a discrete 1000-step model: DPM-Solver++(2M) and DDIM.

Both sides use the same alphas_cumprod (diffusers' float32 values), the same network and the
same time grid: diffusers' own timesteps (t = (n + 1) / N here) down to timestep 0
(``final_sigmas_type="sigma_min"``, ``set_alpha_to_one=False``).
"""

import pytest
import torch

from core import Denoiser, VPSchedule
from core.sampling import sample

N = 1000


class TimeMLP(torch.nn.Module):
    """A small fixed random eps-network of (x, float timestep)."""

    def __init__(self, dim: int = 4, width: int = 32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w1", torch.randn(dim + 2, width, generator=g) / dim**0.5)
        self.register_buffer("w2", torch.randn(width, dim, generator=g) / width**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None] / N
        h = torch.cat([x, torch.sin(3 * tt), torch.cos(3 * tt)], 1) @ self.w1.to(x.dtype)
        return torch.tanh(h) @ self.w2.to(x.dtype) + 0.5 * x


def _setup(scheduler_cls, **config):
    sch = scheduler_cls(num_train_timesteps=N, beta_schedule="linear", **config)
    ac = sch.alphas_cumprod.to(torch.float64)
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    return sch, Denoiser(TimeMLP(), VPSchedule.discrete(betas), "eps")


def _grid(timesteps: torch.Tensor) -> torch.Tensor:
    return torch.cat([(timesteps.to(torch.float64) + 1) / N, torch.tensor([1.0 / N], dtype=torch.float64)])


def _run_diffusers(sch, net, x):
    for t in sch.timesteps:
        x = sch.step(net(x, t.to(x.dtype)), t, x).prev_sample
    return x


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dpm_solver_pp_2m_matches_diffusers(steps, dtype):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed: parity tests skipped")
    sch, den = _setup(
        diffusers.DPMSolverMultistepScheduler,
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="sigma_min",
        lower_order_final=True,
    )
    sch.set_timesteps(steps)
    x_T = torch.randn(16, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ref = _run_diffusers(sch, den.net, x_T.clone())
    grid = _grid(sch.timesteps)
    ours = sample(den, x_T, method="dpm_solver++", order=2, multistep=True, grid=grid)
    sigma_hat = den.schedule.sigma(grid) / den.schedule.alpha(grid)  # diffusers' sigmas
    assert torch.allclose(sigma_hat, sch.sigmas.to(torch.float64), rtol=1e-6)
    assert _rel(ours, ref) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ddim_matches_diffusers(dtype):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed: parity tests skipped")
    sch, den = _setup(
        diffusers.DDIMScheduler, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"
    )
    sch.set_timesteps(10)
    x_T = torch.randn(16, 4, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ref = _run_diffusers(sch, den.net, x_T.clone())
    ours = sample(den, x_T, method="ddim", grid=_grid(sch.timesteps))
    assert _rel(ours, ref) <= 1e-5


@pytest.mark.parametrize("dim", [2, 16])
def test_default_beats_diffusers_default_on_the_oracle(dim):
    """The README's claim: core.sample's defaults have at most 0.2x the error of diffusers'
    default DPMSolverMultistepScheduler at 10 and 20 NFE (median over trajectories, exact oracle)."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed: comparison skipped")
    from core.schedules import linear_betas
    from core.testing import GaussianMixture

    gm = GaussianMixture.random(dim, k=8, seed=0, schedule=VPSchedule.discrete(linear_betas(N)))
    den = gm.as_denoiser("eps")
    x_T = torch.randn(128, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = gm.reference_solution(x_T)
    for nfe in (10, 20):
        sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=N)
        sch.set_timesteps(nfe)
        theirs = float((_run_diffusers(sch, den.net, x_T.clone()) - ref).norm(dim=1).median())
        ours = float((sample(den, x_T, steps=nfe) - ref).norm(dim=1).median())
        assert ours <= 0.2 * theirs, (nfe, ours, theirs)
