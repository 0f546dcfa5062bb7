"""Config of the synthetic-data audit (nested by the pipeline's YAML as `quality`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..classify.config import TrainConfig
from ..fields import EXTRACTOR_HELP, MAX_BOOT, OVERLAP_THRESHOLD, PIXEL_SIZE, STRICT, RowSplit, Seed


class AuditConfig(BaseModel):
    """Settings of `retinaug audit`."""

    model_config = STRICT

    extractor: str = Field("auto", description=EXTRACTOR_HELP)
    pixel_size: int = Field(PIXEL_SIZE, ge=4, le=1024, description="image side (px) of the pixels extractor")
    quantile: float = Field(
        0.99,
        gt=0,
        lt=1,
        description="memorization threshold = this quantile of real test-vs-train NN cosine, per class",
    )
    min_test: int = Field(
        10,
        ge=1,
        description="a class with fewer real test images uses the pooled test distribution of all audited classes "
        "(the quantile of a handful of values is just their maximum: an unstable threshold)",
    )
    knn_k: int = Field(
        3, ge=1, description="k of the k-NN manifolds for precision/recall (Kynkäänniemi et al. 2019 use 3)"
    )
    kid_subset_size: int = Field(
        100, ge=2, description="KID subset size (lowered to the smaller set's size when needed)"
    )
    kid_subsets: int = Field(20, ge=1, le=10_000, description="number of KID subsets averaged")
    top_k: int = Field(5, ge=1, description="neighbours per synthetic image written to match.csv")
    ssim_size: int = Field(
        64, ge=11, le=1024, description="image side (px) at which SSIM of the matched pairs is computed"
    )
    accepted_only: bool = Field(
        False,
        description="audit only synthetic rows the labeler accepted (default: everything generated); class fidelity and CAS always use every row",
    )
    class_fidelity: bool = Field(
        True,
        description="class fidelity: share of synthetic images the labeler assigns to the asked class / its recall on real test images (needs the labeler)",
    )
    cas: bool = Field(
        True,
        description="CAS: train the classifier recipe on synthetic images only and on real train images, score both on real test (two fits)",
    )
    cas_n_boot: int = Field(
        200, ge=0, le=MAX_BOOT, description="patient-bootstrap resamples for the CAS test-metric intervals"
    )
    seed: Seed = Field(0, description="seed of the KID subset sampling and of the sample grid")
    cas_recipe: TrainConfig | None = Field(
        None, description="CAS classifier recipe (TrainConfig fields); none: `retinaug train`'s defaults (recipe auto)"
    )


class MatchConfig(BaseModel):
    """Settings of `retinaug match`."""

    model_config = STRICT

    top_k: int = Field(10, ge=1, description="Neighbours per query image.")
    extractor: str = Field("auto", description=EXTRACTOR_HELP)
    ssim_size: int = Field(
        64, ge=11, le=1024, description="Image side (px) at which SSIM of the top pairs is computed."
    )
    query_split: RowSplit = Field("all", description="Rows of the query manifest: train, val, test or all.")
    reference_split: RowSplit = Field("all", description="Rows of the reference manifest: train, val, test or all.")


class OverlapConfig(BaseModel):
    """Settings of `retinaug check-overlap`."""

    model_config = STRICT

    threshold: float = Field(
        OVERLAP_THRESHOLD,
        gt=0,
        le=1,
        description="Grey-level SSIM (at ssim_size px) from which two images are near-copies.",
    )
    top_k: int = Field(3, ge=1, description="Candidates per image (by feature cosine) whose SSIM is computed.")
    extractor: Literal["pixels", "labeler", "imagenet"] | str = Field(
        "pixels",
        description="Features of the candidate search: pixels (finds resized copies), labeler, imagenet[:<timm backbone>], or a local CLIP or labeler folder.",
    )
    ssim_size: int = Field(64, ge=11, le=1024, description="Image side (px) at which SSIM is computed.")
    split_a: RowSplit = Field("all", description="Rows of A: train, val, test or all.")
    split_b: RowSplit = Field("all", description="Rows of B (manifests only): train, val, test or all.")
