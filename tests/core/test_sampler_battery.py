"""Checks every registered sampling method must pass, derived from the registry.

A method registered with ``core.sampling.register`` is picked up here without editing a list
(as diffusers' common scheduler tests do): every supported (order, multistep) configuration
runs on the exact Gaussian-mixture oracle and is checked for shape and dtype, determinism
under a generator, guidance, inpainting, the conditioning reaching the guides, the per-step
callback and the injectable noise function.
"""

import pytest
import torch

from core import Denoiser, VPSchedule
from core.guidance import Energy, Inpaint, Project, combine
from core.oracle import GaussianMixture
from core.sampling import gaussian_noise, get_method, make_grid, method_names, sample

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


@pytest.mark.parametrize("name,order,ms", CONFIGS, ids=IDS)
def test_callback_sees_each_step_state_and_denoised_estimate(name, order, ms):
    den, x_T = _denoiser(), _x_T()
    seen = []
    x, traj = _run(den, x_T, name, order, ms, return_trajectory=True, callback=lambda *a: seen.append(a))
    assert torch.equal(x, _run(den, x_T, name, order, ms))  # observing changes nothing
    ts = make_grid("logsnr", SCH, STEPS, SCH.t_max, SCH.t_min).tolist()
    assert [s[0] for s in seen] == list(range(STEPS)) and [s[1] for s in seen] == ts[:-1]
    for i, t, xi, x0 in seen:
        assert torch.equal(xi, traj[i])
        assert torch.allclose(x0, GM.x0(xi, t), rtol=0, atol=1e-10)


def _counting_noise(calls: list, scale: float = 1.0, fixed: torch.Tensor | None = None):
    def noise_fn(like, generator, **cond):
        calls.append(sorted(cond))
        z = gaussian_noise(like, generator) if fixed is None else fixed.to(like.dtype)
        return scale * z

    return noise_fn


@pytest.mark.parametrize("name,order,ms", CONFIGS, ids=IDS)
def test_noise_fn_default_is_bitwise_today_and_custom_noise_is_used(name, order, ms):
    den, x_T = _denoiser(), _x_T()
    for kw in ({}, {"eta": 1.0} if "eta" in get_method(name).options else {}):
        default = _run(den, x_T, name, order, ms, **kw)
        assert torch.equal(default, _run(den, x_T, name, order, ms, noise_fn=gaussian_noise, **kw))
        calls = []
        counted = _run(den, x_T, name, order, ms, noise_fn=_counting_noise(calls), cond={"m": 1}, **kw)
        assert torch.equal(default, counted) and all(c == ["m"] for c in calls)
        # one step: the output is affine in the drawn noise, and the noise matters
        z = torch.randn(x_T.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        outs, drawn = [], []
        for scale in (0.0, 1.0, 2.0):
            outs.append(
                sample(
                    den,
                    x_T,
                    method=name,
                    order=order,
                    multistep=ms,
                    steps=1,
                    noise_fn=_counting_noise(drawn, scale, z),
                    **_options(name),
                    **kw,
                )
            )
        if drawn:
            assert len(drawn) == 3
            assert torch.allclose(outs[2] - outs[1], outs[1] - outs[0], rtol=0, atol=1e-12)
            assert float((outs[1] - outs[0]).abs().min()) > 0
        else:
            assert torch.equal(outs[0], outs[2])


def test_zero_centre_of_mass_noise_keeps_samples_centred():
    """Isotropic components with centred means keep a centred state's centre of mass exactly at
    zero under the exact posterior mean; i.i.d. noise moves it, centred noise must not."""
    means = torch.tensor([[1.0, -2.0, 1.0, 0.0], [-1.5, 0.5, 0.5, 0.5], [0.0, 0.0, 2.0, -2.0]])
    gm = GaussianMixture([0.3, 0.3, 0.4], means, torch.full((3, 4), 0.2), schedule=SCH)
    den = gm.as_denoiser("eps")
    x_T = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x_T = x_T - x_T.mean(1, keepdim=True)

    def centred(like, generator, **cond):
        z = gaussian_noise(like, generator)
        return z - z.mean(1, keepdim=True)

    for method, kw in [("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler_maruyama", {})]:
        g = torch.Generator().manual_seed(1)
        plain = sample(den, x_T, method=method, steps=10, generator=g, **kw)
        g = torch.Generator().manual_seed(1)
        x, traj = sample(
            den, x_T, method=method, steps=10, generator=g, noise_fn=centred, return_trajectory=True, **kw
        )
        assert float(plain.mean(1).abs().max()) > 0.1
        assert float(traj.mean(-1).abs().max()) < 1e-12 and torch.equal(traj[-1], x)


def test_bad_noise_fn_and_callback_are_named():
    den, x_T = _denoiser(), _x_T()
    with pytest.raises(ValueError, match="noise_fn must return a tensor of shape"):
        sample(den, x_T, method="ddpm", steps=2, noise_fn=lambda like, g, **c: like[:1])
    with pytest.raises(TypeError, match="noise_fn must be callable"):
        sample(den, x_T, method="ddpm", steps=2, noise_fn=3)
    with pytest.raises(TypeError, match="callback must be callable"):
        sample(den, x_T, steps=2, callback="print")
