"""Exponential moving average (EMA) of a model's parameters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy of a model's parameters, updated as ``shadow <- d * shadow + (1 - d) * param``.

    The decay ``d`` is ``decay``, or with ``warmup=True`` ``min(decay, (1 + n) / (10 + n))`` after
    ``n`` previous updates, so early averages are not dominated by the random initialisation.
    Half-precision parameters are averaged in float32. Buffers (e.g. batch-norm statistics) are not
    averaged: the model's own buffers are used.

    Usage::

        ema = EMA(model, decay=0.999)
        ...  # after every optimizer step
        ema.update(model)
        with ema.average_parameters(model):  # temporarily swap the averages in
            evaluate(model)
        ema.copy_to(model)  # or overwrite the model's parameters for good
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().to(dtype=_shadow_dtype(p.dtype), copy=True)
            for name, p in model.named_parameters()
        }

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    def _pairs(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        names = dict(model.named_parameters())
        if names.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - names.keys())
            extra = sorted(names.keys() - self.shadow.keys())
            raise ValueError(
                f"model parameters do not match the EMA: missing from model {missing}, not in EMA {extra}"
            )
        for name, s in self.shadow.items():
            yield s, names[name]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averages one step towards ``model``'s current parameters."""
        weight = 1.0 - self.current_decay()
        shadows, params = [], []
        for s, p in self._pairs(model):
            shadows.append(s)
            params.append(p.detach().to(s.dtype))
        if shadows:
            torch._foreach_lerp_(shadows, params, weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters with the averages."""
        for s, p in self._pairs(model):
            p.copy_(s)

    @contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context manager: ``model`` holds the averaged parameters inside, its own ones after."""
        backup = [p.detach().clone() for _, p in self._pairs(model)]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (_, p), b in zip(self._pairs(model), backup, strict=True):
                    p.copy_(b)

    def to(self, device: torch.device | str) -> EMA:
        """Move the averages to ``device`` (in place); returns self."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        """``{"num_updates": int, "shadow": {param_name: tensor}}`` (tensors are not copied)."""
        return {"num_updates": self.num_updates, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; values are copied onto the current devices and dtypes."""
        shadow = state["shadow"]
        if shadow.keys() != self.shadow.keys():
            raise ValueError(
                f"EMA state does not match: missing {sorted(self.shadow.keys() - shadow.keys())}, "
                f"unexpected {sorted(shadow.keys() - self.shadow.keys())}"
            )
        for name, s in self.shadow.items():
            if shadow[name].shape != s.shape:
                raise ValueError(
                    f"EMA state for {name!r} has shape {tuple(shadow[name].shape)}, expected {tuple(s.shape)}"
                )
            s.copy_(shadow[name])
        self.num_updates = int(state["num_updates"])


def _shadow_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
