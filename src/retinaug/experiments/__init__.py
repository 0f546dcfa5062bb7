"""Scenario experiments: scenarios (recipes and `compose`), the runner (scenario x seed tasks) and the results
(statistics over seeds and the tables).

    from retinaug.experiments import ExperimentConfig, run_experiments
    run_experiments(ExperimentConfig(sets=["controls"]), data_df, "RUN/experiments")
"""

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

__all__ = [
    "SCENARIO_SETS",
    "ExperimentConfig",
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
