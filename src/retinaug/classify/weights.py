"""Where a fit's starting weights come from: a `pretrained` spec (local file, timm tag, hub id) or an `init` path.

Only safetensors files are ever read (`models.read_safetensors`). Remote weights resolve through the Hugging Face
cache, so an offline machine (HF_HUB_OFFLINE=1, or no network) uses what the cache holds and otherwise gets an
error that says how to pass a local file instead. `pretrained: imagenet` reads only local sources: the Hugging Face
cache, then a pip-installed weights package (`imagenet.py`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..errors import RetinaugError
from ..io import sha256_file
from .hub import HUB_WEIGHTS, cached_hub_file, timm_repo
from .imagenet import EXTRA, SOURCES, WeightsPackage, imagenet_weights, package_for_tag, supported_backbones

log = logging.getLogger("retinaug.classify")
PICKLE_SUFFIXES = (
    ".pt",
    ".pth",
    ".bin",
    ".pkl",
    ".pickle",
    ".ckpt",
    ".tar",
)  # weights files refused: pickles can run code
IMAGENET = "imagenet"  # pretrained: imagenet, the backbone's ImageNet weights from a local source
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")
_IMAGENET_TAG = re.compile(r"in1k|in12k|in21k|in22k")  # timm tags of weights trained (or fine-tuned) on ImageNet


def resolve_pretrained(spec: str | Path, backbone: str) -> Path:
    """A local safetensors file for a `pretrained` value: a local path as it is; `timm:<model>.<tag>` via timm's
    pretrained config (its hub repository); `hf-hub:<org>/<name>` or `<org>/<name>` (not an existing path) as a
    Hugging Face hub repository's model.safetensors; `imagenet` from a local source (`imagenet_file`)."""
    text = str(spec)
    if text == IMAGENET:
        return imagenet_file(backbone)
    if text.startswith("timm:"):
        name = text.removeprefix("timm:")
        return hub_file(timm_repo(name, backbone), text, package_for_tag(name))
    if text.startswith("hf-hub:"):
        return hub_file(text.removeprefix("hf-hub:"), text)
    path = Path(text).expanduser()
    weights_file = path.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)  # a local file (pickles get refused)
    if not path.exists() and not weights_file and _HUB_ID.fullmatch(text):
        return hub_file(text, text)
    return path


def imagenet_file(backbone: str) -> Path:
    """`pretrained: imagenet`: BACKBONE's ImageNet weights from the first local source that has them, timm's default
    ImageNet tag in the Hugging Face cache, then an installed weights package. Nothing is downloaded, so a run
    starts from the same weights online and offline."""
    from huggingface_hub import constants

    tag, cached = _cached_imagenet(backbone)
    if cached:
        log.info("pretrained: imagenet = timm:%s from the Hugging Face cache (%s)", tag, cached)
        return cached
    if backbone in SOURCES:
        return imagenet_weights(backbone)
    where = (
        f"timm:{tag} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}; online, pretrained: timm:{tag} downloads it)"
        if tag
        else f"timm knows no ImageNet weights of {backbone}"
    )
    raise RetinaugError(f"pretrained: imagenet for backbone {backbone}: {where}; {supported_backbones(backbone)}")


def _cached_imagenet(backbone: str) -> tuple[str | None, Path | None]:
    """timm's default ImageNet tag of BACKBONE (None: it has none) and its file in the Hugging Face cache (if there)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    tag = f"{backbone}.{cfg.tag}" if cfg and cfg.hf_hub_id and _IMAGENET_TAG.search(cfg.tag or "") else None
    return tag, cached_hub_file(cfg.hf_hub_id) if tag else None


def imagenet_available(backbone: str) -> bool:
    """Whether `pretrained: imagenet` finds BACKBONE's weights on this machine (nothing is read or converted)."""
    return _cached_imagenet(backbone)[1] is not None or (backbone in SOURCES and SOURCES[backbone].installed())


def hub_file(repo: str, spec: str, package: WeightsPackage | None = None) -> Path:
    """REPO[@revision]'s model.safetensors from the Hugging Face cache, downloaded first when the machine is online;
    offline and not cached, the same weights from their installed `package` (if any)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        return Path(hf_hub_download(repo_id, HUB_WEIGHTS, revision=revision or None))
    except LocalEntryNotFoundError:
        if package is not None and package.installed():
            log.info(
                "pretrained %s: not in the Hugging Face cache; the same weights from %s", spec, package.distribution
            )
            return imagenet_weights(package.backbone)
        raise RetinaugError(
            f"pretrained {spec}: {repo_id}/{HUB_WEIGHTS} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"cannot be downloaded (offline: HF_HUB_OFFLINE=1 or no network). On a machine with network run "
            f"`hf download {repo_id} {HUB_WEIGHTS}` (huggingface_hub's CLI) and copy its cache folder here (or point HF_HUB_CACHE at it), "
            f"or pass a local file: pretrained: path/to/weights.safetensors"
            + (f", or install these weights: {EXTRA}" if package else "")
        ) from None
    except RepositoryNotFoundError:
        raise RetinaugError(f"pretrained {spec}: no Hugging Face repository {repo_id} (or it is private)") from None
    except EntryNotFoundError:
        raise RetinaugError(
            f"pretrained {spec}: {repo_id} has no {HUB_WEIGHTS}; only safetensors weights are loaded (pickles can run code)"
        ) from None


def init_file(path: str | Path) -> Path:
    """The weights of an `init: PATH`: a classifier folder's model.safetensors (checked against its model.json
    checksum), or a .safetensors file as it is."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / HUB_WEIGHTS
        if not weights.is_file():
            raise RetinaugError(
                f"init: {path} is a folder without {HUB_WEIGHTS}: give a trained classifier folder or a .safetensors file"
            )
        recorded = recorded_sha256(path)  # None for a bare weights folder: read_safetensors still checks the format
        if recorded and sha256_file(weights) != recorded:
            raise RetinaugError(
                f"init: {weights} does not match the checksum in {path / 'model.json'}: modified or corrupt; retrain it"
            )
        return weights
    if not path.is_file():
        raise RetinaugError(
            f"init: {path} not found: give a trained classifier folder or a .safetensors file (or scratch, all-classes)"
        )
    return path


def recorded_sha256(folder: Path) -> str | None:
    """The weights checksum a classifier folder's model.json records (None: no readable model.json)."""
    try:
        found = json.loads((Path(folder) / "model.json").read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None
