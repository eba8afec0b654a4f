"""Configs as dataclasses with named presets (``quick`` for a laptop CPU, ``paper`` for a GPU).

The one preset helper of the project: a package keeps ``PRESETS = {"quick": Config(...), ...}``
and resolves a run's config with ``preset(PRESETS, name, **overrides)``; ``save_config`` writes
the resolved config as the run folder's ``config.json`` (see :mod:`core.runs`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from .files import atomic_write

__all__ = ["preset", "sized_preset", "config_to_dict", "save_config", "apply_overrides"]

C = TypeVar("C")


def preset(presets: dict[str, C], name: str, **overrides: Any) -> C:
    """A copy of the dataclass preset ``presets[name]`` with the non-None ``overrides`` applied
    (:func:`apply_overrides`); an unknown name lists the valid ones, an unknown field the valid fields."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(presets))}")
    config = dataclasses.replace(presets[name])
    return apply_overrides(config, overrides) if overrides else config


def sized_preset(cls: type[C], sizes: dict[str, tuple[int, int, int]], name: str, **overrides: Any) -> C:
    """A transformer paper size ``"<size>/<patch>"`` (e.g. ``"S/2"``) of config class ``cls``:
    ``sizes[size] = (depth, dim, heads)``, ``patch_size`` from the name, then ``overrides``."""
    size, _, patch = name.partition("/")
    if size not in sizes or not patch.isdigit():
        raise ValueError(
            f"unknown {cls.__name__} preset {name!r}; expected <size>/<patch> with size in {list(sizes)}"
        )
    table = {k: cls(depth=d, dim=w, heads=h) for k, (d, w, h) in sizes.items()}
    return preset(table, size, patch_size=int(patch), **overrides)


def apply_overrides(config: C, overrides: dict[str, Any]) -> C:
    """A copy of ``config`` with the non-None ``overrides`` applied; unknown fields are an error."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; valid fields: {sorted(fields)}")
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a (nested) dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as JSON, atomically."""
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(config_to_dict(config), indent=2))
