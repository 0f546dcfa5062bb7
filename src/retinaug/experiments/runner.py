"""The runner: every (scenario, seed) is a self-contained fit (compose -> fit -> evaluate -> metrics.json),
resumable, run by an executor (`local`: one after another in this process; `ray`: as Ray tasks, see
ray_executor.py), then the results are aggregated.

The driver plans every fit (composes its training set and its key) and removes stale or partial fit folders;
both executors then call the same `run_fit` (fit.py), so a fit writes the same files wherever it runs. Scenarios with
`allocation: need` share their synthetic rows by the validation recall of their real-only reference fit of the
same seed, so they are planned and run in a second pass, once the first pass's fits have finished.

A fit folder is kept only while its key is unchanged: the hash of the scenario recipe, the seed, the train
config and the *content* of the exact training and test images (sha256 of each file, with its transform and
label; with soft labels, also each synthetic row's soft target). Images regenerated under the same file names
therefore retrain the seeds that use them, a selection change retrains only the scenarios that use the selection,
and a moved run folder keeps every seed.

With an external test set (`data.external`, see external.py) each fit is also scored on it into FIT/external/, kept
while its own key is unchanged: the fit's key and the external rows' content and patients. Another external set
therefore re-scores the finished fits without retraining them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from ..classify import load_classifier, warm_start
from ..classify.data import rows_hash
from ..classify.label import soft_targets
from ..classify.models import WEIGHTS
from ..classify.train import VAL_RECALL
from ..errors import RetinaugError
from ..fingerprint import Digests
from ..io import read_json, sha256_text
from ..logs import log_to
from ..manifest import manifest_rows, real_rows
from ..progress import track
from ..stages import result_settings
from .external import EXTERNAL, drop_copies, external_problems, load_external
from .fit import FIT_LOG, Fit, run_fit, score_external
from .ray_executor import run_on_ray
from .results import aggregate, aggregate_external
from .scenarios import ExperimentConfig, Scenario, accepted_synthetic, compose, real_reference

log = logging.getLogger("retinaug.experiments")
# the training/test images' digests; not the stage's own .digests.json (its outputs): two owners of one cache file
# each kept only their own entries on save, so every re-run re-hashed every image
INPUT_DIGESTS = ".input-digests.json"


def run_experiments(
    data: str | Path | pd.DataFrame,
    cfg: ExperimentConfig,
    out: str | Path,
    synthetic: str | Path | pd.DataFrame | None = None,
    traditional: str | Path | pd.DataFrame | None = None,
    selection: str | Path | pd.DataFrame | None = None,
    external: str | Path | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Train and evaluate every scenario x seed into `out` (resumable), then aggregate; returns the summary table.

    Each input is a manifest folder or its rows: `data` the prepared dataset; `synthetic` the label stage's manifest
    (its accepted rows are used); `traditional` the augment stage's rows; `selection` the selection stage's rows;
    `external` an external test set (a folder is read by `external.load_external`) every fit is also scored on, once
    its near-copies of the train/val images are dropped, aggregated into out/external/. A scenario that needs an
    input given as None stops with an error naming the stage that makes it; a pool too small for a multiplier
    is used as it is, and the shortfall is logged and written to composition.csv. With `executor: ray`, fits that
    still fail after their retries are reported (their folder's error.txt) once the others have finished, and the
    call then raises a RetinaugError naming them."""
    out = Path(out)
    data, synthetic, traditional, selection = map(manifest_rows, (data, synthetic, traditional, selection))
    if external is not None and not isinstance(external, pd.DataFrame):
        external = load_external(external)
    scenarios = cfg.resolve()
    digests = Digests(out / INPUT_DIGESTS)
    if external is not None:
        external = external_rows(external, data, scenarios, out / EXTERNAL, digests)
    elif (out / EXTERNAL).exists():  # the tables of an external set no longer configured would be shown as current
        shutil.rmtree(out / EXTERNAL)
    fits, compositions = plan_fits(
        cfg, data, out, synthetic, traditional, selection, external=external, digests=digests
    )
    execute(fits, cfg)
    if any(sc.allocation == "need" for sc in scenarios):
        need_fits, more = plan_fits(
            cfg, data, out, synthetic, traditional, selection, first_pass=fits, external=external, digests=digests
        )
        execute(need_fits, cfg)
        order = {sc.name: i for i, sc in enumerate(scenarios)}
        compositions = sorted(compositions + more, key=lambda c: order[c["scenario"].iloc[0]])
    if external is not None:
        aggregate_external(out, scenarios, cfg.seed_list, set(external["label"]))
    return aggregate(out, scenarios, cfg.seed_list, pd.concat(compositions, ignore_index=True))


