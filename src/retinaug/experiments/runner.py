"""The runner: every (scenario, seed) is a self-contained task (compose -> fit -> evaluate -> metrics.json),
resumable, then the results are aggregated.

A seed folder is kept only while its key is unchanged: the hash of the scenario recipe, the seed, the train
config and the *content* of the exact training and test images (sha256 of each file, with its transform and
label). Images regenerated under the same file names therefore retrain the seeds that use them, a selection
change retrains only the scenarios that use the selection, and a moved run folder keeps every seed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from ..fingerprint import Digests
from ..io import read_json, sha256_text, write_json_atomic
from ..progress import track
from ..stages import result_settings
from .results import aggregate
from .scenarios import ExperimentConfig, accepted_synthetic, compose

log = logging.getLogger("retinaug.experiments")
DIGESTS = ".digests.json"


def run_experiments(
    cfg: ExperimentConfig,
    data: pd.DataFrame,
    out: str | Path,
    synthetic: pd.DataFrame | None = None,
    traditional: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Train and evaluate every scenario x seed into `out` (resumable), then aggregate; returns the summary table.

    `data` is the data manifest; `synthetic` the label stage's manifest (its accepted rows are used);
    `traditional` the augment stage's rows; `selection` the selection stage's rows. A scenario that needs an
    input given as None stops with an error naming the stage that makes it; a pool too small for a multiplier
    is used as it is, and the shortfall is logged and written to composition.csv."""
    from ..classify import evaluate, fit, load_classifier, warm_start

    out = Path(out)
    syn_df = accepted_synthetic(synthetic)
    trad_df = None if traditional is None else traditional[traditional["origin"] == "traditional"].reset_index(drop=True)
    scenarios = cfg.resolve()
    digests = Digests(out / DIGESTS)
    init = warm_start(cfg.train, data, out / "_init")  # init: all-classes is trained once, for every scenario and seed
    compositions = []
    jobs = [(sc, seed) for sc in scenarios for seed in cfg.seed_list]
    for sc, seed in track(jobs, "scenarios x seeds", unit="model"):
        first_seed = seed == cfg.seed_list[0]
        train, val, test, counts = compose(sc, seed, data, syn_df, trad_df, selection, warn=first_seed)
        if first_seed:
            compositions.append(counts)
        folder = out / sc.name / f"seed{seed}"
        tcfg = cfg.train.model_copy(update={"task": sc.task, "seed": seed, **({"imbalance": sc.imbalance} if sc.imbalance else {})})
        recipe = {"scenario": sc.recipe(), "seed": seed, "train": tcfg.model_dump(mode="json"), "n_boot": cfg.n_boot,
                  "train_rows": rows_hash(train, digests), "test_rows": rows_hash(test, digests),
                  **({"init_sha256": digests(init)} if init else {})}
        key = sha256_text(json.dumps(result_settings(recipe), sort_keys=True))
        done = folder / "metrics.json"
        if done.is_file() and (read_json(folder / "recipe.json") or {}).get("key") == key:
            log.info("%s seed %d: finished earlier, skipped", sc.name, seed)
            continue
        if folder.exists():
            shutil.rmtree(folder)  # partial or stale: redo from scratch so the result equals an uninterrupted run
        folder.mkdir(parents=True)
        write_json_atomic(folder / "recipe.json", {"key": key, **recipe, "counts": counts.to_dict(orient="records")})
        log.info("%s seed %d: training on %d images (%s)", sc.name, seed, len(train), _origin_counts(train))
        fit(train, val, tcfg.model_copy(update={"init": init}) if init else tcfg, folder)
        evaluate(load_classifier(folder), test, folder, n_boot=cfg.n_boot, seed=seed)  # writes metrics.json last
    digests.save()
    return aggregate(out, scenarios, cfg.seed_list, pd.concat(compositions, ignore_index=True))


def rows_hash(df: pd.DataFrame, digests: Digests) -> str:
    """Hash of a set of rows by what a model sees: each image's content, its load-time transform and its label."""
    transforms = df["transform"].fillna("").astype(str) if "transform" in df.columns else [""] * len(df)
    lines = (f"{digests(p)}|{t}|{lab}" for p, t, lab in zip(df["path"], transforms, df["label"]))
    return sha256_text("\n".join(sorted(lines)))


def _origin_counts(df: pd.DataFrame) -> str:
    return ", ".join(f"{k} {v}" for k, v in df["origin"].value_counts().items())
