"""What `retinaug export` writes; light, so the CLI reads it at start."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..fields import STRICT


class ExportConfig(BaseModel):
    """What `export` writes."""

    model_config = STRICT

    what: Literal["synthetic", "real", "both"] = Field(
        "synthetic", description="synthetic images (train split), the real images of every split, or both."
    )
    accepted_only: bool = Field(False, description="Only the synthetic images the labeler accepted.")
    copy_images: bool = Field(
        False, description="Copy every image (default: hard-link when the export is on the same file system)."
    )
