"""Pluggable image feature extractors: one feature row per manifest row, computed once and reused.

Selection (t-SNE), the similarity matcher and the quality audit all need "how alike are these images".
They share one interface so the user can choose what "alike" means:

- ``pixels``: downscaled raw pixels in [0, 1] (no model; catches exact and near-exact copies);
- ``labeler`` (or a labeler folder): the trained classifier's penultimate layer (disease-aware);
- ``imagenet`` / ``imagenet:<timm backbone>``: an ImageNet-trained backbone's pooled features (the usual space of
  FID-like figures, and independent of the images being audited, on which the labeler was trained);
- a local CLIP folder in Hugging Face layout (``CLIPModel`` image features, like the seed's matcher).

Nothing is downloaded: model folders are read with ``local_files_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .cache import image_cache
from .errors import RetinaugError
from .fields import PIXEL_SIZE
from .io import load_json
from .progress import progress_bar

IMAGENET = "imagenet"
IMAGENET_BACKBONE = "tf_efficientnet_lite0"  # `imagenet` alone: its weights install with retinaug[imagenet]


class FeatureExtractor:
    """Maps manifest rows to an (N, D) float32 feature array; `name` is recorded in outputs."""

    name: str = "base"

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError


class ImageExtractor(FeatureExtractor):
    """An extractor that reads the cached (size x size) images in batches and embeds the pixel arrays."""

    def __init__(self, size: int, batch_size: int = 64):
        self.size = size
        self.batch_size = batch_size

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, size, size, 3) -> float32 (N, D)."""
        raise NotImplementedError

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        if len(df) == 0:
            raise RetinaugError("no images to embed: the selected manifest rows are empty")
        cache = image_cache(df, self.size)
        parts = []
        with progress_bar(f"embedding ({self.name})", len(df), "img") as advance:
            for start in range(0, len(df), self.batch_size):
                batch = df.iloc[start : start + self.batch_size]
                parts.append(self.embed_images(cache.rows(batch)))
                advance(len(batch))
        return np.concatenate(parts).astype(np.float32, copy=False)


class PixelExtractor(ImageExtractor):
    """Raw pixels at a small size: cheap, model-free, blind to semantics but exact about copies."""

    def __init__(self, size: int = PIXEL_SIZE, batch_size: int = 256):
        super().__init__(size, batch_size)
        self.name = f"pixels{size}"

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) / 255.0


class CLIPExtractor(ImageExtractor):
    """Image features of a CLIP model from a local Hugging Face folder (`CLIPModel.from_pretrained`)."""

    def __init__(self, folder: str | Path, batch_size: int = 64):
        import torch  # torch and transformers load lazily: `retinaug --help` must not wait for them
        from transformers import CLIPModel
        from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        folder = Path(folder)
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
        except (OSError, ValueError) as exc:
            raise RetinaugError(f"cannot load a CLIP model from {folder}: {exc}") from None
        # Use the folder's own normalisation when it ships a preprocessor config, else CLIP's standard one.
        pre = folder / "preprocessor_config.json"
        cfg = load_json(pre, "CLIP preprocessor config") if pre.is_file() else {}
        self.mean = torch.tensor(cfg.get("image_mean", OPENAI_CLIP_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("image_std", OPENAI_CLIP_STD)).view(1, 3, 1, 1)
        super().__init__(int(self.model.config.vision_config.image_size), batch_size)
        self.name = f"clip:{folder.name}"

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.array(images, dtype=np.float32)).permute(0, 3, 1, 2).div_(255.0)
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=(x - self.mean) / self.std)
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 returns a ModelOutput
        return feats.float().numpy()


class ImageNetExtractor(ImageExtractor):
    """Global-pooled penultimate features of a timm backbone with its ImageNet weights (local sources only), at the
    backbone's own input size and normalisation, so the features are the ones its ImageNet training gives."""

    def __init__(self, backbone: str = IMAGENET_BACKBONE, batch_size: int = 64):
        import timm
        import torch

        from .classify.models import read_safetensors
        from .classify.train import input_stats

        weights = imagenet_weights_file(backbone)
        model = timm.create_model(backbone, pretrained=False)
        try:
            model.load_state_dict(read_safetensors(weights), strict=True)  # the whole network, classifier included
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise RetinaugError(
                f"extractor imagenet:{backbone}: {weights} does not fit timm's {backbone} ({first})"
            ) from None
        model.reset_classifier(0)  # then drop the classifier: the output is the pooled penultimate layer
        self.model = model.to(memory_format=torch.channels_last).eval()
        mean, std = input_stats(model)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        super().__init__(int(model.pretrained_cfg["input_size"][-1]), batch_size)
        self.name = f"{IMAGENET}:{backbone}"

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        from .classify.data import normalise

        x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # a copy: the cache's rows may be read-only
        with torch.inference_mode():
            return self.model(normalise(x, self.mean, self.std)).float().numpy()


