"""Dataset ingestion: turn a dataset as downloaded into RUN/data (manifest, rejected.csv, summary.json)."""

from .finish import finish_prepare
from .folder import prepare_folder
from .odir import prepare_odir

__all__ = ["finish_prepare", "prepare_folder", "prepare_odir"]
