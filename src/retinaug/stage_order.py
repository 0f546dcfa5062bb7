"""The pipeline's stage names in run order, and the records a run folder holds of them: what the report reads of
a run. Kept apart from pipeline.py, whose report stage imports the report; its table (`STAGES`) declares the
stages in this order (tests/test_pipeline.py holds the two equal)."""

from __future__ import annotations

from pathlib import Path

from .folds import fold_count, fold_name
from .stages import read_record


def stage_names() -> tuple[str, ...]:
    return (
        "data",
        "generator",
        "synthetic",
        "labeler",
        "label",
        "selection",
        "augment",
        "experiments",
        "quality",
        "report",
    )


def stage_records(run: str | Path) -> list[tuple[str, dict]]:
    """(stage, its stage.json) for the stages that have a record, in pipeline order (a k-fold run's fold stages
    as fold-<i>/<stage>, after the ingest)."""
    run = Path(run)
    folders = [(name, run / name) for name in stage_names()]
    if (k := fold_count(run)) > 1:
        folds = [(f"{fold_name(i)}/{name}", run / fold_name(i) / name) for i in range(k) for name in stage_names()]
        folders = folders[:1] + folds + folders[1:]
    return [(label, rec) for label, folder in folders if (rec := read_record(folder))]
