"""A small, exact-resume training loop on Hugging Face Accelerate, for one model or a game.

The same script runs on CPU, one GPU, or several GPUs/nodes (``accelerate launch script.py``).
``Trainer(model, loss_fn, loader)`` minimises one loss with AdamW; ``Trainer(model, game, loader)``
trains the named players of a :class:`~core.training.Game` (a GAN's critic and generator, the three
players of Triple-GAN), each with its own optimizer and LR scheduler, in the game's cycle.

Checkpoint layout (``<out_dir>/checkpoints/step_00001000/``)::

    model.safetensors     model state dict (every player)
    ema.safetensors       EMA averages (when ``ema_decay`` is set), keyed by parameter name
    optimizer.pt          every player's optimizer and LR scheduler, and the grad-scaler state
    rng_state_<rank>.pt   python / numpy / torch (/ cuda) RNG states of each process
    trainer_state.json    step, position in the cycle, data position (epoch, batch in epoch),
                          EMA update count, config

Exact resume: each epoch's shuffle order is a function of ``(seed, epoch)`` only (the Trainer owns
the loader's and sampler's ``torch.Generator`` and reseeds it at every epoch start), and resuming
skips the batches already consumed in the current epoch without loading them. Randomness drawn
inside ``loss_fn`` or the model (noise, timesteps, dropout) comes from the restored global RNGs.
Random augmentation inside a ``Dataset`` is not replayed exactly. A checkpoint that cannot be read
is skipped with a warning naming it, and the newest intact older one is resumed instead.
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
from collections import Counter
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..checkpoint import load_weights, save_weights
from ..files import atomic_write
from .ema import EMA
from .game import Game, Player, SingleModel

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
        ema_warmup: use the EMA warm-up ``min(decay, (1 + n) / (10 + n))`` (default): early
            averages forget the random initialisation; ``False`` averages from step 0 at ``decay``.
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
    ema_warmup: bool = True
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


def _lr_lambda(warmup: int, total: int, kind: str) -> Callable[[int], float]:
    """LR factor after ``step`` steps of one optimizer that takes ``total`` steps in the run."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class _GameModule(nn.Module):
    """Runs ``game.loss(player, model, batch)`` as one forward, so DDP syncs gradients whatever it calls."""

    def __init__(self, model: nn.Module, game: Game) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "game", game)  # not a submodule even if it is an nn.Module

    def forward(self, player: str, batch: Any) -> Any:
        return self.game.loss(player, self.model, batch)


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
                self._rewrite(rows)

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: Mapping[str, float]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        elif not set(row) <= set(self.fields):  # a player logged for the first time: widen the header
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields += [k for k in row if k not in self.fields]
            self._rewrite(rows)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)


class _CorruptCheckpoint(ValueError):
    """A checkpoint file exists but cannot be read; the message names the file."""


