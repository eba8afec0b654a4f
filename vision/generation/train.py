"""Training entry point of every image family, through the one :class:`core.Trainer`.

Run folder (``out``, the layout of :mod:`core.runs`)::

    config.json        the resolved ImageConfig; a rerun resumes only under the same config
    train/             the Trainer's checkpoints (exact resume), metrics.csv
    train_info.json    training seconds (summed over resumed runs), steps, final loss
    reflow_pairs.pt    reflow only: the teacher's (noise, sample, label) couplings
    model/             the backbone as a pretrained folder (the EMA weights; for consistency,
                       the EMA of the student): ``<Backbone>.from_pretrained(out / "model")``;
                       for a classic family its model (a GAN's generator as its EMA), e.g.
                       ``VAE.from_pretrained(out / "model")``
    metrics.json       "train": the train info; `evaluate` adds one entry per sampler
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from core.config import config_to_dict, save_config
from core.denoiser import Denoiser
from core.files import atomic_write, merge_json, read_json, write_json
from core.nets.conditioning import ClassEmbedding
from core.objectives import ConsistencyDistillation, ConsistencyModel, denoising_loss, flow_matching_loss
from core.runs import CONFIG_FILE, METRICS_FILE, MODEL_DIR, TRAIN_DIR, check_resume, lock_run
from core.training import Trainer, TrainerConfig, resolve_device

from .classic import CLASSIC_FAMILIES, ema_target, setup_training
from .config import ImageConfig
from .datasets import balanced_labels, load_config_images
from .generate import generate
from .models import build_denoiser, load_run

__all__ = ["load_training_data", "train"]

_TEACHER_FAMILY = {"reflow": ("flow", "reflow"), "consistency": ("ddpm",)}


def load_training_data(
    config: ImageConfig, root: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images (N, C, S, S) in [-1, 1] and labels (N,), checked against the config."""
    return load_config_images(config, "train", root)


def _load_teacher(config: ImageConfig, device: torch.device) -> Denoiser:
    if config.teacher is None:
        raise ValueError(f"family {config.family!r} needs --teacher: the run folder of a trained teacher")
    teacher, tcfg = load_run(config.teacher, device)
    allowed = _TEACHER_FAMILY[config.family]
    if tcfg.family not in allowed:
        raise ValueError(
            f"{config.family} needs a teacher of family {allowed}, but {config.teacher} is {tcfg.family!r}"
        )
    same = (
        "dataset",
        "model",
        "image_size",
        "width",
        "depth",
        "patch",
        "heads",
        "channel_mults",
        "timesteps",
    )
    diff = [f for f in same if getattr(tcfg, f) != getattr(config, f)]
    if diff:
        raise ValueError(
            f"teacher {config.teacher} differs from this config in {diff}; the student copies its weights"
        )
    return teacher.requires_grad_(False)


def _load_pairs(path: Path, n: int, shape: tuple[int, ...]) -> TensorDataset | None:
    """The cached couplings in ``path``, or None when the file is missing, unreadable or not
    ``n`` pairs of images ``shape`` (a truncated or foreign file is regenerated, not trusted)."""
    if not path.is_file():
        return None
    try:
        pairs = torch.load(path, weights_only=True)
        x, noise, y = pairs["x"], pairs["noise"], pairs["y"]
    except Exception as e:  # torch raises several types for a damaged file
        warnings.warn(f"regenerating the reflow pairs: could not read {path} ({e})", stacklevel=3)
        return None
    if x.shape != (n, *shape) or noise.shape != x.shape or y.shape != (n,):
        got, want = tuple(x.shape), (n, *shape)
        warnings.warn(f"regenerating the reflow pairs: {path} holds {got}, expected {want}", stacklevel=3)
        return None
    return TensorDataset(x, noise, y)


def _reflow_data(
    config: ImageConfig, teacher: Denoiser, out: Path, seed: int, progress: bool
) -> TensorDataset:
    """(sample, noise, label) couplings of the teacher flow, cached in ``out/reflow_pairs.pt``."""
    path = out / "reflow_pairs.pt"
    n, shape = config.reflow_pairs, (config.channels, config.image_size, config.image_size)
    cached = _load_pairs(path, n, shape)
    if cached is not None:
        return cached
    g = torch.Generator().manual_seed(seed + 7)
    labels = balanced_labels(n, config.num_classes)[torch.randperm(n, generator=g)]
    noise = torch.randn(n, *shape, generator=g)
    x, _ = generate(
        teacher, config, n, method="dpm_solver++", steps=config.reflow_solver_steps, labels=labels,
        noise=noise, progress=progress,
    )  # fmt: skip
    with atomic_write(path) as tmp:
        torch.save({"x": x, "noise": noise, "y": labels}, tmp)
    return TensorDataset(x, noise, labels)


