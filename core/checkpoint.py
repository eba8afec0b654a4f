"""Pretrained-model folders: weights as ``model.safetensors`` beside a JSON ``config.json``, like diffusers.

The one save/load convention of the project: every saved model (backbones, classifiers, planners)
is a :class:`ModelMixin`, whose constructor arguments are recorded and written as its config, as
diffusers' ``ConfigMixin`` does. A folder written by :func:`save_pretrained` holds::

    config.json        {"_class_name": "MyNet", "_anneal_version": "0.1.0", <constructor kwargs>}
    model.safetensors  the model's state dict (tied tensors stored once)

:func:`from_pretrained` rebuilds the model as ``cls(**kwargs)`` and loads the weights. Constructor
arguments may be JSON values, dataclass configs (``UNet(UNetConfig(...))``: written as a JSON
object, rebuilt from the parameter's type annotation, tuples included) or other
:class:`ModelMixin` models (written as their own config, rebuilt the same way).
Writes are atomic (:mod:`core.files`): a new folder is built under a temporary name and renamed
into place; an existing folder has each file replaced atomically (weights first, then the config).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from .files import atomic_directory, atomic_write

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ModelMixin",
    "from_pretrained",
    "load_config",
    "load_weights",
    "save_pretrained",
    "save_weights",
    "to_json_config",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound=nn.Module)


def _anneal_version() -> str:
    try:
        from importlib.metadata import version

        return version("anneal")
    except Exception:
        return "unknown"


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model.state_dict()`` to a safetensors file (atomically; tied tensors stored once)."""
    with atomic_write(path) as tmp:
        save_model(model, str(tmp), metadata={"format": "pt"})


