"""The diffusers adapter against diffusers' own scheduler loops, from the same noise.

A tiny random ``UNet2DModel`` and a scheduler are saved to disk as a diffusers pipeline folder,
loaded back with ``core.diffusers_adapter.load_diffusers``, and sampled by ``core.sample`` on
diffusers' own timesteps: stochastic DDPM (``DDPMScheduler``, the same generator seed, hence the
same noise draws) and deterministic DDIM (``DDIMScheduler``), for every prediction type.
"""

import json

import pytest
import torch

from core.sampling import sample

diffusers = pytest.importorskip("diffusers", reason="diffusers not installed: adapter tests skipped")
from core.diffusers_adapter import diffusers_denoiser, load_diffusers  # noqa: E402

N = 1000
SHAPE = (2, 1, 8, 8)


def _unet(seed: int = 0, out_channels: int = 1):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def _save(tmp_path, unet, scheduler):
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")
    return tmp_path


def _grid(timesteps: torch.Tensor) -> torch.Tensor:
    """diffusers timestep n sits at t = (n + 1) / N."""
    return (timesteps.to(torch.float64) + 1) / N


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "prediction_type,clip",
    [("epsilon", False), ("v_prediction", False), ("sample", False), ("epsilon", True)],
)
def test_ddpm_matches_diffusers_from_the_same_noise(tmp_path, prediction_type, clip):
    unet = _unet()
    ref_sch = diffusers.DDPMScheduler(
        num_train_timesteps=N, prediction_type=prediction_type, clip_sample=clip
    )
    den = load_diffusers(_save(tmp_path, unet, ref_sch))
    assert den.prediction == {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[prediction_type]
    ref_sch.set_timesteps(10)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = x_T.clone()
    with torch.no_grad():
        for t in ref_sch.timesteps[:-1]:  # stop at timestep 0, the end of core's grid
            x = ref_sch.step(unet(x, t).sample, t, x, generator=g).prev_sample
    ours = sample(
        den,
        x_T,
        method="ddpm",
        grid=_grid(ref_sch.timesteps),
        generator=torch.Generator().manual_seed(2),
    )
    assert _rel(ours, x) <= 1e-5
    other_noise = sample(
        den, x_T, method="ddpm", grid=_grid(ref_sch.timesteps), generator=torch.Generator().manual_seed(3)
    )
    assert _rel(other_noise, x) > 1e-2  # the noise matters: parity is not vacuous
    if clip:  # and so does the clipping of x0 the config asks for
        den.thresholding = None
        unclipped = sample(
            den, x_T, method="ddpm", grid=_grid(ref_sch.timesteps), generator=torch.Generator().manual_seed(2)
        )
        assert _rel(unclipped, x) > 1e-3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_matches_diffusers(tmp_path, prediction_type):
    unet = _unet(seed=1)
    ref_sch = diffusers.DDIMScheduler(
        num_train_timesteps=N,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )
    den = load_diffusers(_save(tmp_path, unet, ref_sch))
    ref_sch.set_timesteps(8)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x_T.float()
    with torch.no_grad():
        for t in ref_sch.timesteps:  # the last step lands on timestep 0 (set_alpha_to_one=False)
            x = ref_sch.step(unet(x, t).sample, t, x).prev_sample
    grid = torch.cat([_grid(ref_sch.timesteps), torch.tensor([1.0 / N], dtype=torch.float64)])
    ours = sample(den, x_T, method="ddim", grid=grid)
    assert ours.dtype == torch.float64  # the float32 model runs inside a float64 solver state
    assert _rel(ours.float(), x) <= 1e-5


def test_adapter_maps_config_and_rejects_bad_ones(tmp_path):
    unet = _unet(out_channels=2)
    cfg = dict(diffusers.DDPMScheduler(variance_type="learned_range", clip_sample=False).config)
    den = diffusers_denoiser(unet, cfg)
    x = torch.randn(SHAPE)
    assert den(x, torch.full((2,), 0.5)).shape == SHAPE  # the variance channels are dropped
    ac = diffusers.DDPMScheduler().alphas_cumprod.to(torch.float64)
    t = torch.tensor([0.001, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(den.schedule.alpha(t) ** 2, ac[[0, 499, 999]], rtol=1e-9)
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        diffusers_denoiser(unet, {**cfg, "prediction_type": "flow"})
    with pytest.raises(ValueError, match="zero terminal SNR"):
        diffusers_denoiser(unet, {**cfg, "rescale_betas_zero_snr": True})
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_diffusers(tmp_path)
    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "NoSuchModel"}))
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="NoSuchModel"):
        load_diffusers(tmp_path)
