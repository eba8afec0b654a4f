"""Where datasets live, how they are written, and the error raised when one is missing."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DatasetNotFoundError", "atomic_write", "data_root"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file or folder is missing; the message says how to get it."""

    def __init__(self, what: str, path: str | os.PathLike, how: str) -> None:
        self.path = Path(path)
        super().__init__(f"{what} not found at {self.path}: {how}")


def data_root() -> Path:
    """Cache folder for generated or converted data: ``$ANNEAL_DATA``, else ``~/.cache/anneal``."""
    env = os.environ.get("ANNEAL_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anneal"


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary file keeps ``path``'s suffix (writers that infer the format from it work)
    and is removed if the block raises, so readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