def load_weights(model: nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
    """Load a safetensors state dict into ``model`` in place, strictly.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not readable safetensors, a tensor's shape does not match, or keys are
            missing/unexpected (tied parameters stored once are accepted).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"could not read safetensors file {path} (corrupted or not safetensors): {e}") from e
    model_state = model.state_dict()
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    if missing:
        # A tensor tied to a stored one (same storage, offset and shape) is saved only once.
        def key(t: torch.Tensor) -> tuple:
            return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))

        stored = {key(model_state[k]) for k in state if k in model_state}
        missing = [k for k in missing if key(model_state[k]) not in stored]
    if missing or unexpected:
        raise ValueError(
            f"weights in {path} do not match {type(model).__name__}: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"weights in {path} do not fit {type(model).__name__}: {e}") from e


def load_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``directory/config.json`` (FileNotFoundError / ValueError naming the file on failure)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"pretrained folder not found: {directory}")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"could not parse {path} as JSON: {e}") from e
    if not isinstance(config, dict) or "_class_name" not in config:
        raise ValueError(f"{path} is not a model config: expected a JSON object with '_class_name'")
    return config


def save_pretrained(model: nn.Module, directory: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Save ``model`` as ``directory/model.safetensors`` plus ``directory/config.json``.

    Args:
        model: any module; its class name is recorded as ``"_class_name"``.
        directory: target folder (created; an existing one keeps its other files).
        config: constructor kwargs such that ``type(model)(**config)`` rebuilds it: JSON values,
            dataclasses or ModelMixin models (see :func:`to_json_config`).

    Returns:
        The folder path.
    """
    directory = Path(directory)
    config = to_json_config(config)
    bad = [k for k in config if not isinstance(k, str) or k.startswith("_")]
    if bad:
        raise ValueError(f"config keys must be strings not starting with '_', got {bad}")
    for k, v in config.items():
        try:
            json.dumps(v, allow_nan=True)
        except TypeError as e:
            raise TypeError(f"config value {k}={v!r} is not JSON-serialisable: {e}") from e
    full = {"_class_name": type(model).__name__, "_anneal_version": _anneal_version(), **config}

    if directory.exists():
        save_weights(model, directory / WEIGHTS_NAME)
        with atomic_write(directory / CONFIG_NAME) as tmp:
            _write_json(tmp, full)
    else:
        with atomic_directory(directory) as tmp:
            save_model(model, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            _write_json(tmp / CONFIG_NAME, full)
    return directory


def from_pretrained(
    cls: type[M], directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> M:
    """Rebuild ``cls(**config)`` from a folder written by :func:`save_pretrained` and load its weights.

    The model is returned on ``map_location`` in eval mode.

    Raises:
        FileNotFoundError: the folder, ``config.json`` or ``model.safetensors`` is missing (names it).
        ValueError: the folder holds another class (names both), the weights file is corrupted, or the
            weights' keys/shapes do not match.
    """
    directory = Path(directory)
    config = load_config(directory)
    if config["_class_name"] != cls.__name__:
        raise ValueError(
            f"{directory} holds a {config['_class_name']} checkpoint, cannot load it as {cls.__name__}"
        )
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        model = cls.from_config(kwargs) if issubclass(cls, ModelMixin) else cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"{cls.__name__}(**config) failed for {directory / CONFIG_NAME}: {e}") from e
    except ValueError as e:
        raise ValueError(f"{cls.__name__}(**config) failed for {directory / CONFIG_NAME}: {e}") from e
    load_weights(model, weights)
    return model.to(map_location).eval()


# --- constructor arguments <-> JSON -------------------------------------------------------------
def to_json_config(value: Any) -> Any:
    """A recorded constructor argument as a JSON value: a dataclass becomes an object of its
    fields, a :class:`ModelMixin` its own ``{"_class_name", ...config}``, a tuple a list."""
    if isinstance(value, ModelMixin):
        return {"_class_name": type(value).__name__, **to_json_config(value.init_config)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_config(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: to_json_config(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_json_config(v) for v in value]
    return value


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that cannot be evaluated: values are passed through as JSON
        return {}


def _from_json(annotation: Any, value: Any) -> Any:
    """Rebuild a JSON value as ``annotation`` (a dataclass, a ModelMixin, a tuple, a union of them)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None):
                continue
            rebuilt = _from_json(option, value)
            if rebuilt is not value:
                return rebuilt
        return value
    if isinstance(value, Mapping) and isinstance(annotation, type):
        if issubclass(annotation, ModelMixin):
            if value.get("_class_name") != annotation.__name__:
                raise ValueError(f"expected a {annotation.__name__} config, got {value.get('_class_name')!r}")
            return annotation.from_config({k: v for k, v in value.items() if not k.startswith("_")})
        if dataclasses.is_dataclass(annotation):
            return _dataclass_from_json(annotation, value)
    if isinstance(value, list) and (origin is tuple or annotation is tuple):
        args = typing.get_args(annotation)
        item = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        return tuple(_from_json(item, v) if item is not None else v for v in value)
    return value


def _dataclass_from_json(cls: type, value: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
    hints = _type_hints(cls)
    return cls(**{k: _from_json(hints.get(k), v) for k, v in value.items()})


def _record_init(init):
    """Wrap ``__init__`` so the outermost call records its bound arguments as the model config."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "_anneal_config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {}
            for i, (name, value) in enumerate(bound.arguments.items()):
                kind = signature.parameters[name].kind
                if i == 0:
                    continue
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    if value:
                        raise TypeError(
                            f"{type(self).__name__} takes *{name}; ModelMixin records only named "
                            "constructor arguments"
                        )
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                else:
                    config[name] = value
            object.__setattr__(self, "_anneal_config", config)
        init(self, *args, **kwargs)

    return wrapper


class ModelMixin(nn.Module):
    """An ``nn.Module`` whose constructor kwargs are recorded, so it can be saved and rebuilt.

    Every subclass's ``__init__`` is wrapped: the arguments of the outermost call (defaults filled
    in) become :attr:`init_config`. To save, they must be JSON values, dataclass configs or other
    ModelMixin models; annotate such parameters with their class so that :meth:`from_config`
    rebuilds them (tuples come back as tuples where the annotation says ``tuple``).

    Example::

        class MLP(ModelMixin):
            def __init__(self, dim: int, hidden: int = 64):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

        MLP(2).save_pretrained("runs/mlp")
        model = MLP.from_pretrained("runs/mlp", map_location="cuda")
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_init(cls.__dict__["__init__"])

    @property
    def init_config(self) -> dict[str, Any]:
        """The constructor kwargs this instance was built with (a copy)."""
        return dict(self.__dict__.get("_anneal_config", {}))

    @classmethod
    def from_config(cls: type[M], config: Mapping[str, Any]) -> M:
        """A fresh (untrained) model built from a JSON config written by :meth:`save_pretrained`."""
        hints = _type_hints(cls.__init__)
        return cls(**{k: _from_json(hints.get(k), v) for k, v in config.items()})

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``; returns the folder."""
        return save_pretrained(self, directory, self.init_config)

    @classmethod
    def from_pretrained(
        cls: type[M], directory: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> M:
        """Rebuild the model saved in ``directory`` on ``map_location`` (eval mode)."""
        return from_pretrained(cls, directory, map_location=map_location)
