"""Generator registry (timm-style): `register_generator`, `create_generator(name, config)`, `load_generator(dir)`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import RetinaugError, validated
from ..generation_record import CONFIG_NAME
from ..io import load_json, safe_join, sha256_file

if TYPE_CHECKING:
    from .base import Generator

_REGISTRY: dict[str, type[Generator]] = {}


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


def weight_checksums(folder: str | Path) -> dict[str, str]:
    """SHA-256 of a generator folder's weights and component configs, by relative path: every *.safetensors file,
    and the *.json files of its component sub-folders (unet/, scheduler/, ...); recorded in config.json."""
    folder = Path(folder)
    files = [f for f in folder.rglob("*") if f.is_file() and "tracking" not in f.relative_to(folder).parts[:-1]]
    wanted = [f for f in files if f.suffix == ".safetensors" or (f.suffix == ".json" and f.parent != folder)]
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(wanted)}


def verify_weights(folder: Path, recorded: dict[str, str]) -> None:
    """Refuse a generator whose weight files differ from the checksums in its config.json (modified or corrupt)."""
    for rel, digest in recorded.items():
        file = safe_join(folder, rel)
        if not file.is_file():
            raise RetinaugError(f"{file} is missing from generator folder {folder}; retrain with `retinaug finetune`")
        if sha256_file(file) != digest:
            raise RetinaugError(
                f"{file} does not match the checksum recorded in {folder / CONFIG_NAME}: the file was modified or "
                "corrupted; retrain with `retinaug finetune`"
            )


def load_generator(path: str | Path) -> Generator:
    """Load a trained generator folder written by `finetune` (local files only, no network). A damaged config.json
    and weights that fail their recorded checksums are RetinaugErrors."""
    path = Path(path)
    meta_file = path / CONFIG_NAME
    if not meta_file.is_file():
        raise RetinaugError(f"{path} is not a generator folder (no {CONFIG_NAME}); train one with `retinaug finetune`")
    meta = load_json(meta_file, "generator config", "retrain with `retinaug finetune`")
    lacking = [k for k in ("method", "classes", "config") if not isinstance(meta, dict) or k not in meta]
    if lacking or not isinstance(meta.get("weights_sha256", {}), dict):
        raise RetinaugError(
            f"{meta_file} is damaged (lacks {', '.join(lacking) or 'valid weights_sha256'}); retrain with `retinaug finetune`"
        )
    verify_weights(path, meta.get("weights_sha256", {}))  # folders written before checksums existed have none
    gen = create_generator(meta["method"], meta["config"])
    gen.classes = list(meta["classes"])
    try:
        gen.load_weights(path)
    except (OSError, ValueError) as exc:  # diffusers/safetensors errors for damaged component files
        raise RetinaugError(
            f"cannot load the {meta['method']} weights in {path} ({type(exc).__name__}: {exc}); retrain with `retinaug finetune`"
        ) from None
    return gen
