"""Generator registry (timm-style): `register_generator`, `create_generator(name, config)`, `load_generator(dir)`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import RetinaugError, validated

if TYPE_CHECKING:
    from .base import Generator

_REGISTRY: dict[str, type[Generator]] = {}
CONFIG_NAME = "config.json"


def register_generator(name: str):
    """Class decorator: make a Generator subclass creatable by `name`."""

    def wrap(cls: type[Generator]) -> type[Generator]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_generators() -> list[str]:
    return sorted(_REGISTRY)


def generator_class(name: str) -> type[Generator]:
    if name not in _REGISTRY:
        raise RetinaugError(f"unknown generator method {name!r}; available: {', '.join(list_generators())}")
    return _REGISTRY[name]


def make_config(name: str, config: dict | BaseModel | None) -> BaseModel:
    """Validate a dict (e.g. from YAML) or config model against the method's config class."""
    cls = generator_class(name).config_class
    if isinstance(config, cls):
        return config
    data: dict[str, Any] = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
    return validated(cls, data, f"{name} config")


def create_generator(name: str, config: dict | BaseModel | None = None) -> Generator:
    """A fresh (untrained) generator of method `name`."""
    return generator_class(name)(make_config(name, config))


def load_generator(path: str | Path) -> Generator:
    """Load a trained generator folder written by `finetune` (local files only, no network)."""
    path = Path(path)
    meta_file = path / CONFIG_NAME
    if not meta_file.is_file():
        raise RetinaugError(f"{path} is not a generator folder (no {CONFIG_NAME}); train one with `retinaug finetune`")
    meta = json.loads(meta_file.read_text())
    method = meta.get("method")
    gen = create_generator(method, meta.get("config"))
    gen.classes = list(meta["classes"])
    gen.load_weights(path)
    return gen
