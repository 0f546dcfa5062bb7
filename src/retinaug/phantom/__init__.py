"""The embedded phantom dataset: procedural colour fundus photographs with class findings.

Why: the whole pipeline (and most tests) must run on a CPU with no download. `make_phantom` renders
deterministic images for the eight ODIR classes in ODIR's proportions, two eyes per patient, and hands
them to the ingest stage's `finish_prepare` (patient-level split, manifest, summary) like any dataset.
Its settings are a `PhantomConfig` (`phantom/config.py`, light: the CLI reads it at start); the names below load
on first use, so reading the config does not load numpy, pandas or PIL.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".config": ("MIN_SIZE", "PhantomConfig"),
    ".dataset": ("MIN_PATIENTS", "ODIR_COUNTS", "make_phantom", "parse_proportions", "phantom_counts", "plan_phantom"),
    ".render": ("render_fundus",),
}
lazy_exports(__name__, _EXPORTS)
__all__ = [
    "MIN_PATIENTS",
    "MIN_SIZE",
    "ODIR_COUNTS",
    "PhantomConfig",
    "make_phantom",
    "parse_proportions",
    "phantom_counts",
    "plan_phantom",
    "render_fundus",
]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import MIN_SIZE, PhantomConfig
    from .dataset import MIN_PATIENTS, ODIR_COUNTS, make_phantom, parse_proportions, phantom_counts, plan_phantom
    from .render import render_fundus
