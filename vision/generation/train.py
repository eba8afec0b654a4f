"""Training entry point of every image family, through the one :class:`core.Trainer`.

Run folder (``out``)::

    config.json        the resolved ImageConfig
    train/             the Trainer's checkpoints (exact resume), metrics.csv
    train_info.json    training seconds (summed over resumed runs), steps, final loss
    reflow_pairs.pt    reflow only: the teacher's (noise, sample, label) couplings
    model/             the final weights (the EMA; for consistency, the EMA of the student) + config
    metrics.json       "train": the train info; `evaluate` adds one entry per sampler
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from core.config import save_config
from core.data.paths import atomic_write
from core.denoiser import Denoiser
from core.nets.conditioning import ClassEmbedding
from core.objectives import ConsistencyDistillation, ConsistencyModel, denoising_loss, flow_matching_loss
from core.training import Trainer, TrainerConfig, resolve_device

from .config import ImageConfig
from .datasets import DATASETS, balanced_labels, check_images, check_labels, load_images
from .generate import generate
from .models import build_denoiser, load_run, save_model

__all__ = ["load_training_data", "train"]

_TEACHER_FAMILY = {"reflow": ("flow", "reflow"), "consistency": ("ddpm",)}


def load_training_data(
    config: ImageConfig, root: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images (N, C, S, S) in [-1, 1] and labels (N,), checked against the config."""
    native = DATASETS[config.dataset].image_size
    x, y = load_images(
        config.dataset, "train", root=root, size=None if config.image_size == native else config.image_size
    )
    check_images(x, config.channels, config.image_size, f"{config.dataset} images")
    check_labels(y, config.num_classes, len(x))
    return x, y


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


def _reflow_data(
    config: ImageConfig, teacher: Denoiser, out: Path, seed: int, progress: bool
) -> TensorDataset:
    """(sample, noise, label) couplings of the teacher flow, cached in ``out/reflow_pairs.pt``."""
    path = out / "reflow_pairs.pt"
    if not path.is_file():
        g = torch.Generator().manual_seed(seed + 7)
        n = config.reflow_pairs
        labels = balanced_labels(n, config.num_classes)[torch.randperm(n, generator=g)]
        noise = torch.randn(n, config.channels, config.image_size, config.image_size, generator=g)
        x, _ = generate(
            teacher, config, n, method="dpm_solver++", steps=config.reflow_solver_steps, labels=labels,
            noise=noise, progress=progress,
        )  # fmt: skip
        with atomic_write(path) as tmp:
            torch.save({"x": x, "noise": noise, "y": labels}, tmp)
    pairs = torch.load(path)
    return TensorDataset(pairs["x"], pairs["noise"], pairs["y"])


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
    and write ``out/model``; returns ``{"train_seconds", "final_loss", "steps"}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    fam = config.family
    if fam in ("ddpm", "flow", "consistency"):
        dataset = TensorDataset(*load_training_data(config, data_root))
    if fam in ("reflow", "consistency"):
        teacher = _load_teacher(config, dev)
    if fam == "reflow":
        dataset = _reflow_data(config, teacher, out, seed, progress)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True)

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
            cd.update_target()  # the EMA target follows the previous optimizer step
            return cd(batch[0], y=batch[1])

    else:
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

    tcfg = TrainerConfig(
        steps=config.steps, lr=config.lr, warmup_steps=min(config.warmup_steps, config.steps - 1),
        schedule="cosine", ema_decay=config.ema_decay, ema_warmup=True,
        ckpt_every=config.ckpt_every, out_dir=str(out / "train"), seed=seed, device=dev.type,
        progress=progress, log_every=min(50, config.steps), tensorboard=False,
    )  # fmt: skip
    trainer = Trainer(model, loss_fn, loader, tcfg)
    info_path = out / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"train_seconds": 0.0}
    start = time.perf_counter()
    last = trainer.fit(resume=True)
    info["train_seconds"] += time.perf_counter() - start
    info.update(steps=config.steps, final_loss=last.get("loss", info.get("final_loss")))
    trainer.ema.copy_to(model)  # consistency: the slow EMA of the student, as in CM's sampling
    net = model.student.denoiser.net if fam == "consistency" else model.net
    save_model(net, config, out / "model")
    with atomic_write(info_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    with atomic_write(metrics_path) as tmp:
        tmp.write_text(json.dumps({**metrics, "train": info}, indent=2))
    return info