def _read_torch(path: Path) -> Any:
    if not path.is_file():
        raise _CorruptCheckpoint(f"checkpoint file missing: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, pickle/zip errors, EOFError... on corrupt files
        raise _CorruptCheckpoint(f"could not read checkpoint file {path}: {e}") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise _CorruptCheckpoint(f"checkpoint file missing: {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _CorruptCheckpoint(f"could not read checkpoint file {path}: {e}") from e


def _cycle_counts(cycle: tuple[str, ...], steps: int) -> Counter:
    """How many optimizer steps each player takes in the first ``steps`` steps of the cycle."""
    full, rest = divmod(steps, len(cycle))
    counts = Counter({name: 0 for name in cycle})
    for name in cycle:
        counts[name] += full
    for name in cycle[:rest]:
        counts[name] += 1
    return counts


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` with AdamW, or by playing a :class:`Game`.

    Args:
        model: the module to train. With a game, every player's module must be a submodule of it (so
            checkpoints and data parallelism see all players). After construction it lives on
            ``trainer.device``; ``trainer.model`` is this same object.
        loss_fn: ``loss_fn(model, batch) -> loss`` where ``loss`` is a scalar tensor, or a dict with
            key ``"loss"`` and further scalar tensors to log; or a :class:`Game`. It receives the
            unwrapped ``model`` (any method may be called) and batches already on the device; it runs
            as one DDP forward under the mixed-precision autocast.
        dataloader: a ``torch.utils.data.DataLoader``; its ``batch_size`` is per process. With
            ``shuffle=True`` the Trainer takes over its generator (see the module docstring).
        config: :class:`TrainerConfig`. ``steps`` counts optimizer steps of all players together.
        after_step: single-model path only: ``after_step(model)`` runs after every optimizer step
            (after the EMA update), e.g. a target-network update. A game has :meth:`Game.after_step`.

    Attributes:
        optimizers, schedulers: by player name (``"model"`` on the single-model path, where
            ``optimizer`` and ``scheduler`` name the one of each).
        ema: the EMA of the model (single path) or of the game's ``ema_player`` module.

    ``fit()`` resumes from the latest readable checkpoint in ``config.out_dir`` by default.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | Game,
        dataloader: DataLoader,
        config: TrainerConfig | None = None,
        *,
        after_step: Callable[[nn.Module], None] | None = None,
    ) -> None:
        self.config = config = config if config is not None else TrainerConfig()
        if not isinstance(dataloader, DataLoader):
            raise TypeError(
                f"dataloader must be a torch.utils.data.DataLoader, got {type(dataloader).__name__}"
            )
        if isinstance(loss_fn, Game):
            if after_step is not None:
                raise ValueError("after_step is for a single loss_fn; a Game has its own after_step method")
            game = loss_fn
        elif callable(loss_fn):
            game = SingleModel(loss_fn, after_step)
        else:
            raise TypeError(f"loss_fn must be callable or a Game, got {type(loss_fn).__name__}")
        self.game = game
        self.model = model
        self.loss_fn = loss_fn
        players = self._check_game(game, model)
        self.cycle: tuple[str, ...] = tuple(game.cycle)

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
        # A player's step leaves the other players' parameters without gradients: DDP must allow it.
        find_unused = config.ddp_find_unused_parameters or len(players) > 1
        self.accelerator = Accelerator(
            cpu=use_cpu,
            mixed_precision=precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
        )
        self.out_dir = Path(config.out_dir)
        self._generator = self._own_generator(dataloader)
        names = list(players)
        raw = [players[n].build_optimizer(config.lr, config.betas, config.weight_decay) for n in names]
        prepared = self.accelerator.prepare(_GameModule(model, game), *raw, dataloader)
        self._module, self._loader = prepared[0], prepared[-1]
        self.optimizers: dict[str, torch.optim.Optimizer] = dict(zip(names, prepared[1:-1], strict=True))
        self._params = {n: [p for g in raw[i].param_groups for p in g["params"]] for i, n in enumerate(names)}
        counts = _cycle_counts(self.cycle, config.steps)
        self.schedulers = {
            n: torch.optim.lr_scheduler.LambdaLR(
                raw[i], _lr_lambda(config.warmup_steps, counts[n], config.schedule)
            )
            for i, n in enumerate(names)
        }
        self._ema_module = players[game.ema_player].module if game.ema_player is not None else None
        self.ema = self._new_ema()
        self.step = 0
        self._cycle_pos = 0
        self._epoch = 0
        self._batch_in_epoch = 0
        self._iterator = None

    def _new_ema(self) -> EMA | None:
        if self.config.ema_decay is None:
            return None
        return EMA(self._ema_module, self.config.ema_decay, self.config.ema_warmup)

    @staticmethod
    def _check_game(game: Game, model: nn.Module) -> dict[str, Player]:
        players = dict(game.players(model))
        if not players:
            raise ValueError(f"{type(game).__name__}.players() returned no players")
        for name, player in players.items():
            if not isinstance(player, Player):
                raise TypeError(f"player {name!r} must be a Player, got {type(player).__name__}")
        cycle = tuple(game.cycle)
        if not cycle:
            raise ValueError(f"{type(game).__name__}.cycle is empty; expected player names")
        unknown = sorted({c for c in cycle if c not in players})
        if unknown:
            raise ValueError(
                f"{type(game).__name__}.cycle names unknown player(s) {unknown}; "
                f"the players are {sorted(players)}"
            )
        idle = sorted(set(players) - set(cycle))
        if idle:
            raise ValueError(f"player(s) {idle} never appear in {type(game).__name__}.cycle {list(cycle)}")
        if game.ema_player is not None and game.ema_player not in players:
            raise ValueError(
                f"{type(game).__name__}.ema_player {game.ema_player!r} is not a player; the players are "
                f"{sorted(players)}"
            )
        in_model = {id(p) for p in model.parameters()}
        owner: dict[int, str] = {}
        for name, player in players.items():
            for p in player.module.parameters():
                if not p.requires_grad:
                    continue
                if id(p) not in in_model:
                    raise ValueError(f"player {name!r}'s module is not part of the model")
                if id(p) in owner and owner[id(p)] != name:
                    raise ValueError(f"players {owner[id(p)]!r} and {name!r} share parameters")
                owner[id(p)] = name
        return players

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self.accelerator.device

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of a one-player run (``optimizers[name]`` for a game)."""
        return self._only(self.optimizers, "optimizers")

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """The LR scheduler of a one-player run (``schedulers[name]`` for a game)."""
        return self._only(self.schedulers, "schedulers")

    @staticmethod
    def _only(d: Mapping[str, Any], what: str) -> Any:
        if len(d) != 1:
            raise AttributeError(f"this run has several players; use trainer.{what}[name] with {sorted(d)}")
        return next(iter(d.values()))

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
                    "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                    "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                    "scaler": scaler,
                },
                tmp / "optimizer.pt",
            )
            state = {
                "step": self.step,
                "cycle": list(self.cycle),
                "cycle_position": self._cycle_pos,
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

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        """Read every file of checkpoint ``path`` into memory (CPU), changing nothing.

        Raises ``ValueError`` naming the unreadable file, or one that does not fit this run.
        """
        state_file = path / "trainer_state.json"
        try:
            state = json.loads(state_file.read_text())
            int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise _CorruptCheckpoint(f"could not read checkpoint file {state_file}: {e!r}") from e
        saved_cycle = state.get("cycle", ["model"])
        if list(saved_cycle) != list(self.cycle):
            raise ValueError(
                f"checkpoint {path} was written for the player cycle {saved_cycle}, this run's is "
                f"{list(self.cycle)}"
            )
        out: dict[str, Any] = {"state": state, "path": path}
        out["model"] = _read_safetensors(path / "model.safetensors")
        if self.ema is not None and (path / "ema.safetensors").is_file():
            out["ema"] = _read_safetensors(path / "ema.safetensors")
        opt = _read_torch(path / "optimizer.pt")
        if "optimizers" not in opt:  # written by a one-model Trainer before games existed
            opt = {
                "optimizers": {"model": opt["optimizer"]},
                "schedulers": {"model": opt["scheduler"]},
                "scaler": opt.get("scaler"),
            }
        if set(opt["optimizers"]) != set(self.optimizers):
            raise ValueError(
                f"checkpoint {path} holds optimizers {sorted(opt['optimizers'])}, this run has "
                f"{sorted(self.optimizers)}"
            )
        out["opt"] = opt
        rng_file = path / f"rng_state_{self.accelerator.process_index}.pt"
        out["rng"] = _read_torch(rng_file) if rng_file.is_file() else None
        return out

    def _apply_checkpoint(self, ckpt: Mapping[str, Any]) -> None:
        path, state, opt = ckpt["path"], ckpt["state"], ckpt["opt"]
        # safetensors is read on the CPU ("cpu:0" of a multi-process CPU run is not a device it
        # accepts); load_state_dict copies onto the parameters' own devices.
        load_weights(self.model, path / "model.safetensors", device="cpu")
        if self.ema is not None:
            if "ema" in ckpt:
                self.ema.load_state_dict({"num_updates": state["ema_num_updates"], "shadow": ckpt["ema"]})
            else:
                warnings.warn(f"{path} has no EMA weights; the EMA restarts from the model", stacklevel=3)
                self.ema = self._new_ema()
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(opt["optimizers"][name])
            self.schedulers[name].load_state_dict(opt["schedulers"][name])
        if self.accelerator.scaler is not None and opt["scaler"] is not None:
            self.accelerator.scaler.load_state_dict(opt["scaler"])
        if ckpt["rng"] is not None:
            _set_rng_state(ckpt["rng"], self.device)
        else:
            warnings.warn(
                f"{path / f'rng_state_{self.accelerator.process_index}.pt'} missing (process count "
                "changed?); RNG states not restored",
                stacklevel=3,
            )
        self.step = int(state["step"])
        self._cycle_pos = int(state.get("cycle_position", self.step % len(self.cycle)))
        self._epoch = int(state["epoch"])
        self._batch_in_epoch = int(state["batch_in_epoch"])

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, EMA, optimizers, schedulers, RNG states, step, cycle and data position.

        Raises:
            FileNotFoundError: ``path`` has no ``trainer_state.json``.
            ValueError: a file of the checkpoint is unreadable (the message names it) or the
                checkpoint belongs to a different game.
        """
        path = Path(path)
        state_file = path / "trainer_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"not a checkpoint (no trainer_state.json): {state_file}")
        self._apply_checkpoint(self._read_checkpoint(path))

    def _resume(self, resume: bool | str | os.PathLike) -> Path | None:
        """Load the checkpoint ``resume`` asks for; returns its folder (``None``: start afresh)."""
        if resume is False:
            return None
        if resume is True:
            root = self.out_dir
        else:
            root = Path(resume)
            if (root / "trainer_state.json").is_file():
                self.load_checkpoint(root)
                return root
        candidates = [p for _, p in reversed(_checkpoints(root / "checkpoints"))]
        if not candidates:
            if resume is True:
                return None
            raise FileNotFoundError(f"no checkpoint found at {root}")
        for path in candidates:
            try:
                ckpt = self._read_checkpoint(path)
            except _CorruptCheckpoint as e:
                warnings.warn(f"skipping unreadable checkpoint {path}: {e}", stacklevel=3)
                continue
            self._apply_checkpoint(ckpt)
            return path
        raise ValueError(f"no readable checkpoint under {root / 'checkpoints'} (all were corrupt)")

    # training -------------------------------------------------------------------------------------
    def _train_step(self) -> tuple[str, float, dict[str, torch.Tensor], int, float]:
        """One optimizer step of the current player over ``grad_accum`` batches.

        Returns (player, process-mean loss, summed logs, samples on this process, learning rate used).
        """
        acc, accum = self.accelerator, self.config.grad_accum
        player = self.cycle[self._cycle_pos]
        optimizer = self.optimizers[player]
        total = torch.zeros((), device=self.device)
        logs: dict[str, torch.Tensor] = {}
        samples = 0
        for i in range(accum):
            batch = self._next_batch()
            samples += _batch_size(batch)
            with acc.no_sync(self._module) if i < accum - 1 else nullcontext():
                loss, extra = _unpack_loss(self._module(player, batch))
                acc.backward(loss / accum)
            total += loss.detach().float() / accum
            for k, v in extra.items():
                logs[k] = logs.get(k, 0.0) + v.to(self.device) / accum
        value = acc.reduce(total, "mean").item()
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss ({value}) at step {self.step + 1}{self._who(player)}")
        params = self._params[player]
        acc.unscale_gradients(optimizer)
        if self.config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            norms = [torch.linalg.vector_norm(p.grad.float()) for p in params if p.grad is not None]
            grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        grad_norm = grad_norm.detach().float().to(self.device)
        # With fp16 loss scaling an overflow is expected now and then: the scaler skips that step.
        if acc.scaler is None and not torch.isfinite(grad_norm):
            raise FloatingPointError(
                f"non-finite gradient (norm {grad_norm.item()}) at step {self.step + 1}{self._who(player)} "
                f"with a finite loss ({value:.6g}); the weights were not updated"
            )
        logs["grad_norm"] = grad_norm
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        self.schedulers[player].step()
        self._module.zero_grad(set_to_none=True)  # every player's: a step may leave others' gradients
        self.step += 1
        self._cycle_pos = (self._cycle_pos + 1) % len(self.cycle)
        if self.ema is not None and player == self.game.ema_player:
            self.ema.update(self._ema_module)
        self.game.after_step(player, self.model)
        return player, value, logs, samples, lr

    def _who(self, player: str) -> str:
        return "" if len(self.optimizers) == 1 else f" (player {player!r})"

    def fit(self, resume: bool | str | os.PathLike = True) -> dict[str, float]:
        """Train until ``config.steps`` optimizer steps, checkpointing and logging on the way.

        Args:
            resume: ``True`` resumes from the latest readable checkpoint in ``out_dir`` if there is
                one (an unreadable newer one is skipped with a warning naming it); ``False`` starts
                from step 0; a path names a checkpoint folder (or a run folder).

        Returns:
            The last logged metrics: ``step``, ``loss``, ``lr``, ``samples_per_s``, ``grad_norm`` and
            the loss's logs; for a game, ``loss``, ``lr``, ``grad_norm`` and the logs are suffixed
            ``/<player>`` (window means over that player's steps).

        Raises:
            FloatingPointError: the (process-mean) loss, or the gradient norm of a finite loss, is
                NaN/inf; the message names the step, and the weights are left as they were before it.
        """
        acc, cfg = self.accelerator, self.config
        set_seed(cfg.seed + acc.process_index)
        if self._resume(resume) is None:
            self.step, self._cycle_pos, self._epoch, self._batch_in_epoch = 0, 0, 0, 0
        self._start_epoch(self._batch_in_epoch)
        self._module.zero_grad(set_to_none=True)
        self._module.train()
        single = len(self.optimizers) == 1

        def key(name: str, player: str) -> str:
            return name if single else f"{name}/{player}"

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
        sums: dict[str, torch.Tensor] = {}
        counts: Counter = Counter()
        lrs: dict[str, float] = {}
        window_samples = 0
        t0 = time.perf_counter()
        saved_at = self.step
        try:
            while self.step < cfg.steps:
                player, loss, logs, samples, lr = self._train_step()
                logs["loss"] = torch.tensor(loss, device=self.device)
                for k, v in logs.items():
                    name = key(k, player)
                    sums[name] = sums.get(name, 0.0) + v
                    counts[name] += 1
                lrs[key("lr", player)] = lr
                window_samples += samples * acc.num_processes
                throughput = window_samples / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(
                    {key("loss", player): f"{loss:.4g}", "samples_s": f"{throughput:.1f}"}, refresh=False
                )
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    keys = sorted(sums)
                    stacked = torch.stack([sums[k] / counts[k] for k in keys])
                    means = dict(zip(keys, acc.reduce(stacked, "mean").tolist(), strict=True))
                    losses = {k: means.pop(k) for k in list(means) if k == "loss" or k.startswith("loss/")}
                    last = {"step": self.step, **losses, **lrs, "samples_per_s": throughput, **means}
                    if csv_log is not None:
                        csv_log.write(last)
                    if tb is not None:
                        for k, v in last.items():
                            if k != "step":
                                tb.add_scalar(f"train/{k}", v, self.step)
                    sums, counts, window_samples = {}, Counter(), 0
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