def external_rows(
    external: pd.DataFrame, data: pd.DataFrame, scenarios: list[Scenario], out: Path, digests: Digests
) -> pd.DataFrame:
    """The external set less the patients with a near-copy among the run's real train and val images (once per run,
    before any fit; reused while both sets are unchanged, see `drop_copies`), checked against every scenario's task
    before and after."""
    problems = external_problems(set(external["label"]), scenarios)
    if not problems:
        seen = pd.concat([real_rows(data, "train"), real_rows(data, "val")], ignore_index=True)
        external = drop_copies(
            external, seen, out, sha256_text(external_hash(external, digests) + rows_hash(seen, digests))
        )
        problems = external_problems(set(external["label"]), scenarios, "the external set less its near-copies")
    if problems:
        raise RetinaugError("the external set cannot score the scenarios:\n  - " + "\n  - ".join(problems))
    return external


def execute(fits: list[Fit], cfg: ExperimentConfig) -> None:
    """Run the fits that have not finished, from an emptied folder, on the configured executor; a finished fit not
    yet scored on the current external set is scored here, in this process, without retraining."""
    todo, rescore = [], []
    for f in fits:
        if f.finished():
            if f.scored_externally():
                log.info("%s: finished earlier, skipped", f.name)
                continue
            if (f.folder / WEIGHTS).is_file():
                rescore.append(f)
                continue
            log.warning("%s: its weights are gone, so it is retrained to be scored on the external set", f.name)
        elif (f.folder / "metrics.json").is_file():
            log.warning("%s: %s: the fit is redone", f.name, f.why_stale())
        if f.folder.exists():
            shutil.rmtree(f.folder)  # partial or stale: redo from scratch so the result equals an uninterrupted run
        todo.append(f)
    if cfg.executor == "ray" and todo:
        run_on_ray(todo, cfg)
    else:
        for f in track(todo, "fits (scenario x seed)", unit="fit"):
            run_fit(f)
    for f in track(rescore, "finished fits scored on the external set", unit="fit"):
        with log_to(f.folder / FIT_LOG):
            log.info("%s: finished earlier; scored on the external set", f.name)
            score_external(f, load_classifier(f.folder))


