"""Config of the t-SNE selection (nested by the pipeline's YAML as `selection`); light, so the CLI reads it at start."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ..classes import ClassCodes
from ..fields import EXTRACTOR_HELP, PIXEL_SIZE, STRICT, Seed


class SelectConfig(BaseModel):
    """Settings of `retinaug select` (t-SNE reduction of the dominant classes, train split only)."""

    model_config = STRICT

    classes: ClassCodes = Field(["D", "N"], description="dominant classes to reduce")
    keep: float = Field(
        0.5, gt=0, description="per class: a fraction of its train images when <= 1 (0.5 = half), else a count (200)"
    )
    strategy: Literal["coverage", "core", "random"] = Field(
        "coverage",
        description="coverage: k-means on the t-SNE map, keep the image nearest each centroid; core: drop images whose "
        "map neighbours are mostly other classes; random: uniform sample (the control)",
    )
    extractor: str = Field("auto", description=EXTRACTOR_HELP)
    pixel_size: int = Field(PIXEL_SIZE, ge=4, le=1024, description="image side (px) of the pixels extractor")
    context_classes: ClassCodes | None = Field(
        None,
        description="classes whose train images join the map and are the neighbours for `core` (default: every class in the train split)",
    )
    perplexity: float = Field(30.0, gt=0, description="t-SNE perplexity (lowered for small sets)")
    pca_dims: int = Field(50, ge=2, description="PCA components before t-SNE")
    neighbours: int = Field(10, ge=1, description="core: neighbours looked at per image")
    seed: Seed = Field(0, description="seed of PCA/t-SNE/k-means/random sampling")
    threads: int = Field(
        1,
        description="OpenMP/BLAS threads for t-SNE and k-means (-1: all). 1 is the fast choice on a busy or small CPU: "
        "OpenMP spin-waiting made a 600-image t-SNE 10x slower with 2 threads on 2 shared cores",
    )

    @field_validator("keep")
    @classmethod
    def _count_is_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("keep > 1 is a count of images and must be a whole number (or use a fraction <= 1)")
        return v
