"""t-SNE reduction of the dominant classes (the seed's step 4): `select(data, SelectConfig(...), out, labeler)`."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {".config": ("SelectConfig",), ".tsne": ("keep_count", "select", "tsne_map")}
lazy_exports(__name__, _EXPORTS)
__all__ = ["SelectConfig", "keep_count", "select", "tsne_map"]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import SelectConfig
    from .tsne import keep_count, select, tsne_map
