"""Writing and reading files safely: the one atomic write of the project, and JSON reads whose
errors name the file.

A reader (another process, a resumed run, a crash half-way) must never see a half-written
file: every file is written to a temporary name in the same folder, flushed to disk, then
renamed over the target in one step (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_directory", "atomic_write", "merge_json", "read_json", "write_json"]


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` in one step.

    The temporary file keeps ``path``'s suffix (writers that infer the format from it work), is
    flushed to disk before the rename, gets mode 0644, and is removed if the block raises, so
    readers see the old file or the new one, never a mixture. Parent folders are created.

    Example::

        with atomic_write("runs/x/metrics.json") as tmp:
            tmp.write_text(json.dumps(metrics))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; when the block succeeds it replaces ``path``.

    An existing ``path`` is moved aside and removed only after the new folder is in place. On an
    exception the temporary folder is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns the path."""
    path = Path(path)
    text = json.dumps(obj, indent=2) + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def read_json(path: str | os.PathLike, *, expect: type = dict) -> Any:
    """The JSON value in ``path``; FileNotFoundError or ValueError naming the file when it is
    missing, unreadable, not JSON or not of type ``expect`` (``dict`` by default, ``object`` for any)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"could not parse {path} as JSON ({e}); delete or repair the file") from e
    if not isinstance(value, expect):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, expected a {expect.__name__}")
    return value


def merge_json(path: str | os.PathLike, entries: Mapping[str, Any]) -> dict:
    """Update the JSON object in ``path`` (created if missing) with ``entries``, atomically; returns it."""
    path = Path(path)
    current = read_json(path) if path.exists() else {}
    current.update(entries)
    write_json(path, current)
    return current
