"""A run's images as a Hugging Face `imagefolder` dataset with a dataset card: `export_run(run, ExportConfig(...), out)`
(see imagefolder.py)."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {".config": ("ExportConfig",), ".imagefolder": ("export_run",)}
lazy_exports(__name__, _EXPORTS)
__all__ = ["ExportConfig", "export_run"]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import ExportConfig
    from .imagefolder import export_run
