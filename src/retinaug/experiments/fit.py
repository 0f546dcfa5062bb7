"""One fit (a scenario x seed) as the runner plans it, and `run_fit`, the task body every executor runs: the local
loop (runner.py) and the Ray tasks (ray_executor.py) import it from here, so a fit writes the same files wherever
it runs and neither executor imports the other."""

from __future__ import annotations

import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import faults
from ..classify import Classifier, EvaluateConfig, TrainConfig, evaluate, load_classifier
from ..classify import fit as train_model
from ..classify.models import WEIGHTS
from ..io import read_json, write_json_atomic
from ..logs import log_to
from ..stages import result_settings
from .external import EXTERNAL
from .results import valid_metrics
from .scenarios import Scenario

log = logging.getLogger("retinaug.experiments")
FIT_LOG = "fit.log"  # each attempt's log lines, appended (kept when a retried attempt clears the folder)
PRETRAIN = "pretrain"  # synthetic_use pretrain: the pretrain phase's classifier, inside the fit's folder


@dataclass(eq=False)
class Fit:
    """One fit, planned by the driver: everything a process needs to train and evaluate it into `folder`."""

    name: str  # 'scenario/seed<k>', its folder under the experiments folder
    scenario: Scenario  # how the synthetic rows train (synthetic_use and the rest)
    folder: Path
    seed: int
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    config: TrainConfig
    n_boot: int
    recipe: dict  # written to recipe.json; recipe["key"] decides whether a finished fit is kept
    external: pd.DataFrame | None = None  # the external set's rows it is also scored on (None: no external set)
    external_key: str | None = None  # decides whether its finished external scores are kept

    def finished(self) -> bool:
        """Its recipe is unchanged and its metrics.json is whole (a damaged one is redone, never dropped)."""
        return _current(self.folder, self.recipe["key"])

    def why_stale(self) -> str:
        """Why a fit whose folder holds a metrics.json is not `finished`: a damaged metrics.json, or what changed in
        its recipe since it was trained (a new label policy changes 'its training rows')."""
        if not valid_metrics(read_json(self.folder / "metrics.json")):
            return "its metrics.json is damaged (not the metrics evaluate writes)"
        old = read_json(self.folder / "recipe.json") or {}
        changed = [
            what
            for part, what in _RECIPE_PARTS.items()
            if result_settings(old.get(part)) != result_settings(self.recipe.get(part))
        ]
        return f"{' and '.join(changed) or 'its recipe'} changed since it was trained"

    def scored_externally(self) -> bool:
        """No external set, or its scores there are whole and were made for this fit and these external rows."""
        return self.external is None or _current(self.folder / EXTERNAL, self.external_key)


# the parts of a fit's recipe, as `why_stale` names them
_RECIPE_PARTS = {
    "scenario": "its scenario",
    "seed": "its seed",
    "train": "the train config",
    "n_boot": "n_boot",
    "train_rows": "its training rows",
    "test_rows": "its test rows",
    "init_sha256": "the warm start",
    "soft_targets": "its soft targets",
}


def _current(folder: Path, key: str | None) -> bool:
    """The folder's metrics.json is what evaluate writes and its recipe.json holds `key`."""
    return (
        valid_metrics(read_json(folder / "metrics.json"))
        and (read_json(folder / "recipe.json") or {}).get("key") == key
    )


def run_fit(fit: Fit) -> None:
    """Train and evaluate one fit into its folder (recipe.json first, metrics.json last): the one task body of
    every executor. Whatever an earlier attempt left there is removed first, except its log lines (fit.log)."""
    if fit.folder.is_dir():
        for p in fit.folder.iterdir():
            if p.name != FIT_LOG:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    fit.folder.mkdir(parents=True, exist_ok=True)
    with log_to(fit.folder / FIT_LOG):
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")  # set per task by Ray (experiments.ray.num_gpus) or by the user
        log.info(
            "%s: started on %s, pid %d, %d thread(s), %s",
            fit.name,
            platform.node(),
            os.getpid(),
            torch.get_num_threads(),
            "no CUDA_VISIBLE_DEVICES" if gpus is None else f"CUDA_VISIBLE_DEVICES={gpus}",
        )
        write_json_atomic(fit.folder / "recipe.json", fit.recipe)
        log.info("%s: training on %d images (%s)", fit.name, len(fit.train), _origin_counts(fit.train))
        if fit.scenario.synthetic_use == "pretrain":
            pretrain_then_finetune(fit)
        else:
            train_model(fit.train, fit.val, fit.config, fit.folder, use=fit.scenario.row_use())
        clf = load_classifier(fit.folder)
        evaluate(
            clf, fit.test, EvaluateConfig(split="all", n_boot=fit.n_boot, seed=fit.seed), fit.folder
        )  # writes metrics.json last
        # after it: a fit killed in between is finished, and only scored on the external set again
        if fit.external is not None:
            score_external(fit, clf)
    faults.reached("fit")


def score_external(fit: Fit, clf: Classifier) -> None:
    """Score the fit's classifier on the external rows into FIT/external/ (recipe.json first, metrics.json last, as a
    fit): `evaluate` leaves out the rows of classes outside the fit's task and counts them (`excluded`); its macro
    scores average the task's classes the external set has."""
    folder = fit.folder / EXTERNAL
    if folder.exists():
        shutil.rmtree(folder)
    write_json_atomic(folder / "recipe.json", {"key": fit.external_key, "fit_key": fit.recipe["key"]})
    log.info("%s: scoring on the external set (%d images)", fit.name, len(fit.external))
    evaluate(clf, fit.external, EvaluateConfig(split="all", n_boot=fit.n_boot, seed=fit.seed), folder)


def pretrain_then_finetune(fit: Fit) -> None:
    """synthetic_use pretrain: train on the synthetic rows (and the real ones with pretrain_with_real) into
    FOLDER/pretrain, then fine-tune those weights, head included, on the real rows alone into FOLDER (finetune_epochs,
    finetune_lr); both phases select their epoch on the real val rows. A fit killed in either phase is partial and
    redone whole, like any other (its pretrain phase too)."""
    sc, origin = fit.scenario, fit.train["origin"]
    first = fit.train[origin.isin(["synthetic", "real"] if sc.pretrain_with_real else ["synthetic"])]
    log.info("%s: pretrain phase on %d images (%s)", fit.name, len(first), _origin_counts(first))
    train_model(first, fit.val, fit.config, fit.folder / PRETRAIN, use=sc.row_use())
    tune = fit.config.model_copy(
        update={"epochs": sc.finetune_epochs or fit.config.epochs, "lr": sc.finetune_lr or fit.config.lr}
    )
    log.info("%s: fine-tune phase on the %d real images", fit.name, int((origin == "real").sum()))
    train_model(fit.train[origin == "real"], fit.val, tune, fit.folder, start=fit.folder / PRETRAIN / WEIGHTS)


def _origin_counts(df: pd.DataFrame) -> str:
    return ", ".join(f"{k} {v}" for k, v in df["origin"].value_counts().items())
