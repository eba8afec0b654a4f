"""Where datasets live, how they are written (:func:`core.files.atomic_write`), and the error
raised when one is missing."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DatasetNotFoundError", "data_root"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file or folder is missing; the message says how to get it."""

    def __init__(self, what: str, path: str | os.PathLike, how: str) -> None:
        self.path = Path(path)
        super().__init__(f"{what} not found at {self.path}: {how}")


def data_root() -> Path:
    """Cache folder for generated or converted data: ``$ANNEAL_DATA``, else ``~/.cache/anneal``.

    An empty (or blank) ``ANNEAL_DATA`` counts as unset: it must never mean the current folder."""
    env = os.environ.get("ANNEAL_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anneal"
