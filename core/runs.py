"""Run folders and the demo contract: what every package's command line writes, and where.

Run folder layout (``runs/<package>/<name>/``; each command writes only its own entries)::

    config.json    the resolved run config (:func:`core.config.save_config`); a run resumes
                   only under the same config (:func:`check_resume`)
    train/         the Trainer's checkpoints and logs (``metrics.csv``)
    model/         the trained model as a pretrained folder (``save_pretrained``:
                   ``config.json`` + ``model.safetensors``), loadable by ``<Class>.from_pretrained``
    metrics.json   results, one key per evaluation, merged atomically (:func:`core.files.merge_json`)
    *.png          figures
    .lock          held by the process writing into the folder (:func:`lock_run`)

Demo contract (``scripts/demo.py`` relies on it)::

    python -m <package> demo --out DIR --device {auto,cpu,cuda} --seed N [--preset P] [--no-progress]

exits 0 after writing ``DIR/report.md`` (a markdown section starting with ``## <package>``,
whose figures are linked as ``./<file>.png`` relative to ``DIR`` and exist),
``DIR/metrics.json`` (a JSON object) and the figures; the same arguments give the same numbers.
:func:`add_demo_arguments` declares the options, :func:`check_demo_output` checks the result.
A package's parser is ``build_parser()`` in ``<package>.cli``, or in ``<package>.__main__``
when it has no ``cli`` module (then ``__main__`` runs ``main()`` only under ``__name__ == "__main__"``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

from .files import read_json

__all__ = [
    "CONFIG_FILE",
    "DEMO_OPTIONS",
    "LOCK_FILE",
    "METRICS_FILE",
    "MODEL_DIR",
    "TRAIN_DIR",
    "ConfigMismatchError",
    "RunLockedError",
    "USER_ERRORS",
    "run_command",
    "add_demo_arguments",
    "check_demo_output",
    "settings_digest",
    "seed_stats",
    "check_resume",
    "lock_run",
    "run_folder",
    "validate_run_name",
]

CONFIG_FILE = "config.json"
TRAIN_DIR = "train"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"
#: The options every ``python -m <package> demo`` accepts.
DEMO_OPTIONS = ("--out", "--device", "--seed")


class ConfigMismatchError(ValueError):
    """A run folder holds a run of another config; resuming it would mix two experiments."""


class RunLockedError(RuntimeError):
    """Another process is writing into the run folder."""


#: Errors a command line reports as one line ``error: <message>`` on stderr with exit status 2
#: (bad values, missing or damaged files, a busy or mismatched run folder), not as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, RunLockedError)


def run_command(command: Callable[[], int | None]) -> int:
    """Run ``command()`` for a command line: its status (None counts as 0), or, for one of
    :data:`USER_ERRORS`, ``error: <message>`` on stderr and status 2."""
    try:
        return command() or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def validate_run_name(name: str) -> str:
    """``name`` if it is a relative folder name inside the runs folder; a ValueError for an empty
    name, an absolute path or one with ``..`` (which would write outside ``runs/<package>/``)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"run name must be a non-empty folder name, got {name!r}")
    path = PurePath(name)
    if path.is_absolute() or os.path.isabs(name) or ".." in path.parts or name.startswith("~"):
        raise ValueError(
            f"run name {name!r} must be a relative folder name without '..' (it goes under runs/<package>/); "
            "use --out for another location"
        )
    return name


def run_folder(package: str, name: str, root: str | os.PathLike = "runs") -> Path:
    """``root/package/name`` after :func:`validate_run_name`."""
    return Path(root) / package / validate_run_name(name)


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str]) -> list[str]:
    skip = set(ignore)
    keys = sorted((set(saved) | set(current)) - skip)
    return [k for k in keys if saved.get(k, "<missing>") != current.get(k, "<missing>")]


def settings_digest(settings: Any) -> str:
    """The first 10 hex digits of the SHA-1 of ``settings`` as sorted-key JSON: a short name for
    a cached result, so a change of any setting it depends on never reuses a stale one."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def seed_stats(values: Iterable[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of a result over seeds (or items): the mean, the sample
    standard deviation (0 for a single value) and the values as floats."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("seed_stats needs at least one value")
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "values": vals,
    }


def check_resume(folder: str | os.PathLike, config: Mapping[str, Any], ignore: Iterable[str] = ()) -> None:
    """Refuse to resume ``folder`` under a different config.

    ``config`` is the new run's JSON config (:func:`core.config.config_to_dict`); fields in
    ``ignore`` (device, threads, evaluation-only settings) may differ. A folder without
    ``config.json`` is new. Raises :class:`ConfigMismatchError` naming the differing fields and
    both values, and what to do instead; nothing is deleted.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        return
    saved = read_json(path)
    current = json.loads(json.dumps(config, default=str))
    diff = _differences(saved, current, ignore)
    if diff:
        changes = ", ".join(
            f"{k}: {saved.get(k, '<missing>')!r} -> {current.get(k, '<missing>')!r}" for k in diff
        )
        raise ConfigMismatchError(
            f"{Path(folder)} holds a run of another config ({changes}); its checkpoints are kept. "
            "Resume it with the same settings, or choose another output folder (--out/--name)"
        )


@contextlib.contextmanager
def lock_run(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the run folder (created) while the block runs.

    A second process asking for the same folder gets :class:`RunLockedError` at once instead
    of interleaving its checkpoints with the first's. The lock is released when the block ends
    or the process dies (an OS file lock on ``folder/.lock``).
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise RunLockedError(
                f"run folder {folder} is in use by {owner} (lock {path}); wait for it or use another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_demo_arguments(
    parser: argparse.ArgumentParser,
    package: str,
    presets: Iterable[str] | None = None,
    progress: bool = True,
) -> argparse.ArgumentParser:
    """Declare the demo contract's options on ``parser``: ``--out`` (default
    ``runs/demo/<package>``), ``--device`` (auto), ``--seed`` (0), given preset names
    ``--preset`` (default ``quick``), and with ``progress`` ``--no-progress``."""
    if presets is not None:
        names = sorted(presets)
        parser.add_argument("--preset", default="quick" if "quick" in names else names[0], choices=names)
    parser.add_argument("--out", type=Path, default=Path("runs/demo") / package, help="output folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


_FIGURE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def check_demo_output(out: str | os.PathLike, package: str) -> dict:
    """Check that ``out`` holds what the demo contract promises; returns ``metrics.json``.

    Raises ValueError (or FileNotFoundError) naming the missing file, the bad heading or link.
    """
    out = Path(out)
    report = out / "report.md"
    if not report.is_file():
        raise FileNotFoundError(f"demo of {package} wrote no report: {report} is missing")
    text = report.read_text()
    if not text.lower().startswith(f"## {package}"):
        raise ValueError(f"{report} must start with '## {package}', got {text[:40]!r}")
    for link in _FIGURE.findall(text):
        if not link.startswith("./") or not (out / link).is_file():
            raise ValueError(f"{report} links figure {link!r}: expected ./<file> that exists in {out}")
    return read_json(out / METRICS_FILE)