def plan_fits(
    cfg: ExperimentConfig,
    data: pd.DataFrame,
    out: Path,
    synthetic: pd.DataFrame | None = None,
    traditional: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
    first_pass: list[Fit] | None = None,
    external: pd.DataFrame | None = None,
    digests: Digests | None = None,
) -> tuple[list[Fit], list[pd.DataFrame]]:
    """Every scenario x seed fit in run order, with its training set and key, and each scenario's composition.

    Without `first_pass`, the fits of every scenario but those with `allocation: need`; with it (the fits that
    call planned, now finished), those of the need scenarios, each reading its real-only reference fit's
    validation recall (`validation_recall`). `external`: the external rows every fit is also scored on.
    `digests`: the image digests of the caller (one owner of the cache file: see INPUT_DIGESTS)."""
    syn_df = accepted_synthetic(synthetic)
    trad_df = (
        None if traditional is None else traditional[traditional["origin"] == "traditional"].reset_index(drop=True)
    )
    digests = Digests(out / INPUT_DIGESTS) if digests is None else digests
    external_rows_hash = external_hash(external, digests) if external is not None else None
    init = warm_start(cfg.train, data, out / "_init")  # init: all-classes is trained once, for every scenario and seed
    fits, compositions = [], []
    scenarios = cfg.resolve()
    finished = {f.name: f for f in first_pass or []}
    for sc in [sc for sc in scenarios if (sc.allocation == "need") == (first_pass is not None)]:
        for seed in cfg.seed_list:
            first_seed = seed == cfg.seed_list[0]
            reference = finished[f"{real_reference(sc, scenarios)}/seed{seed}"] if first_pass is not None else None
            recall = validation_recall(reference) if reference else None
            train, val, test, counts = compose(
                sc, seed, data, syn_df, trad_df, selection, warn=first_seed, recall=recall
            )
            if first_seed:
                compositions.append(counts)
            tcfg = cfg.train.model_copy(
                update={"task": sc.task, "seed": seed, **({"imbalance": sc.imbalance} if sc.imbalance else {})}
            )
            recipe = {
                "scenario": sc.recipe(),
                "seed": seed,
                "train": tcfg.model_dump(mode="json"),
                "n_boot": cfg.n_boot,
                "train_rows": rows_hash(train, digests),
                "test_rows": rows_hash(test, digests),
                **({"init_sha256": digests(init)} if init else {}),
                **({"soft_targets": soft_targets_hash(train, sc, digests)} if sc.soft_labels else {}),
            }
            key = sha256_text(json.dumps(result_settings(recipe), sort_keys=True))
            name = f"{sc.name}/seed{seed}"
            external_key = sha256_text(f"{key}|{external_rows_hash}") if external is not None else None
            fits.append(
                Fit(
                    name,
                    sc,
                    out / name,
                    seed,
                    train,
                    val,
                    test,
                    tcfg.model_copy(update={"init": init}) if init else tcfg,
                    cfg.n_boot,
                    {"key": key, **recipe, "counts": counts.to_dict(orient="records")},
                    external,
                    external_key,
                )
            )
    digests.save()
    return fits, compositions


def validation_recall(fit: Fit) -> dict[str, float]:
    """Per class, the recall on the validation rows at the best epoch of a finished fit (its model.json history): what
    `allocation: need` shares by. The test split is never read: choosing by test recall would tune on the test set."""
    if not fit.finished():
        raise RetinaugError(
            f"{fit.name} has not finished: allocation need reads its validation recall (run the experiments "
            "again; its scenario is run before the need scenarios)"
        )
    meta = read_json(fit.folder / "model.json") or {}
    best = next((r for r in meta.get("history") or [] if r.get("epoch") == meta.get("best_epoch")), {})
    recall = {k.removeprefix(VAL_RECALL): v for k, v in best.items() if k.startswith(VAL_RECALL)}
    if not recall:
        raise RetinaugError(
            f"{fit.folder / 'model.json'} records no per-class validation recall (an earlier retinaug trained "
            f"it), which allocation need shares by: delete {fit.folder} to retrain it, and run again"
        )
    return recall


def external_hash(df: pd.DataFrame, digests: Digests) -> str:
    """Hash of external rows by their images, labels and patients: the patients decide which rows a near-copy drops
    and how the bootstrap resamples."""
    return sha256_text(rows_hash(df, digests) + rows_hash(df, digests, "patient_id"))


def soft_targets_hash(train: pd.DataFrame, sc: Scenario, digests: Digests) -> str:
    """Hash of the soft targets a soft_labels fit trains its synthetic rows on (a relabelled pool can keep every
    image and label and still change them); refuses a pool without them before any fit starts."""
    synthetic = train[train["origin"] == "synthetic"]
    targets = [json.dumps(t) for t in soft_targets(synthetic, sc.classes).tolist()]
    return rows_hash(synthetic.assign(soft_target=targets), digests, "soft_target")
