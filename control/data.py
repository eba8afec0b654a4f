"""Offline datasets: D4RL-format HDF5 files (ours or d4rl's own) and local Minari datasets.

Everything loads into one flat dict of arrays with D4RL's keys (``observations`` (N, obs_dim),
``actions`` (N, act_dim), ``rewards``, ``terminals``, ``timeouts`` (N,), optional ``infos/*``),
validated at the boundary. No d4rl import: a file in d4rl's cache
(``~/.d4rl/datasets/<name>.hdf5``) is read with h5py.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from core.files import atomic_write

__all__ = [
    "REQUIRED_KEYS",
    "DatasetError",
    "load_d4rl",
    "load_minari",
    "validate_dataset",
    "write_d4rl",
]

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
COORDINATES_ATTR = "coordinates"


class DatasetError(ValueError):
    """A dataset file is missing a key, has inconsistent lengths or non-finite values."""


def validate_dataset(data: dict[str, np.ndarray], source: str = "dataset") -> dict[str, np.ndarray]:
    """Check required keys, equal first dimensions and finite observations/actions; return data."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"{source}: missing key(s) {missing}; found {sorted(data)}")
    n = len(data["observations"])
    if n == 0:
        raise DatasetError(f"{source}: 'observations' is empty")
    for key, value in data.items():
        if len(value) != n:
            raise DatasetError(f"{source}: '{key}' has length {len(value)} but 'observations' has length {n}")
    for key in ("observations", "actions", "rewards"):
        arr = np.asarray(data[key])
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DatasetError(f"{source}: '{key}' has {int(bad.sum())} NaN/inf value(s), first at row {row}")
    if np.asarray(data["observations"]).ndim != 2 or np.asarray(data["actions"]).ndim != 2:
        raise DatasetError(
            f"{source}: 'observations' and 'actions' must be 2-D (N, dim), got "
            f"{np.shape(data['observations'])} and {np.shape(data['actions'])}"
        )
    return data


def write_d4rl(path: str | Path, data: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Write ``data`` as D4RL-format HDF5 atomically (:func:`core.files.atomic_write`).

    Keys with ``/`` become groups (``infos/goal``). Byte-identical for identical inputs.
    """
    validate_dataset(data, str(path))
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        for key in sorted(data):
            f.create_dataset(key, data=np.asarray(data[key]), track_times=False)
        for key, value in sorted((attrs or {}).items()):
            f.attrs[key] = value
    return path


def _read_group(group: h5py.Group, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out.update(_read_group(item, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = item[()]
    return out


def resolve_d4rl_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or a D4RL dataset name looked up in ``~/.d4rl/datasets``."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    cached = Path("~/.d4rl/datasets").expanduser() / f"{name_or_path}.hdf5"
    if cached.is_file():
        return cached
    raise FileNotFoundError(f"no D4RL dataset at {str(path)!r} nor at {str(cached)!r}")


def load_d4rl(name_or_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Load and validate a D4RL HDF5 file; returns (arrays, file attributes).

    The attribute ``coordinates`` is ``"gymnasium-robotics"`` for files written by
    ``python -m control data``; files without it are taken to be in D4RL's frame.
    """
    path = resolve_d4rl_path(name_or_path)
    try:
        with h5py.File(path, "r") as f:
            data = _read_group(f)
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from e
    attrs.setdefault(COORDINATES_ATTR, "d4rl")
    return validate_dataset(data, str(path)), attrs


def _flat_obs(obs) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(obs, dict):
        goal = obs.get("desired_goal")
        return np.asarray(obs["observation"]), None if goal is None else np.asarray(goal)
    return np.asarray(obs), None


def load_minari(dataset_id_or_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Load a local Minari dataset: its folder, its ``data`` folder or an id under ``$MINARI_DATASETS_PATH``.

    Episodes are concatenated in D4RL layout: the final observation of each episode is
    dropped, ``timeouts`` is True on each episode's last step unless it terminated, and a dict
    observation (PointMaze) contributes ``observation`` and ``infos/goal`` (= desired_goal).
    """
    import minari

    path = Path(dataset_id_or_path).expanduser()
    if (path / "data").is_dir():
        path = path / "data"
    if path.is_dir():
        dataset = minari.MinariDataset(path)
    else:
        dataset = minari.load_dataset(str(dataset_id_or_path))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in REQUIRED_KEYS}
    goals = []
    for ep in dataset.iterate_episodes():
        obs, goal = _flat_obs(ep.observations)
        n = len(ep.actions)
        terminals = np.asarray(ep.terminations, dtype=bool)
        timeouts = np.asarray(ep.truncations, dtype=bool).copy()
        if not terminals[-1]:
            timeouts[-1] = True
        parts["observations"].append(obs[:n])
        parts["actions"].append(np.asarray(ep.actions).reshape(n, -1))
        parts["rewards"].append(np.asarray(ep.rewards, dtype=np.float32))
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        if goal is not None:
            goals.append(goal[:n])
    if not parts["observations"]:
        raise DatasetError(f"Minari dataset {str(dataset_id_or_path)!r} has no episodes")
    data = {k: np.concatenate(v) for k, v in parts.items()}
    if goals:
        data["infos/goal"] = np.concatenate(goals)
    attrs = {COORDINATES_ATTR: "gymnasium-robotics", "source": f"minari:{dataset.id}"}
    return validate_dataset(data, f"Minari dataset {dataset.id!r}"), attrs
