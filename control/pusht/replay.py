"""The Diffusion Policy zarr replay buffer: write ours, read ours and the official Push-T store.

Layout (as in ``pusht_cchi_v7_replay.zarr``)::

    data/state      (N, 5)    float32  agent x, y, block x, y, angle
    data/action     (N, 2)    float32  agent target x, y (pixels)
    data/keypoint   (N, K, 2) float32  block keypoints (optional; K = 9 in the official store, 8 here)
    data/img        (N, H, W, 3) uint8 (optional, not read here)
    meta/episode_ends (E,)    int64    exclusive end index of each episode, increasing, last == N
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.checkpoint import atomic_directory

__all__ = ["ReplayBuffer", "write_replay", "read_replay", "ReplayFormatError"]


class ReplayFormatError(ValueError):
    """A zarr store that does not follow the replay-buffer layout."""


class ReplayBuffer:
    """Episodes stored back to back: ``arrays[name]`` (N, ...), ``episode_ends`` (E,)."""

    def __init__(
        self, arrays: dict[str, np.ndarray], episode_ends: np.ndarray, source: str = "<memory>"
    ) -> None:
        ends = np.asarray(episode_ends, dtype=np.int64).reshape(-1)
        for key in ("state", "action"):
            if key not in arrays:
                raise ReplayFormatError(f"{source}: missing data/{key}; found data/{sorted(arrays)}")
        n = len(arrays["state"])
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ReplayFormatError(f"{source}: data arrays have inconsistent lengths {lengths}")
        if len(ends) == 0 or ends[0] <= 0 or np.any(np.diff(ends) <= 0) or ends[-1] != n:
            raise ReplayFormatError(
                f"{source}: meta/episode_ends must be positive, strictly increasing and end at the "
                f"number of steps {n}; got {ends[:5].tolist()}{'...' if len(ends) > 5 else ''} "
                f"(last {int(ends[-1]) if len(ends) else None})"
            )
        self.arrays = arrays
        self.episode_ends = ends
        self.source = source

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1])

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    def episode_slices(self) -> list[slice]:
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        return [slice(int(a), int(b)) for a, b in zip(starts, self.episode_ends, strict=True)]

    def episodes(self, key: str) -> list[np.ndarray]:
        return [self.arrays[key][s] for s in self.episode_slices()]

    def take(self, n_episodes: int) -> ReplayBuffer:
        """The first ``n_episodes`` episodes."""
        if not 1 <= n_episodes <= self.n_episodes:
            raise ValueError(f"n_episodes must be in [1, {self.n_episodes}], got {n_episodes}")
        end = int(self.episode_ends[n_episodes - 1])
        return ReplayBuffer(
            {k: v[:end] for k, v in self.arrays.items()}, self.episode_ends[:n_episodes], self.source
        )


def write_replay(path: str | os.PathLike, buffer: ReplayBuffer, attrs: dict | None = None) -> Path:
    """Write ``buffer`` as a zarr (format 2, like the official store) directory, atomically."""
    import zarr

    path = Path(path)
    with atomic_directory(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        data = root.create_group("data")
        for key, arr in buffer.arrays.items():
            data.create_array(key, data=np.ascontiguousarray(arr))
        meta = root.create_group("meta")
        meta.create_array("episode_ends", data=buffer.episode_ends.astype(np.int64))
        if attrs:
            root.attrs.update(attrs)
    return path


def read_replay(
    path: str | os.PathLike, keys: tuple[str, ...] = ("state", "action", "keypoint")
) -> ReplayBuffer:
    """Read a replay-buffer zarr store (ours or the official ``pusht_cchi_v7_replay.zarr``).

    ``keys``: the ``data/`` arrays to load when present (``state`` and ``action`` are required).
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no zarr store at {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as e:  # zarr raises several types for a non-store
        raise ReplayFormatError(f"{path} is not a readable zarr group: {e}") from e
    if "meta" not in root or "episode_ends" not in root["meta"]:
        raise ReplayFormatError(f"{path}: missing meta/episode_ends (the replay-buffer layout needs it)")
    if "data" not in root:
        raise ReplayFormatError(f"{path}: missing the data/ group")
    data = root["data"]
    arrays = {k: np.asarray(data[k][:]) for k in keys if k in data}
    return ReplayBuffer(arrays, np.asarray(root["meta"]["episode_ends"][:]), str(path))
