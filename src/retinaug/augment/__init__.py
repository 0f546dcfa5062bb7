"""Traditional augmentation (the seed's baseline): flipped/rotated copies of real training images.

Copies are manifest rows (origin=traditional) that point at the parent's file and name a `transform`
applied when the image is loaded (`retinaug.cache.apply_transform`), so no pixels are duplicated on disk.
The 7 non-identity symmetries of a square (flips and quarter turns) are the only distinct copies, so an
image can have at most 7: a ratio above that is refused rather than silently repeated.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {".config": ("MAX_RATIO", "MORE_TRANSFORMS", "SEED_TRANSFORMS", "AugmentConfig"), ".rows": ("augment",)}
lazy_exports(__name__, _EXPORTS)
__all__ = ["MAX_RATIO", "MORE_TRANSFORMS", "SEED_TRANSFORMS", "AugmentConfig", "augment"]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import MAX_RATIO, MORE_TRANSFORMS, SEED_TRANSFORMS, AugmentConfig
    from .rows import augment
