"""A small, exact-resume training loop on Hugging Face Accelerate.

The same script runs on CPU, one GPU, or several GPUs/nodes (``accelerate launch script.py``).

Checkpoint layout (``<out_dir>/checkpoints/step_00001000/``)::

    model.safetensors     model state dict
    ema.safetensors       EMA averages (when ``ema_decay`` is set), keyed by parameter name
    optimizer.pt          optimizer, LR scheduler and grad-scaler state
    rng_state_<rank>.pt   python / numpy / torch (/ cuda) RNG states of each process
    trainer_state.json    step, data position (epoch, batch in epoch), EMA update count, config

Exact resume: each epoch's shuffle order is a function of ``(seed, epoch)`` only (the Trainer owns
the loader's and sampler's ``torch.Generator`` and reseeds it at every epoch start), and resuming
skips the batches already consumed in the current epoch without loading them. Randomness drawn
inside ``loss_fn`` or the model (noise, timesteps, dropout) comes from the restored global RNGs.
Random augmentation inside a ``Dataset`` is not replayed exactly.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.data_loader import skip_first_batches
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..checkpoint import load_weights, save_weights
from .ema import EMA

__all__ = ["LossFn", "Trainer", "TrainerConfig", "latest_checkpoint", "resolve_device"]

LossFn = Callable[[nn.Module, Any], "torch.Tensor | Mapping[str, torch.Tensor]"]

_SCHEDULES = ("constant", "cosine")
_PRECISIONS = ("no", "bf16", "fp16", "auto")
_DEVICES = ("auto", "cpu", "cuda")
_STEP_DIR = re.compile(r"^step_(\d+)$")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when available, else CPU. A CUDA/MPS device that is not available raises
    ``RuntimeError``; an unknown name raises ``ValueError``.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as e:
            raise ValueError(
                f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {str(device)!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' requested but MPS is not available")
    return device


@dataclass
class TrainerConfig:
    """Training hyper-parameters. ``steps`` counts optimizer steps (each of ``grad_accum`` batches).

    Attributes:
        steps: total optimizer steps.
        lr: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        warmup_steps: linear LR warm-up from ``lr / warmup_steps`` to ``lr``.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at ``steps``) after warm-up.
        grad_accum: batches per optimizer step (per process); the global batch is
            ``batch_size * grad_accum * num_processes``.
        grad_clip: max global gradient L2 norm; ``None`` disables clipping.
        mixed_precision: ``"no" | "bf16" | "fp16" | "auto"`` (bf16 on a CUDA device that supports it).
        ema_decay: EMA decay; ``None`` disables the EMA.
        ema_warmup: use the EMA warm-up ``min(decay, (1 + n) / (10 + n))``.
        log_every: log every this many steps (and at the last step).
        ckpt_every: checkpoint every this many steps; ``None`` only at the end.
        keep_last: number of checkpoints kept in ``out_dir/checkpoints``.
        out_dir: run folder (``metrics.csv``, ``checkpoints/``, ``tb/``).
        seed: seeds python/numpy/torch (``seed + process_index`` per process) and the data order.
        device: ``"auto" | "cpu" | "cuda"``; under ``accelerate launch`` each process gets its own GPU.
        progress: show a tqdm bar (main process only).
        tensorboard: also log to ``out_dir/tb`` when the ``tensorboard`` package is importable.
        ddp_find_unused_parameters: passed to DistributedDataParallel (multi-process only).
    """

    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    mixed_precision: str = "no"
    ema_decay: float | None = None
    ema_warmup: bool = False
    log_every: int = 50
    ckpt_every: int | None = 1000
    keep_last: int = 3
    out_dir: str | os.PathLike = "runs/train"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "grad_accum": self.grad_accum, "log_every": self.log_every}
        positive["keep_last"] = self.keep_last
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainerConfig.{name} must be a positive int, got {value!r}")
        if self.ckpt_every is not None and (not isinstance(self.ckpt_every, int) or self.ckpt_every < 1):
            raise ValueError(
                f"TrainerConfig.ckpt_every must be a positive int or None, got {self.ckpt_every!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"TrainerConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainerConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainerConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"TrainerConfig.schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainerConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.mixed_precision not in _PRECISIONS:
            raise ValueError(
                f"TrainerConfig.mixed_precision must be one of {_PRECISIONS}, got {self.mixed_precision!r}"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainerConfig.ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.device not in _DEVICES:
            raise ValueError(f"TrainerConfig.device must be one of {_DEVICES}, got {self.device!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the fields."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["betas"] = list(self.betas)
        return d


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``out_dir/checkpoints``, or ``None``."""
    return max(_checkpoints(Path(out_dir) / "checkpoints"), default=(None, None))[1]


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _lr_lambda(config: TrainerConfig) -> Callable[[int], float]:
    warmup, total, kind = config.warmup_steps, config.steps, config.schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class _LossModule(nn.Module):
    """Runs ``loss_fn(model, batch)`` as one forward, so DDP syncs gradients whatever the loss calls."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "loss_fn", loss_fn)  # not a submodule even if it is an nn.Module

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def _unpack_loss(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise ValueError(f"loss_fn returned a dict without a 'loss' key (keys: {sorted(out)})")
        logs = {k: torch.as_tensor(v).detach().float() for k, v in out.items() if k != "loss"}
        for k, v in logs.items():
            if v.numel() != 1:
                raise ValueError(f"loss_fn log {k!r} must be a scalar, got shape {tuple(v.shape)}")
        loss = out["loss"]
    else:
        loss, logs = out, {}
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"loss_fn must return a scalar tensor or a dict with 'loss', got {type(loss).__name__}"
        )
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
    return loss.reshape(()), {k: v.reshape(()) for k, v in logs.items()}


def _batch_size(batch: Any) -> int:
    """Leading dimension of the first tensor found in ``batch`` (1 if there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = _batch_size(item)
            if n:
                return n
        return 0
    return 0


def _data_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _get_rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class _CSVLog:
    """Appends rows to ``metrics.csv``; drops rows newer than the step a run (re)starts from."""

    def __init__(self, path: Path, start_step: int) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or []) or None
                rows = [r for r in reader if r.get("step") and int(float(r["step"])) <= start_step]
            if not rows:
                path.unlink()
                self.fields = None
            else:
                tmp = path.with_suffix(".csv.tmp")
                with open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.fields)
                    writer.writeheader()
                    writer.writerows(rows)
                os.replace(tmp, path)

    def write(self, row: Mapping[str, float]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``dataloader`` with AdamW.

    Args:
        model: the module to train (its parameters with ``requires_grad`` are optimised). After
            construction it lives on ``trainer.device``; ``trainer.model`` is this same object.
        loss_fn: ``loss_fn(model, batch) -> loss`` where ``loss`` is a scalar tensor, or a dict with
            key ``"loss"`` and further scalar tensors to log. It receives the unwrapped ``model`` (any
            method may be called) and batches already on the device; it runs as one DDP forward
            under the mixed-precision autocast.
        dataloader: a ``torch.utils.data.DataLoader``; its ``batch_size`` is per process. With
            ``shuffle=True`` the Trainer takes over its generator (see the module docstring).
        config: :class:`TrainerConfig`.

    ``fit()`` resumes from the latest checkpoint in ``config.out_dir`` by default.
    """

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, dataloader: DataLoader, config: TrainerConfig | None = None
    ) -> None:
        self.config = config = config if config is not None else TrainerConfig()
        if not isinstance(dataloader, DataLoader):
            raise TypeError(
                f"dataloader must be a torch.utils.data.DataLoader, got {type(dataloader).__name__}"
            )
        # Without CUDA, "auto" must still say cpu=True: only then does Accelerate set up multi-CPU (gloo)
        # data parallelism under torchrun / accelerate launch instead of independent processes.
        use_cpu = (
            config.device == "cpu"
            or (config.device == "auto" and not torch.cuda.is_available())
            or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        )
        if config.device == "cuda":
            resolve_device("cuda")
        precision = config.mixed_precision
        if precision == "auto":
            bf16_ok = not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            precision = "bf16" if bf16_ok else "no"
        self.accelerator = Accelerator(
            cpu=use_cpu,
            mixed_precision=precision,
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=config.ddp_find_unused_parameters)
            ],
        )
        self.out_dir = Path(config.out_dir)
        self.model = model
        self.loss_fn = loss_fn
        self._generator = self._own_generator(dataloader)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no parameters with requires_grad=True")
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self._module, self.optimizer, self._loader = self.accelerator.prepare(
            _LossModule(model, loss_fn), optimizer, dataloader
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
        self.ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay is not None else None
        self.step = 0
        self._epoch = 0
        self._batch_in_epoch = 0
        self._iterator = None

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self.accelerator.device

    @staticmethod
    def _own_generator(dataloader: DataLoader) -> torch.Generator:
        """Give the loader and its (batch) sampler one shared generator, reseeded every epoch."""
        generator = dataloader.generator if dataloader.generator is not None else torch.Generator()
        dataloader.generator = generator
        for sampler in (dataloader.sampler, getattr(dataloader.batch_sampler, "sampler", None)):
            if hasattr(sampler, "generator"):
                if sampler.generator is not None and sampler.generator is not generator:
                    warnings.warn(
                        "the sampler's own generator is replaced by the Trainer's per-epoch generator",
                        stacklevel=3,
                    )
                sampler.generator = generator
        return generator

    # data -----------------------------------------------------------------------------------------
    def _start_epoch(self, skip: int) -> None:
        self._generator.manual_seed(_data_seed(self.config.seed, self._epoch))
        if hasattr(self._loader, "set_epoch"):
            self._loader.set_epoch(self._epoch)
        loader = skip_first_batches(self._loader, skip) if skip else self._loader
        self._iterator = iter(loader)
        self._batch_in_epoch = skip

    def _next_batch(self) -> Any:
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._epoch += 1
            self._start_epoch(0)
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ValueError("the dataloader yielded no batches") from None
        self._batch_in_epoch += 1
        return batch

    # checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (all processes must call this); returns its folder.

        The folder is assembled under a temporary name and renamed into place, then all but the
        newest ``keep_last`` checkpoints are deleted. Multi-node runs need ``out_dir`` on a shared
        file system.
        """
        acc = self.accelerator
        root = self.out_dir / "checkpoints"
        final = root / f"step_{self.step:08d}"
        tmp = root / f".tmp_step_{self.step:08d}"
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        acc.wait_for_everyone()
        torch.save(_get_rng_state(self.device), tmp / f"rng_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_weights(self.model, tmp / "model.safetensors")
            if self.ema is not None:
                save_file(
                    {k: v.contiguous() for k, v in self.ema.shadow.items()}, str(tmp / "ema.safetensors")
                )
            scaler = acc.scaler.state_dict() if acc.scaler is not None else None
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": scaler,
                },
                tmp / "optimizer.pt",
            )
            state = {
                "step": self.step,
                "epoch": self._epoch,
                "batch_in_epoch": self._batch_in_epoch,
                "ema_num_updates": self.ema.num_updates if self.ema is not None else None,
                "num_processes": acc.num_processes,
                "config": self.config.to_dict(),
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in _checkpoints(root)[: -self.config.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, EMA, optimizer, scheduler, RNG states, step and data position from ``path``."""
        path = Path(path)
        state_file = path / "trainer_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"not a checkpoint (no trainer_state.json): {state_file}")
        state = json.loads(state_file.read_text())
        load_weights(self.model, path / "model.safetensors", device=self.device)
        if self.ema is not None:
            ema_file = path / "ema.safetensors"
            if ema_file.is_file():
                shadow = load_file(str(ema_file), device=str(self.device))
                self.ema.load_state_dict({"num_updates": state["ema_num_updates"], "shadow": shadow})
            else:
                warnings.warn(f"{path} has no EMA weights; the EMA restarts from the model", stacklevel=2)
                self.ema = EMA(self.model, self.config.ema_decay, self.config.ema_warmup)
        opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        if self.accelerator.scaler is not None and opt["scaler"] is not None:
            self.accelerator.scaler.load_state_dict(opt["scaler"])
        rng_file = path / f"rng_state_{self.accelerator.process_index}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=True), self.device)
        else:
            warnings.warn(
                f"{rng_file} missing (process count changed?); RNG states not restored", stacklevel=2
            )
        self.step = int(state["step"])
        self._epoch = int(state["epoch"])
        self._batch_in_epoch = int(state["batch_in_epoch"])

    def _resume_path(self, resume: bool | str | os.PathLike) -> Path | None:
        if resume is False:
            return None
        if resume is True:
            return latest_checkpoint(self.out_dir)
        path = Path(resume)
        if (path / "trainer_state.json").is_file():
            return path
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint found at {path}")
        return latest

    # training -------------------------------------------------------------------------------------
    def _train_step(self) -> tuple[float, dict[str, torch.Tensor], int, float]:
        """One optimizer step over ``grad_accum`` batches.

        Returns (process-mean loss, summed logs, samples on this process, learning rate used).
        """
        acc, accum = self.accelerator, self.config.grad_accum
        total = torch.zeros((), device=self.device)
        logs: dict[str, torch.Tensor] = {}
        samples = 0
        for i in range(accum):
            batch = self._next_batch()
            samples += _batch_size(batch)
            with acc.no_sync(self._module) if i < accum - 1 else nullcontext():
                loss, extra = _unpack_loss(self._module(batch))
                acc.backward(loss / accum)
            total += loss.detach().float() / accum
            for k, v in extra.items():
                logs[k] = logs.get(k, 0.0) + v.to(self.device) / accum
        value = acc.reduce(total, "mean").item()
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss ({value}) at step {self.step + 1}")
        if self.config.grad_clip is not None:
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            if grad_norm is not None:
                logs["grad_norm"] = torch.as_tensor(grad_norm, device=self.device).detach().float()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model)
        return value, logs, samples, lr

    def fit(self, resume: bool | str | os.PathLike = True) -> dict[str, float]:
        """Train until ``config.steps`` optimizer steps, checkpointing and logging on the way.

        Args:
            resume: ``True`` resumes from the latest checkpoint in ``out_dir`` if there is one;
                ``False`` starts from step 0; a path names a checkpoint folder (or a run folder).

        Returns:
            The last logged metrics (``step``, ``loss``, ``lr``, ``samples_per_s`` and the logs).

        Raises:
            FloatingPointError: the (process-mean) loss is NaN/inf; the message names the step.
        """
        acc, cfg = self.accelerator, self.config
        set_seed(cfg.seed + acc.process_index)
        ckpt = self._resume_path(resume)
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        else:
            self.step, self._epoch, self._batch_in_epoch = 0, 0, 0
        self._start_epoch(self._batch_in_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self._module.train()

        csv_log, tb = None, None
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # Checkpoints and log rows beyond the starting step belong to an abandoned run.
            stale = [p for s, p in _checkpoints(self.out_dir / "checkpoints") if s > self.step]
            if stale:
                warnings.warn(f"removing checkpoints newer than step {self.step}: {stale}", stacklevel=2)
                for p in stale:
                    shutil.rmtree(p)
            csv_log = _CSVLog(self.out_dir / "metrics.csv", self.step)
            if cfg.tensorboard and importlib.util.find_spec("tensorboard") is not None:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not (cfg.progress and acc.is_main_process),
        )
        last: dict[str, float] = {}
        window_loss, window_logs, window_samples, window_steps = 0.0, {}, 0, 0
        t0 = time.perf_counter()
        saved_at = self.step
        try:
            while self.step < cfg.steps:
                loss, logs, samples, lr = self._train_step()
                window_loss += loss
                window_samples += samples * acc.num_processes
                window_steps += 1
                for k, v in logs.items():
                    window_logs[k] = window_logs.get(k, 0.0) + v
                throughput = window_samples / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", samples_s=f"{throughput:.1f}", refresh=False)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    keys = sorted(window_logs)
                    means = []
                    if keys:
                        stacked = torch.stack([window_logs[k] for k in keys]) / window_steps
                        means = acc.reduce(stacked, "mean").tolist()
                    last = {
                        "step": self.step,
                        "loss": window_loss / window_steps,
                        "lr": lr,
                        "samples_per_s": throughput,
                        **dict(zip(keys, means, strict=True)),
                    }
                    if csv_log is not None:
                        csv_log.write(last)
                    if tb is not None:
                        for k, v in last.items():
                            if k != "step":
                                tb.add_scalar(f"train/{k}", v, self.step)
                    window_loss, window_logs, window_samples, window_steps = 0.0, {}, 0, 0
                    t0 = time.perf_counter()
                if cfg.ckpt_every is not None and self.step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
                    saved_at = self.step
            if saved_at != self.step:
                self.save_checkpoint()
        finally:
            bar.close()
            if tb is not None:
                tb.close()
        return last
