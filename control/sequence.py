"""Episode splitting, the limits normaliser and the horizon-window dataset used to train planners.

A trajectory window is an array (horizon, transition_dim) whose rows are
``[observation, action]`` (for Maze2D: x, y, vx, vy, ax, ay), normalised per dimension to
[-1, 1] by the dataset's min and max (Diffuser's ``LimitsNormalizer``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["LimitsNormalizer", "SequenceDataset", "episode_bounds"]


class LimitsNormalizer:
    """Affine map of each dimension from [min, max] to [-1, 1]."""

    def __init__(self, mins: np.ndarray, maxs: np.ndarray) -> None:
        self.mins = np.asarray(mins, dtype=np.float32)
        self.maxs = np.asarray(maxs, dtype=np.float32)
        if self.mins.shape != self.maxs.shape:
            raise ValueError(f"mins {self.mins.shape} and maxs {self.maxs.shape} differ in shape")
        span = self.maxs - self.mins
        self.span = np.where(span > 0, span, 1.0).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray) -> LimitsNormalizer:
        """Fit to data (N, dim)."""
        return cls(x.min(axis=0), x.max(axis=0))

    def normalize(self, x):
        """x (..., dim) in data units -> [-1, 1]; numpy or torch."""
        mins, span = self._like(x)
        return 2 * (x - mins) / span - 1

    def unnormalize(self, x):
        """Inverse of :meth:`normalize`; values are clipped to [-1, 1] first."""
        mins, span = self._like(x)
        x = x.clip(-1, 1)
        return (x + 1) / 2 * span + mins

    def _like(self, x):
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(self.mins, device=x.device, dtype=x.dtype),
                torch.as_tensor(self.span, device=x.device, dtype=x.dtype),
            )
        return self.mins, self.span

    def state_dict(self) -> dict[str, list[float]]:
        return {"mins": self.mins.tolist(), "maxs": self.maxs.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> LimitsNormalizer:
        return cls(np.array(state["mins"]), np.array(state["maxs"]))


def episode_bounds(timeouts: np.ndarray, terminals: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Split a stream after every step flagged ``timeouts | terminals``: [start, end) index pairs."""
    ends = np.asarray(timeouts, dtype=bool).copy()
    if terminals is not None:
        ends |= np.asarray(terminals, dtype=bool)
    ends[-1] = True
    stops = np.flatnonzero(ends) + 1
    starts = np.concatenate([[0], stops[:-1]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class SequenceDataset(Dataset):
    """Windows of ``horizon`` consecutive transitions that never cross an episode boundary.

    Like Diffuser with ``use_padding=False``: episodes shorter than the horizon contribute
    nothing. Items are float32 tensors (horizon, obs_dim + act_dim), normalised.
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        bounds: list[tuple[int, int]],
        horizon: int,
        normalizer: LimitsNormalizer | None = None,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        x = np.concatenate([observations, actions], axis=-1).astype(np.float32)
        self.normalizer = normalizer or LimitsNormalizer.fit(x)
        self.data = torch.from_numpy(self.normalizer.normalize(x).astype(np.float32))
        self.horizon = horizon
        starts = [np.arange(s, e - horizon + 1) for s, e in bounds if e - s >= horizon]
        if not starts:
            longest = max(e - s for s, e in bounds)
            raise ValueError(f"no episode is as long as the horizon {horizon} (longest: {longest})")
        self.starts = torch.from_numpy(np.concatenate(starts))
        self.obs_dim = observations.shape[-1]
        self.transition_dim = x.shape[-1]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> torch.Tensor:
        s = int(self.starts[idx])
        return self.data[s : s + self.horizon]
