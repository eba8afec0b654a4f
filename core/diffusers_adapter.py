"""Run a ``diffusers`` model through ``core.sample``: model + scheduler config -> ``core.Denoiser``.

A diffusers diffusion model (``UNet2DModel``, ``UNet2DConditionModel``, a transformer, ...) is a
network ``model(sample, timestep, **kwargs)`` trained on a discrete N-step DDPM schedule, whose
output (a ``.sample`` field, a tuple or a tensor) is the scheduler config's ``prediction_type``:
``epsilon``, ``v_prediction`` or ``sample``. The adapter

- builds the schedule from the scheduler's own ``alphas_cumprod`` (so every beta schedule and
  ``trained_betas`` come out exactly as diffusers computes them) as ``VPSchedule.discrete``:
  training step n sits at t = (n + 1) / N, and the network receives the step index
  ``N t - 1`` (an integer on diffusers' own timesteps, fractional between them, as in the
  official DPM-Solver code);
- maps the prediction type (``epsilon -> eps``, ``v_prediction -> v``, ``sample -> x0``) and
  keeps the config's x0 clipping (``clip_sample``, ``clip_sample_range``) or dynamic
  thresholding (``thresholding``) as the Denoiser's ``thresholding``;
- runs the model in its own dtype (the sampler state may be float64) and drops the variance
  channels of models with a learned variance (``variance_type`` ``learned`` /
  ``learned_range``).

diffusers is imported lazily, only when a scheduler config has to be read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor, nn

from .denoiser import Denoiser, dynamic_threshold
from .schedules import VPSchedule

__all__ = ["DiffusersNet", "PREDICTION_TYPES", "diffusers_denoiser", "load_diffusers", "schedule_from_config"]

#: diffusers' ``prediction_type`` -> the Denoiser's ``prediction``.
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class DiffusersNet(nn.Module):
    """``net(x, t_model, **cond)`` around a diffusers model; output shaped like x, in x's dtype.

    Args:
        model: a diffusers model called as ``model(sample, timestep, **cond)``.
        learned_variance: the model outputs twice x's channels (mean prediction, then variance
            values); only the first half is returned.
    """

    def __init__(self, model: nn.Module, learned_variance: bool = False) -> None:
        super().__init__()
        self.model = model
        self.learned_variance = learned_variance

    def forward(self, x: Tensor, t_model: Tensor, **cond) -> Tensor:
        dtype = getattr(self.model, "dtype", None) or next(self.model.parameters()).dtype
        out = self.model(x.to(dtype), t_model.to(dtype), **cond)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, tuple | list):
            out = out[0]
        if self.learned_variance and out.dim() >= 2 and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        return out.to(x.dtype)


def _scheduler_config(scheduler) -> dict:
    config = getattr(scheduler, "config", scheduler)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"expected a diffusers scheduler or its config (a mapping), got {type(scheduler).__name__}"
        )
    return dict(config)


def _thresholding(config: Mapping) -> Callable[[Tensor], Tensor] | None:
    if config.get("thresholding", False):
        return partial(
            dynamic_threshold,
            percentile=float(config.get("dynamic_thresholding_ratio", 0.995)),
            max_value=float(config.get("sample_max_value", 1.0)),
        )
    if config.get("clip_sample", False):
        r = float(config.get("clip_sample_range", 1.0))
        return partial(torch.clamp, min=-r, max=r)
    return None


_BETA_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")


def schedule_from_config(config: Mapping) -> VPSchedule:
    """The discrete VP schedule of a diffusers scheduler config (its ``alphas_cumprod``)."""
    from diffusers import DDPMScheduler

    cfg = {k: config[k] for k in _BETA_KEYS if config.get(k) is not None}
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "rescale_betas_zero_snr=True gives zero terminal SNR (sigma / alpha infinite at the last "
            "step), which a continuous-time schedule cannot represent; use a config without it"
        )
    ac = DDPMScheduler.from_config(cfg).alphas_cumprod.to(torch.float64)
    betas = 1.0 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    return VPSchedule.discrete(betas)


def diffusers_denoiser(model: nn.Module, scheduler) -> Denoiser:
    """A :class:`core.Denoiser` for a diffusers ``model`` trained under ``scheduler``.

    Args:
        model: the diffusers model (any module called as ``model(sample, timestep, **cond)``).
        scheduler: a diffusers scheduler or its config (e.g. ``DDPMScheduler(...).config`` or the
            dict of a ``scheduler_config.json``); its beta schedule, ``prediction_type`` and x0
            clipping / thresholding are used, the rest (spacing, solver settings) is ignored
            since ``core.sample`` chooses the grid and the solver.

    Returns:
        ``Denoiser(DiffusersNet(model), VPSchedule.discrete(betas), prediction)``; sample from
        ``t_max = 1`` (diffusers' timestep N - 1) down to ``t_min = 1 / N`` (timestep 0).
    """
    config = _scheduler_config(scheduler)
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {kind!r}; expected one of {sorted(PREDICTION_TYPES)}")
    learned = str(config.get("variance_type", "")) in ("learned", "learned_range")
    net = DiffusersNet(model, learned_variance=learned)
    schedule = schedule_from_config(config)
    return Denoiser(net, schedule, PREDICTION_TYPES[kind], thresholding=_thresholding(config))


def load_diffusers(
    path: str | os.PathLike,
    *,
    model_subfolder: str = "unet",
    scheduler_subfolder: str = "scheduler",
    model_class: type | None = None,
) -> Denoiser:
    """Load a diffusers folder as a :class:`core.Denoiser` (in eval mode, on the CPU).

    ``path`` is a pipeline folder (``<path>/<model_subfolder>/config.json`` and weights,
    ``<path>/<scheduler_subfolder>/scheduler_config.json``), as ``save_pretrained`` of a
    diffusers pipeline or of the model and the scheduler into those subfolders writes it. The
    model class is ``model_class`` or the ``_class_name`` its ``config.json`` records.
    """
    root = os.fspath(path)
    model_dir = os.path.join(root, model_subfolder)
    sched_file = os.path.join(root, scheduler_subfolder, "scheduler_config.json")
    for needed in (os.path.join(model_dir, "config.json"), sched_file):
        if not os.path.isfile(needed):
            raise FileNotFoundError(f"not a diffusers folder: {needed} is missing")
    import diffusers

    if model_class is None:
        with open(os.path.join(model_dir, "config.json")) as f:
            name = json.load(f).get("_class_name")
        model_class = getattr(diffusers, str(name), None)
        if model_class is None:
            raise ValueError(f"{model_dir}/config.json names no diffusers model class (_class_name={name!r})")
    model = model_class.from_pretrained(model_dir).eval()
    with open(sched_file) as f:
        config = json.load(f)
    return diffusers_denoiser(model, config).eval()
