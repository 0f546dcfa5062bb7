"""Dataset ingestion: turn a dataset as downloaded into RUN/data (manifest, rejected.csv, summary.json)."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".config": ("FolderConfig", "OdirConfig", "SplitConfig"),
    ".finish": ("finish_prepare",),
    ".folder": ("prepare_folder",),
    ".odir": ("prepare_odir",),
}
lazy_exports(__name__, _EXPORTS)
__all__ = ["FolderConfig", "OdirConfig", "SplitConfig", "finish_prepare", "prepare_folder", "prepare_odir"]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import FolderConfig, OdirConfig, SplitConfig
    from .finish import finish_prepare
    from .folder import prepare_folder
    from .odir import prepare_odir
