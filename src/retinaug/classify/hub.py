"""timm's pretrained weights on the Hugging Face hub: which repository holds a timm tag, and whether the local
cache already has its safetensors file. Apart from `weights` (which resolves a `pretrained` spec and falls back on
the weights packages of `imagenet`) so that `imagenet` can report the cache without importing the resolver."""

from __future__ import annotations

from pathlib import Path

from ..errors import RetinaugError

HUB_WEIGHTS = "model.safetensors"  # timm's and transformers' name for safetensors weights in a hub repository


def cached_hub_file(repo_id: str) -> Path | None:
    """REPO_ID's model.safetensors if the Hugging Face cache holds it (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, HUB_WEIGHTS)
    return Path(found) if isinstance(found, str) else None


def timm_repo(name: str, backbone: str) -> str:
    """The hub repository of timm's weights NAME (`<model>.<tag>`), refused unless they are BACKBONE's."""
    from timm.models import get_pretrained_cfg, list_pretrained

    arch, _, tag = name.partition(".")
    if arch != backbone:
        raise RetinaugError(
            f"pretrained timm:{name} holds {arch} weights but the backbone is {backbone}: set backbone: {arch}"
        )
    try:
        cfg = get_pretrained_cfg(name) if tag else None
    except RuntimeError:  # timm: an invalid tag of a known architecture
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        tags = list_pretrained(f"{arch}.*")
        raise RetinaugError(
            f"pretrained timm:{name}: timm has no hub weights of that name; "
            + (
                f"tags of {arch}: {', '.join('timm:' + t for t in tags[:8])}"
                if tags
                else f"timm knows no pretrained {arch}"
            )
        )
    return cfg.hf_hub_id
