"""Config models of the quality engineer's stages (nested by the pipeline's YAML as `selection` and `quality`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..classes import CODES
from ..features import PIXEL_SIZE


class SelectConfig(BaseModel):
    """Settings of `retinaug select` (t-SNE reduction of the dominant classes, train split only)."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] = Field(["D", "N"], description="dominant classes to reduce")
    keep: float = Field(0.5, gt=0, description="per class: a fraction of its train images when <= 1 (0.5 = half), else a count (200)")
    strategy: Literal["coverage", "core", "random"] = Field(
        "coverage",
        description="coverage: k-means on the t-SNE map, keep the image nearest each centroid; core: drop images whose "
        "map neighbours are mostly other classes; random: uniform sample (the control)",
    )
    extractor: str = Field("auto", description="feature space: auto (labeler if given, else pixels), labeler, pixels, or a model folder")
    pixel_size: int = Field(PIXEL_SIZE, ge=4, description="image side (px) of the pixels extractor")
    context_classes: list[str] | None = Field(
        None, description="classes whose train images join the map and are the neighbours for `core` (default: every class in the train split)"
    )
    perplexity: float = Field(30.0, gt=0, description="t-SNE perplexity (lowered for small sets)")
    pca_dims: int = Field(50, ge=2, description="PCA components before t-SNE")
    neighbours: int = Field(10, ge=1, description="core: neighbours looked at per image")
    seed: int = Field(0, description="seed of PCA/t-SNE/k-means/random sampling")
    threads: int = Field(
        1, description="OpenMP/BLAS threads for t-SNE and k-means (-1: all). 1 is the fast choice on a busy or small CPU: "
        "OpenMP spin-waiting made a 600-image t-SNE 10x slower with 2 threads on 2 shared cores"
    )

    @field_validator("keep")
    @classmethod
    def _count_is_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("keep > 1 is a count of images and must be a whole number (or use a fraction <= 1)")
        return v

    @field_validator("classes", "context_classes")
    @classmethod
    def _known_codes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        v = [c.strip().upper() for c in v]
        unknown = [c for c in v if c not in CODES]
        if unknown:
            raise ValueError(f"unknown class code(s) {unknown}; valid: {','.join(CODES)}")
        return v


class AuditConfig(BaseModel):
    """Settings of `retinaug audit`."""

    model_config = ConfigDict(extra="forbid")

    extractor: str = Field("auto", description="feature space: auto (labeler if given, else pixels), labeler, pixels, or a model folder")
    pixel_size: int = Field(PIXEL_SIZE, ge=4, description="image side (px) of the pixels extractor")
    quantile: float = Field(0.99, gt=0, lt=1, description="memorization threshold = this quantile of real test-vs-train NN cosine, per class")
    min_test: int = Field(
        10, ge=1, description="a class with fewer real test images uses the pooled test distribution of all audited classes "
        "(the quantile of a handful of values is just their maximum: an unstable threshold)"
    )
    knn_k: int = Field(3, ge=1, description="k of the k-NN manifolds for precision/recall (Kynkäänniemi et al. 2019 use 3)")
    kid_subset_size: int = Field(100, ge=2, description="KID subset size (lowered to the smaller set's size when needed)")
    kid_subsets: int = Field(20, ge=1, description="number of KID subsets averaged")
    top_k: int = Field(5, ge=1, description="neighbours per synthetic image written to match.csv")
    ssim_size: int = Field(64, ge=11, description="image side (px) at which SSIM of the matched pairs is computed")
    accepted_only: bool = Field(False, description="audit only synthetic rows the labeler accepted (default: everything generated)")
    seed: int = Field(0, description="seed of the KID subset sampling")