def imagenet_backbone(spec: str) -> str | None:
    """The timm backbone an `imagenet` or `imagenet:<backbone>` spec names; None for any other spec."""
    name, colon, backbone = spec.partition(":")
    if name != IMAGENET:
        return None
    return backbone if colon else IMAGENET_BACKBONE


def imagenet_ready(backbone: str) -> bool:
    """Whether `imagenet:<backbone>` would load (a timm name with ImageNet weights on this machine), read nothing."""
    import timm

    from .classify.weights import imagenet_available

    return timm.is_model(backbone) and imagenet_available(backbone)


def imagenet_weights_file(backbone: str) -> Path:
    """The local file of BACKBONE's ImageNet weights (the resolver of `pretrained: imagenet`: Hugging Face cache, then
    an installed weights package), so the up-front checks and the extractor fail alike and before any work."""
    import timm

    from .classify.imagenet import supported_backbones
    from .classify.weights import imagenet_file

    if not timm.is_model(backbone):
        raise RetinaugError(
            f"extractor imagenet:{backbone}: {backbone!r} is not a timm model name; use imagenet "
            f"(= imagenet:{IMAGENET_BACKBONE}) or imagenet:<timm name>; {supported_backbones()}"
        )
    try:
        return imagenet_file(backbone)
    except RetinaugError as exc:
        raise RetinaugError(f"extractor imagenet:{backbone} has no ImageNet weights on this machine ({exc})") from None


class LabelerExtractor(FeatureExtractor):
    """Penultimate-layer features of the trained labeler (`retinaug.classify.models.embed`)."""

    def __init__(self, model_dir: str | Path):
        from .classify.models import load_classifier

        self.clf = load_classifier(model_dir)
        self.name = f"labeler:{Path(model_dir).name}"

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        from .classify.models import embed

        if len(df) == 0:
            raise RetinaugError("no images to embed: the selected manifest rows are empty")
        return np.asarray(embed(self.clf, df), dtype=np.float32)


def _is_labeler_dir(path: Path) -> bool:
    return (path / "model.json").is_file() and (path / "model.safetensors").is_file()


def get_extractor(
    spec: str | Path | FeatureExtractor = "auto", labeler: str | Path | None = None, size: int | None = None
) -> FeatureExtractor:
    """Resolve an extractor spec ('auto', 'labeler', 'pixels', 'imagenet[:<backbone>]', a folder, or an instance)
    once, so a model is loaded a single time even when several manifests are embedded."""
    if isinstance(spec, FeatureExtractor):
        return spec
    spec = str(spec)
    if spec == "auto":
        spec = "labeler" if labeler else "pixels"
    if spec == "pixels":
        return PixelExtractor(size or PIXEL_SIZE)
    if (backbone := imagenet_backbone(spec)) is not None:
        return ImageNetExtractor(backbone)
    if spec == "labeler":
        if not labeler:
            raise RetinaugError(
                "extractor 'labeler' needs the trained labeler: pass --labeler RUN/labeler (or use --extractor pixels)"
            )
        if not _is_labeler_dir(Path(labeler)):
            raise RetinaugError(
                f"{labeler} is not a labeler folder (model.json + model.safetensors): run `retinaug train` first"
            )
        return LabelerExtractor(labeler)
    folder = Path(spec)
    if not folder.is_dir():
        raise RetinaugError(
            f"unknown feature extractor {spec!r}: use auto, labeler, pixels, imagenet[:<timm backbone>], or an existing model folder"
        )
    if _is_labeler_dir(folder):
        return LabelerExtractor(folder)
    config = folder / "config.json"
    model_type = load_json(config, "model config").get("model_type") if config.is_file() else None
    if model_type != "clip":
        raise RetinaugError(
            f"{folder} is neither a labeler folder (model.json + model.safetensors) nor a CLIP model folder "
            f"(config.json with model_type 'clip'; found {model_type!r})"
        )
    return CLIPExtractor(folder)


def extract_features(
    df: pd.DataFrame,
    extractor: str | Path | FeatureExtractor = "auto",
    labeler: str | Path | None = None,
    size: int | None = None,
) -> np.ndarray:
    """Features (N, D) float32 for the rows of `df`, in row order (traditional transforms applied)."""
    return get_extractor(extractor, labeler, size)(df)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Unit rows, so dot products are cosine similarities (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)
