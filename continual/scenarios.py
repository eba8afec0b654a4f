"""Class-incremental scenarios: a stream of tasks, each a set of classes with train, validation and
test splits, the class order fixed by a seed.

Single head: labels keep their dataset values (0..C-1) in every task and a learner predicts over
all C classes. Methods see one task's real data at a time and keep none of it afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.data import load_fashion_mnist, load_opencv_digits

__all__ = ["SCENARIOS", "Scenario", "Split", "Task", "make_scenario"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images x (N, C, H, W) float32 in [-1, 1] and labels y (N,) int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Task:
    """Task ``index`` of a stream: its classes and its train / val / test splits."""

    index: int
    classes: tuple[int, ...]
    train: Split
    val: Split
    test: Split

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


class Scenario:
    """A stream of tasks cut from labelled data by a class order.

    ``data`` maps each of ``"train"``, ``"val"``, ``"test"`` to (x (N, C, H, W), y (N,) int64);
    ``class_order`` lists each task's classes. Errors name the offending task, class and split:
    an empty task, a class repeated across tasks (unless ``allow_overlap``), a class with no
    example in some split.
    """

    def __init__(
        self,
        name: str,
        data: dict[str, tuple[Tensor, Tensor]],
        class_order: Sequence[Sequence[int]],
        *,
        num_classes: int,
        allow_overlap: bool = False,
    ) -> None:
        missing = [s for s in SPLITS if s not in data]
        if missing:
            raise ValueError(f"scenario {name!r}: data lacks split(s) {missing}; expected {SPLITS}")
        if not class_order:
            raise ValueError(f"scenario {name!r}: the class order has no task")
        seen: dict[int, int] = {}
        for t, classes in enumerate(class_order):
            if len(classes) == 0:
                raise ValueError(f"scenario {name!r}: task {t} is empty (no class)")
            for c in classes:
                if not 0 <= int(c) < num_classes:
                    raise ValueError(
                        f"scenario {name!r}: task {t} has class {c}, expected 0..{num_classes - 1}"
                    )
                if int(c) in seen and not allow_overlap:
                    raise ValueError(
                        f"scenario {name!r}: class {c} is in task {seen[int(c)]} and task {t}; "
                        "classes may not overlap across tasks in a class-incremental scenario"
                    )
                seen.setdefault(int(c), t)
        tasks = []
        for t, classes in enumerate(class_order):
            splits = {}
            for s in SPLITS:
                x, y = data[s]
                if x.shape[0] != y.shape[0]:
                    raise ValueError(
                        f"scenario {name!r}: split {s} has {x.shape[0]} images and {y.shape[0]} labels"
                    )
                for c in classes:
                    if not bool((y == c).any()):
                        raise ValueError(
                            f"scenario {name!r}: class {c} of task {t} has no example in split {s!r}"
                        )
                mask = torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype))
                splits[s] = Split(x[mask].contiguous(), y[mask].contiguous())
            tasks.append(Task(t, tuple(int(c) for c in classes), **splits))
        self.name, self.tasks, self.num_classes = name, tasks, num_classes
        self.image_shape = tuple(data["train"][0].shape[1:])

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    @property
    def classes_seen(self) -> list[tuple[int, ...]]:
        """Classes seen after each task (cumulative)."""
        out, acc = [], ()
        for task in self.tasks:
            acc = acc + task.classes
            out.append(acc)
        return out

    def __repr__(self) -> str:
        order = [list(t.classes) for t in self.tasks]
        return f"Scenario({self.name!r}, tasks={order}, image_shape={self.image_shape})"


def _carve(
    x: Tensor, y: Tensor, val_fraction: float, per_class: int | None, g: torch.Generator
) -> dict[str, tuple[Tensor, Tensor]]:
    """Split training data per class into train / val (stratified, seeded), capped at ``per_class``."""
    tr, va = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        if per_class is not None:
            idx = idx[:per_class]
        n_val = max(1, int(round(val_fraction * len(idx))))
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    tr_i, va_i = torch.cat(tr).sort().values, torch.cat(va).sort().values
    return {"train": (x[tr_i], y[tr_i]), "val": (x[va_i], y[va_i])}


def _subsample(x: Tensor, y: Tensor, per_class: int | None, g: torch.Generator) -> tuple[Tensor, Tensor]:
    if per_class is None:
        return x, y
    keep = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).squeeze(1)
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    k = torch.cat(keep).sort().values
    return x[k], y[k]


def _fashion(root: str | Path | None) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    kw = {"root": root} if root is not None else {}
    return load_fashion_mnist(split="train", **kw), load_fashion_mnist(split="test", **kw)


def _digits(root: str | Path | None) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    return load_opencv_digits(root, "train"), load_opencv_digits(root, "test")


# name -> (loader, classes per task)
SCENARIOS = {
    "split-fashion-mnist": (_fashion, 2),
    "split-digits": (_digits, 2),
    "split-fashion-mnist-10": (_fashion, 1),
    "split-digits-10": (_digits, 1),
}


def make_scenario(
    name: str,
    seed: int = 0,
    *,
    root: str | Path | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_fraction: float = 0.1,
    shuffle_classes: bool = True,
) -> Scenario:
    """A named scenario (see ``SCENARIOS``): classes shuffled by ``seed`` (or 0..9 in order),
    split into tasks of 2 (``split-*``) or 1 (``split-*-10``) classes; a stratified validation
    split of ``val_fraction`` carved from the training data; optional per-class caps."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    loader, per_task = SCENARIOS[name]
    (x_tr, y_tr), (x_te, y_te) = loader(root)
    g = torch.Generator().manual_seed(seed)
    data = _carve(x_tr, y_tr, val_fraction, train_per_class, g)
    data["test"] = _subsample(x_te, y_te, test_per_class, torch.Generator().manual_seed(seed + 1))
    num_classes = int(y_tr.max()) + 1
    order = torch.randperm(num_classes, generator=g).tolist() if shuffle_classes else list(range(num_classes))
    tasks = [order[i : i + per_task] for i in range(0, num_classes, per_task)]
    return Scenario(name, data, tasks, num_classes=num_classes)
