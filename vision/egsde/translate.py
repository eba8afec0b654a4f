"""Translation by a guided reverse SDE started at an intermediate time: EGSDE, SDEdit and ILVR.

Every method perturbs the source x to time t_M = M * t_max (M in (0, 1], the fraction of the
diffusion; EGSDE's default M = 0.5), x_M = alpha(t_M) x + sigma(t_M) z, and runs ancestral DDPM
steps of the target-domain score model from t_M down to t_min with ``core.sample``. They differ
only in the guide:

- ``sdedit``: none;
- ``ilvr``: the low-pass replacement projection after every step (ILVR as Choi et al. define it
  is this with M = 1, from pure noise; the benchmark runs both);
- ``egsde``: the realism and faithfulness energies with weights lambda_s and lambda_i;
- ``realism_only`` / ``faithfulness_only``: one expert (ablations).

``repeats`` > 1 perturbs the output again and repeats the guided reverse run (still guided by the
original source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from core import Denoiser, sample
from core.guidance import Guide, combine
from core.nets import TimeClassifier

from .experts import FaithfulnessExpert, ILVRProjection, RealismExpert, check_factor, perturb

__all__ = ["METHODS", "TranslateSettings", "check_source", "image_shape", "translate"]

METHODS = ("egsde", "sdedit", "ilvr", "realism_only", "faithfulness_only")


@dataclass
class TranslateSettings:
    """Settings of one translation method.

    Attributes:
        method: one of :data:`METHODS`.
        lambda_s, lambda_i: weights of the realism and faithfulness energies.
        m: start time as a fraction of t_max, in (0, 1].
        steps: reverse DDPM steps from t_M to t_min.
        repeats: how many perturb-and-denoise rounds.
        factor: low-pass factor of the faithfulness expert and of ILVR.
        layer: the classifier's feature layer of the realism expert.
        batch_size: images per sampler call.
    """

    method: str = "egsde"
    lambda_s: float = 100.0
    lambda_i: float = 2.0
    m: float = 0.5
    steps: int = 50
    repeats: int = 1
    factor: int = 4
    layer: str = "mid"
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if not (isinstance(self.m, int | float) and math.isfinite(self.m) and 0.0 < self.m <= 1.0):
            raise ValueError(f"M must be a fraction of the diffusion in (0, 1], got {self.m!r}")
        for name in ("steps", "repeats", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lambda_s", "lambda_i"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_source(x: Tensor, channels: int, size: int) -> None:
    """Raise a ValueError naming the problem unless x is float (B, channels, size, size) in [-1, 1]."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"source images must have shape (B, {channels}, {size}, {size}), got {got}")
    if x.shape[1] != channels:
        raise ValueError(
            f"source images must have {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})"
        )
    if tuple(x.shape[2:]) != (size, size):
        raise ValueError(f"source images must be {size}x{size}, got {x.shape[2]}x{x.shape[3]}")
    if not x.is_floating_point():
        raise ValueError(f"source images must be floating point in [-1, 1], got dtype {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("source images hold non-finite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise ValueError(f"source images must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]")


def image_shape(denoiser: Denoiser) -> tuple[int | None, int | None]:
    """(channels, size) the score model expects, read from its network's config (None if unknown)."""
    net = denoiser.net
    inner = getattr(net, "model", None)
    for cfg in (
        getattr(net, "init_config", None),
        getattr(net, "config", None),
        getattr(inner, "config", None),
    ):
        if cfg is None:
            continue
        get = cfg.get if isinstance(cfg, dict) else (lambda k, c=cfg: getattr(c, k, None))
        channels, size = get("in_channels"), get("image_size") or get("sample_size")
        if isinstance(size, list | tuple):
            size = size[0]
        if channels and size:
            return int(channels), int(size)
    return None, None


def _guide(
    s: TranslateSettings, source: Tensor, den: Denoiser, classifier: TimeClassifier | None, g
) -> Guide | None:
    sch = den.schedule
    if s.method == "sdedit":
        return None
    if s.method == "ilvr":
        return ILVRProjection(source, sch, s.factor, g)
    experts: list[Guide] = []
    if s.method in ("egsde", "realism_only"):
        if classifier is None:
            raise ValueError(f"method {s.method!r} needs the domain classifier (the realism expert)")
        experts.append(RealismExpert(classifier, s.layer, source, sch, s.lambda_s, g))
    if s.method in ("egsde", "faithfulness_only"):
        experts.append(FaithfulnessExpert(source, sch, s.factor, s.lambda_i, g))
    return experts[0] if len(experts) == 1 else combine(*experts)


def translate(
    denoiser: Denoiser,
    source: Tensor,
    settings: TranslateSettings,
    *,
    classifier: TimeClassifier | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Translate source images (B, C, H, W) in [-1, 1] into the score model's domain.

    The images must match the score model's input (checked on the first network call) and lie
    in [-1, 1]. Returns (B, C, H, W) clamped to [-1, 1], on the source's device.
    """
    s = settings
    channels, size = image_shape(denoiser)
    if isinstance(source, Tensor) and source.dim() == 4:
        channels = channels or source.shape[1]
        size = size or source.shape[-1]
    check_source(source, channels, size)
    if s.method in ("egsde", "faithfulness_only", "ilvr"):
        check_factor(s.factor, size)
    if classifier is not None and s.method in ("egsde", "realism_only") and s.layer not in classifier.layers:
        raise ValueError(f"unknown feature layer {s.layer!r}; the classifier has {list(classifier.layers)}")
    sch = denoiser.schedule
    t_start = s.m * sch.t_max
    if t_start <= sch.t_min:
        raise ValueError(f"M = {s.m} puts the start time {t_start:g} at or below t_min = {sch.t_min:g}")
    out = []
    for i in range(0, source.shape[0], s.batch_size):
        x = source[i : i + s.batch_size]
        y = x
        for _ in range(s.repeats):
            guide = _guide(s, x, denoiser, classifier, generator)
            y_m = perturb(sch, y, torch.tensor(t_start), generator)
            y = sample(
                denoiser, y_m, method="ddpm", steps=s.steps, grid="time_uniform", guide=guide,
                t_start=t_start, generator=generator, progress=progress,
            )  # fmt: skip
            y = y.clamp(-1.0, 1.0)
        out.append(y.detach())
    return torch.cat(out)
