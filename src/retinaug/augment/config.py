"""Config of traditional augmentation (nested by the pipeline's YAML as `augment`); light, so the CLI reads it at
start. The 7 non-identity symmetries of a square are the only distinct copies of an image, hence MAX_RATIO."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..classes import ClassCodes
from ..fields import MAX_MULTIPLIER, STRICT, Seed

SEED_TRANSFORMS = ("hflip", "vflip", "rot90")  # what the seed used, tried first
MORE_TRANSFORMS = ("rot180", "rot270", "hflip+rot90", "hflip+rot270")  # the rest of the square's symmetries
MAX_RATIO = len(SEED_TRANSFORMS) + len(MORE_TRANSFORMS)


class AugmentConfig(BaseModel):
    """How many flipped/rotated copies of which classes' real train images (`augment`)."""

    model_config = STRICT

    ratio: float = Field(
        1.0,
        gt=0,
        le=MAX_MULTIPLIER,
        description=f"Rows per class as a multiple of its real train count (0.5, 1, 2; at most {MAX_RATIO}: an image has {MAX_RATIO} distinct flips/rotations).",
    )
    classes: ClassCodes | None = Field(
        None, description="Classes to augment (codes or a task name; default: the 5-class task's classes present)."
    )
    seed: Seed = Field(0, description="Seed choosing which images get which flip/rotation.")
    write_files: bool = Field(
        False, description="Also write the copies as PNGs (default: rows only, transformed when loaded)."
    )
