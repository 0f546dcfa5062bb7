"""Generator registry (timm-style): `register_generator`, `create_generator(name, config)`, `method_of(config)`,
`load_generator(dir)`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import RetinaugError, validated
from ..generation_record import CONFIG_NAME
from ..io import load_json, safe_join, sha256_file

if TYPE_CHECKING:
    from .base import Generator

_REGISTRY: dict[str, type[Generator]] = {}
# retinaug's own generators, by where they are: imported when first asked for (they load torch and diffusers), and
# without importing this module, so registry and generators import no cycle
BUILTIN = {
    "ddpm": "retinaug.generate.ddpm:DDPMGenerator",
    "ldm": "retinaug.generate.ldm:LDMGenerator",
    "sd-lora": "retinaug.generate.sd_lora:SDLoRAGenerator",
}


def register_generator(name: str):
    """Class decorator: make a Generator subclass (a plugin's) creatable by `name`."""

    def wrap(cls: type[Generator]) -> type[Generator]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _builtin() -> dict[str, type[Generator]]:
    """The registry, retinaug's own generators included."""
    for name, where in BUILTIN.items():
        if name not in _REGISTRY:
            module, _, cls = where.partition(":")
            _REGISTRY[name] = getattr(importlib.import_module(module), cls)
    return _REGISTRY


def list_generators() -> list[str]:
    return sorted(_builtin())


def generator_class(name: str) -> type[Generator]:
    if name not in _builtin():
        raise RetinaugError(f"unknown generator method {name!r}; available: {', '.join(list_generators())}")
    return _REGISTRY[name]


def method_of(config: BaseModel) -> str:
    """The registered method whose `config_class` is the class of `config` (or, for a subclass of one, the nearest
    such class): DDPMConfig -> 'ddpm', LDMConfig -> 'ldm', SDLoRAConfig -> 'sd-lora'."""
    for cls in type(config).__mro__:
        names = [name for name, gen in _builtin().items() if gen.config_class is cls]
        if len(names) > 1:
            raise RetinaugError(
                f"{cls.__name__} is the config of several generators ({', '.join(names)}); give each its own config class"
            )
        if names:
            return names[0]
    known = ", ".join(f"{gen.config_class.__name__} ({name})" for name, gen in sorted(_REGISTRY.items()))
    raise RetinaugError(f"{type(config).__name__} is not the config of a generator method; give one of {known}")


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
