"""Scenario experiments: scenarios (recipes and `compose`), the runner (scenario x seed tasks) and the results
(statistics over seeds and the tables).

    from retinaug.experiments import ExperimentConfig, run_experiments
    run_experiments("RUN/data", ExperimentConfig(sets=["controls"]), "RUN/experiments")
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".results": ("aggregate", "flatten_metrics", "headline_table", "seed_metrics", "summarize"),
    ".runner": ("run_experiments",),
    ".scenarios": (
        "SCENARIO_SETS",
        "ExperimentConfig",
        "Scenario",
        "accepted_synthetic",
        "asked_vs_labelled",
        "baseline_of",
        "check_sets",
        "compose",
        "real_splits",
    ),
}
lazy_exports(__name__, _EXPORTS)
__all__ = [
    "ExperimentConfig",
    "SCENARIO_SETS",
    "Scenario",
    "accepted_synthetic",
    "aggregate",
    "asked_vs_labelled",
    "baseline_of",
    "check_sets",
    "compose",
    "flatten_metrics",
    "headline_table",
    "real_splits",
    "run_experiments",
    "seed_metrics",
    "summarize",
]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .results import aggregate, flatten_metrics, headline_table, seed_metrics, summarize
    from .runner import run_experiments
    from .scenarios import (
        SCENARIO_SETS,
        ExperimentConfig,
        Scenario,
        accepted_synthetic,
        asked_vs_labelled,
        baseline_of,
        check_sets,
        compose,
        real_splits,
    )