def train(
    config: ImageConfig,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train ``config.family`` into the run folder ``out`` (resuming from its latest checkpoint)
    and write ``out/model``; returns ``{"train_seconds", "final_loss", "steps"}``.

    Raises :class:`core.runs.ConfigMismatchError` when ``out`` holds a run of another config
    (nothing is deleted) and :class:`core.runs.RunLockedError` while another process trains there.
    """
    out = Path(out)
    check_resume(out, config_to_dict(config))
    with lock_run(out):
        save_config(config, out / CONFIG_FILE)
        return _train(config, out, data_root, device, seed, progress)


def _train(
    config: ImageConfig, out: Path, data_root: str | Path | None, device: str, seed: int, progress: bool
) -> dict:
    dev = resolve_device(device)
    torch.manual_seed(seed)
    classic = config.family in CLASSIC_FAMILIES
    if classic:
        model, objective, dataset = setup_training(config, *load_training_data(config, data_root), seed)
        after_step, saved = None, lambda m: m
        adversarial = CLASSIC_FAMILIES[config.family].adversarial
    else:
        setup = _diffusion_setup(config, out, data_root, dev, seed, progress)
        model, objective, dataset, after_step, saved = setup
        adversarial = False
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training examples are fewer than one batch of {config.batch_size}")
    # The likelihood families keep their trained weights (their NLL is of those), the games an EMA of
    # the generator; the diffusion families an EMA of the whole network.
    ema = config.ema_decay if (adversarial or not classic) else None
    tcfg = TrainerConfig(
        steps=config.steps, lr=config.lr, warmup_steps=min(config.warmup_steps, config.steps - 1),
        schedule="cosine", ema_decay=ema, grad_clip=None if adversarial else 1.0,
        ckpt_every=config.ckpt_every, out_dir=str(out / TRAIN_DIR), seed=seed, device=dev.type,
        progress=progress, log_every=min(50, config.steps), tensorboard=False,
    )  # fmt: skip
    trainer = Trainer(model, objective, loader, tcfg, after_step=after_step)
    info_path = out / "train_info.json"
    info = read_json(info_path) if info_path.is_file() else {"train_seconds": 0.0}
    start = time.perf_counter()
    last = trainer.fit(resume=True)
    info["train_seconds"] += time.perf_counter() - start
    info.update(steps=config.steps, final_loss=last.get("loss", info.get("final_loss")))
    per_player = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("loss/")}
    if per_player:  # a game logs one loss per player
        info["final_loss"] = per_player
    if trainer.ema is not None:
        trainer.ema.copy_to(ema_target(model, objective))
    saved(model).save_pretrained(out / MODEL_DIR)
    write_json(info_path, info)
    merge_json(out / METRICS_FILE, {"train": info})
    return info


def _diffusion_setup(
    config: ImageConfig, out: Path, data_root: str | Path | None, dev: torch.device, seed: int, progress: bool
) -> tuple[torch.nn.Module, Callable, TensorDataset, Callable | None, Callable]:
    """Model, loss, training set, after-step hook and the saved module of a diffusion family."""
    fam = config.family
    if fam in ("ddpm", "flow", "consistency"):
        dataset = TensorDataset(*load_training_data(config, data_root))
    if fam in ("reflow", "consistency"):
        teacher = _load_teacher(config, dev)
    if fam == "reflow":
        dataset = _reflow_data(config, teacher, out, seed, progress)

    if fam == "consistency":
        student = Denoiser(
            copy.deepcopy(teacher.net).requires_grad_(True), teacher.schedule, teacher.prediction
        )
        for m in student.modules():
            if isinstance(m, ClassEmbedding):
                m.dropout = 0.0  # the teacher is queried per class; no label dropout
        model = ConsistencyDistillation(
            ConsistencyModel(student), teacher, num_steps=config.cd_num_steps, solver="heun",
            ema_decay=config.cd_ema, distance=config.cd_distance, weighting=config.cd_weighting,
        )  # fmt: skip

        def loss_fn(cd: ConsistencyDistillation, batch) -> torch.Tensor:
            return cd(batch[0], y=batch[1])

        # the target follows once per optimizer step; the saved network is the slow EMA of the
        # student, as in CM's sampling
        student_net = lambda m: m.student.denoiser.net  # noqa: E731
        return model, loss_fn, dataset, ConsistencyDistillation.update_target, student_net

    model = build_denoiser(config)
    if fam == "reflow":
        model.net.load_state_dict(teacher.net.state_dict())

        def loss_fn(den: Denoiser, batch) -> torch.Tensor:
            return flow_matching_loss(den, batch[0], noise=batch[1], y=batch[2])

    elif fam == "flow":

        def loss_fn(den: Denoiser, batch) -> torch.Tensor:
            return flow_matching_loss(den, batch[0], y=batch[1])

    else:

        def loss_fn(den: Denoiser, batch) -> torch.Tensor:
            return denoising_loss(den, batch[0], y=batch[1])

    return model, loss_fn, dataset, None, lambda m: m.net
