"""Checks every registered sampling method must pass, derived from the registry.

A method registered with ``core.sampling.register`` is picked up here without editing a list
(as diffusers' common scheduler tests do): every supported (order, multistep) configuration
runs on the exact Gaussian-mixture oracle and is checked for shape and dtype, determinism
under a generator, guidance, inpainting and the conditioning reaching the guides.
"""

import pytest
import torch

from core import Denoiser, VPSchedule
from core.guidance import Energy, Inpaint, Project, combine
from core.sampling import get_method, method_names, sample
from core.testing import GaussianMixture

SCH = VPSchedule.linear()
GM = GaussianMixture.random(3, k=4, seed=0, schedule=SCH)
STEPS = 5


def _configs() -> list[tuple[str, int, bool]]:
    """Every (method, order, multistep) the registry declares."""
    return [
        (name, order, ms)
        for name in method_names()
        for order in get_method(name).orders
        for ms in get_method(name).multistep
    ]


CONFIGS = _configs()
IDS = [f"{n}-o{o}-{'multi' if ms else 'single'}" for n, o, ms in CONFIGS]


def _options(name: str) -> dict:
    """Options a method requires: a Gamma table for methods declaring ``gamma`` (Analytic-DPM)."""
    return {"gamma": lambda t: torch.full_like(t, 0.5)} if "gamma" in get_method(name).options else {}


def _denoiser(record: list | None = None) -> Denoiser:
    """The oracle as a network that accepts (and ignores) any conditioning keyword."""
    exact = GM.as_denoiser("eps").net

    def net(x, t, **cond):
        if record is not None:
            record.append(sorted(cond))
        return exact(x, t)

    return Denoiser(net, SCH, "eps")


def _x_T(b: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, GM.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _run(den, x_T, name, order, ms, **kw):
    return sample(
        den,
        x_T,
        method=name,
        order=order,
        multistep=ms,
        steps=STEPS,
        generator=torch.Generator().manual_seed(7),
        **_options(name),
        **kw,
    )


@pytest.mark.parametrize("name,order,ms", CONFIGS, ids=IDS)
def test_cond_reaches_energy_and_projection(name, order, ms):
    """An energy and a projection read a mask from ``cond`` (no closure) under every sampler;
    the result equals the same guides closing over the mask, and the mask holds exactly."""
    mask = torch.tensor([True, False, True])
    target = torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    seen = []

    def energy(x, t, mask, **cond):
        seen.append(mask)
        return ((x - target) ** 2 * mask).sum(1)

    def pin(x, t, mask, **cond):
        return torch.where(mask, torch.zeros_like(x), x)

    x_T = _x_T()
    via_cond = _run(
        _denoiser(),
        x_T,
        name,
        order,
        ms,
        guide=combine(Energy(energy, 0.7), Project(pin)),
        cond={"mask": mask},
    )
    closure = combine(
        Energy(lambda x, t, **c: ((x - target) ** 2 * mask).sum(1), 0.7),
        Project(lambda x, t, **c: torch.where(mask, torch.zeros_like(x), x)),
    )
    via_closure = _run(_denoiser(), x_T, name, order, ms, guide=closure)
    m = get_method(name)
    assert len(seen) == m.nfe(STEPS, order, ms) and all(s is mask for s in seen)
    assert torch.equal(via_cond, via_closure)
    assert bool((via_cond[:, mask] == 0).all()) and bool((via_cond[:, ~mask] != 0).all())


@pytest.mark.parametrize("name,order,ms", CONFIGS, ids=IDS)
def test_shape_dtype_and_determinism(name, order, ms):
    seen = []
    den = _denoiser(seen)
    for dtype in (torch.float64, torch.float32):
        x_T = _x_T().to(dtype)
        a = _run(den, x_T, name, order, ms, cond={"label": 3})
        b = _run(den, x_T, name, order, ms, cond={"label": 3})
        assert a.shape == x_T.shape and a.dtype == dtype
        assert bool(torch.isfinite(a).all()) and torch.equal(a, b)
    assert seen and all(keys == ["label"] for keys in seen)


@pytest.mark.parametrize("name,order,ms", CONFIGS, ids=IDS)
def test_inpainting_holds_known_entries(name, order, ms):
    mask = torch.tensor([[True, False, False]]).expand(6, 3)
    values = torch.full((6, 3), 0.25, dtype=torch.float64)
    x, traj = _run(_denoiser(), _x_T(), name, order, ms, guide=Inpaint(mask, values), return_trajectory=True)
    assert traj.shape == (STEPS + 1, 6, 3)
    assert bool((traj[:, :, 0] == 0.25).all()) and torch.equal(traj[-1], x)


@pytest.mark.parametrize("name,order,ms", CONFIGS, ids=IDS)
def test_energy_guidance_equals_the_tilted_network(name, order, ms):
    """A linear energy E = s c.x shifts every noise prediction by s sigma_t c: guided sampling
    must equal unguided sampling of a network that adds that shift itself (every evaluation
    corrected, with the right sign and scale)."""
    c = torch.tensor([0.7, -0.4, 0.2], dtype=torch.float64)
    scale = 0.6
    exact = GM.as_denoiser("eps").net

    def tilted(x, t, **cond):  # VPSchedule.linear's network time is t itself
        return exact(x, t) + scale * SCH.sigma(t.to(torch.float64))[:, None] * c

    x_T = _x_T()
    guided = _run(_denoiser(), x_T, name, order, ms, guide=Energy(lambda x, t, **k: (x * c).sum(1), scale))
    shifted = _run(Denoiser(tilted, SCH, "eps"), x_T, name, order, ms)
    assert torch.allclose(guided, shifted, rtol=0, atol=1e-9)
    assert not torch.allclose(guided, _run(_denoiser(), x_T, name, order, ms), atol=1e-3)
