"""Scenario experiments: build each scenario's training set, train/evaluate per seed, aggregate over seeds.

A scenario is a task plus a recipe for its training set (real train rows, + accepted synthetic rows at a
multiplier of each class's real train count, + traditional augmentation rows at a multiplier, + the t-SNE
selected subset replacing the dominant classes, + an imbalance control). Validation and test sets are always
the real val/test patients of the task, identical for every scenario and seed, so scenarios are compared on
the same patients and paired over seeds.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .classes import CLASSES, resolve_task
from .classify import TrainConfig
from .errors import RetinaugError
from .io import sha256_file, sha256_text, write_json_atomic, write_text_atomic
from .manifest import load_manifest, manifest_file
from .progress import track
from .stages import result_settings

log = logging.getLogger("retinaug.experiment")

Imbalance = Literal["none", "class-weights", "oversample"]


class Scenario(BaseModel):
    """One training-set recipe; val/test are never touched by a recipe."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique scenario name; also its folder under RUN/experiments/.")
    label: str = Field("", description="Short display label (e.g. the paper's 'sc3').")
    description: str = Field("", description="One line shown in the report table.")
    task: str = Field("5-class", description="Task name (5-class, 7-class, 8-class) or comma-separated class codes.")
    synthetic: float = Field(0.0, ge=0, description="Accepted synthetic rows per class, as a multiple of that class's real train count.")
    synthetic_classes: list[str] | None = Field(
        None, description="Classes receiving synthetic rows (default: the task's classes, minus the selection classes)."
    )
    traditional: float = Field(0.0, ge=0, description="Traditional-augmentation rows per class, as a multiple of the real train count.")
    traditional_classes: list[str] | None = Field(None, description="Classes receiving traditional rows (default: as synthetic_classes).")
    selection: bool = Field(False, description="Replace the real train rows of `selection_classes` by the t-SNE-selected subset.")
    selection_classes: list[str] = Field(["D", "N"], description="Dominant classes reduced by the t-SNE selection.")
    imbalance: Imbalance | None = Field(None, description="Imbalance control for this scenario (default: the train config's).")
    baseline: str | None = Field(
        None, description="Scenario to pair against (default: the first real-only scenario of the same task)."
    )

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        codes = resolve_task(self.task)
        for field in ("synthetic_classes", "traditional_classes"):
            extra = sorted(set(getattr(self, field) or []) - set(codes))
            if extra:
                raise ValueError(f"{field} {extra} are not in task {self.task} ({','.join(codes)})")
        return self

    @property
    def classes(self) -> tuple[str, ...]:
        return resolve_task(self.task)

    @property
    def real_only(self) -> bool:
        return self.synthetic == 0 and self.traditional == 0 and not self.selection and self.imbalance in (None, "none")

    def added_classes(self, which: str) -> tuple[str, ...]:
        chosen = getattr(self, f"{which}_classes")
        if chosen is None and which == "traditional":
            chosen = self.synthetic_classes
        if chosen is not None:
            return tuple(c for c in self.classes if c in chosen)
        skip = set(self.selection_classes) if self.selection else set()
        return tuple(c for c in self.classes if c not in skip)


def _s(name: str, label: str, description: str, **kw) -> Scenario:
    return Scenario(name=name, label=label, description=description, **kw)


# The paper's grids. A scenario shared by two sets (e.g. 5-class real-only) has one name, so it is trained once.
SCENARIO_SETS: dict[str, list[Scenario]] = {
    "paper-5class-synthetic": [
        _s("5class-real", "sc1", "real images only"),
        *[
            _s(f"5class-syn-x{m:g}", f"sc{i}", f"real + {m:g}x synthetic per class", synthetic=m)
            for i, m in enumerate((0.5, 1, 1.5, 2, 4), start=2)
        ],
    ],
    "paper-5class-vs-traditional": [
        _s("5class-real", "real", "real images only"),
        _s("5class-syn-x1", "+1x syn", "real + 1x synthetic per class", synthetic=1),
        _s("5class-trad-x1", "+1x trad", "real + 1x traditional augmentation per class", traditional=1),
        _s("5class-syn-x2", "+2x syn", "real + 2x synthetic per class", synthetic=2),
        _s("5class-trad-x2", "+2x trad", "real + 2x traditional augmentation per class", traditional=2),
    ],
    "paper-7class": [
        _s("7class-real", "7c real", "real images only", task="7-class"),
        _s(
            "7class-syn-x1-tsne",
            "7c syn+tsne",
            "real + 1x synthetic for minority classes, t-SNE-selected D and N",
            task="7-class",
            synthetic=1,
            selection=True,
        ),
    ],
    "controls": [
        _s("5class-real", "real", "real images only"),
        _s("5class-real-oversample", "oversample", "real images, minority classes oversampled", imbalance="oversample"),
        _s("5class-real-class-weights", "class weights", "real images, class-weighted loss", imbalance="class-weights"),
    ],
}


class ExperimentConfig(BaseModel):
    """Which scenarios to run, how many seeds, and the classifier recipe shared by all of them."""

    model_config = ConfigDict(extra="forbid")

    sets: list[str] = Field(["paper-5class-synthetic"], description=f"Named scenario sets: {', '.join(SCENARIO_SETS)}.")
    scenarios: list[Scenario] = Field([], description="Extra custom scenarios (added after the named sets).")
    only: list[str] = Field([], description="If given, run only these scenario names (plus their baselines).")
    seeds: int | list[int] = Field(3, description="Number of seeds (0..n-1) or an explicit list of seeds.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Classifier training config for every scenario.")
    n_boot: int = Field(200, ge=0, description="Patient-bootstrap resamples for each seed's test metrics CI.")
    traditional_pool_seed: int = Field(0, description="Seed for traditional rows made on the fly (no augment stage output).")

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        unknown = [s for s in self.sets if s not in SCENARIO_SETS]
        if unknown:
            raise ValueError(f"unknown scenario set(s) {unknown}; known: {', '.join(SCENARIO_SETS)}")
        if not self.seed_list or len(set(self.seed_list)) != len(self.seed_list):
            raise ValueError(f"seeds: give a count >= 1 or a list of distinct seeds, got {self.seeds!r}")
        self.resolve()
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def resolve(self) -> list[Scenario]:
        """The scenarios in run order, de-duplicated by name (identical recipes required for equal names)."""
        out: dict[str, Scenario] = {}
        for sc in [s for name in self.sets for s in SCENARIO_SETS[name]] + list(self.scenarios):
            if sc.name in out:
                if _recipe(out[sc.name]) != _recipe(sc):
                    raise ValueError(f"two different scenarios are named {sc.name!r}; rename one")
                continue
            out[sc.name] = sc
        if self.only:
            missing = sorted(set(self.only) - set(out))
            if missing:
                raise ValueError(f"only: unknown scenario(s) {missing}; known: {', '.join(out)}")
            keep = set(self.only) | {b for n in self.only if (b := baseline_of(out[n], list(out.values())))}
            out = {k: v for k, v in out.items() if k in keep}
        return list(out.values())


def _recipe(sc: Scenario) -> dict:
    return sc.model_dump(exclude={"label", "description"})


def baseline_of(sc: Scenario, scenarios: Sequence[Scenario]) -> str | None:
    """The scenario `sc` is paired against: explicit `baseline`, else the first real-only one of its task."""
    if sc.baseline:
        return sc.baseline
    for other in scenarios:
        if other.real_only and other.classes == sc.classes:
            return other.name if other.name != sc.name else None
    return None


# ---------------------------------------------------------------- composition


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


_MAKES = {"synthetic": "generator, synthetic, labeler and label", "traditional": "augment"}


def _sample(pool: pd.DataFrame, n: int, seed: int, salt: str) -> pd.DataFrame:
    """The first `n` rows of a seeded permutation: deterministic, and nested (x1 is a subset of x2)."""
    if n <= 0 or pool.empty:
        return pool.iloc[:0]
    pool = pool.sort_values(["path"] + (["transform"] if "transform" in pool else [])).reset_index(drop=True)
    rng = np.random.default_rng([seed, int(sha256_text(salt)[:8], 16)])
    return pool.iloc[np.sort(rng.permutation(len(pool))[:n])]


def real_splits(data: pd.DataFrame, sc: Scenario) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Real train/val/test rows of the scenario's task."""
    real = data[(data["origin"] == "real") & data["label"].isin(sc.classes)]
    return tuple(real[real["split"] == s].reset_index(drop=True) for s in ("train", "val", "test"))  # type: ignore[return-value]


def compose(
    sc: Scenario,
    seed: int,
    data: pd.DataFrame,
    synthetic: pd.DataFrame | None = None,
    traditional: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
    warn: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build (train, val, test, counts) for one scenario and seed (`warn`: log shortfalls).

    `counts` has one row per class: real, selected (real rows kept after the t-SNE selection), synthetic and
    traditional requested/used/shortfall, and the train total. Multipliers use the class's real train count
    (before selection), rounded half up."""
    train_real, val, test = real_splits(data, sc)
    if val.empty or test.empty:
        raise RetinaugError(f"scenario {sc.name}: the data has no real val or test rows for task {sc.task}")
    parts = []
    rows = []
    syn_classes, trad_classes = sc.added_classes("synthetic"), sc.added_classes("traditional")
    for code in sc.classes:
        real_c = train_real[train_real["label"] == code]
        row = {"scenario": sc.name, "class": code, "real": len(real_c)}
        kept = real_c
        if sc.selection and code in sc.selection_classes:
            if selection is None:
                raise RetinaugError(f"scenario {sc.name} needs the t-SNE selection: switch the selection stage on "
                                     "(selection.enabled: true) or run `retinaug select`")
            sel = selection[(selection["label"] == code) & (selection["split"] == "train") & (selection["origin"] == "real")]
            if "selected" in sel.columns:
                sel = sel[sel["selected"].astype(bool)]
            kept = sel
        row["selected"] = len(kept)
        parts.append(kept)
        for kind, mult, chosen, pool_df in (
            ("synthetic", sc.synthetic, syn_classes, synthetic),
            ("traditional", sc.traditional, trad_classes, traditional),
        ):
            want = _half_up(mult * len(real_c)) if code in chosen else 0
            got = pool_df.iloc[:0] if pool_df is not None else None
            if want:
                if pool_df is None:
                    raise RetinaugError(f"scenario {sc.name} needs {kind} images: switch on the stages that make them "
                                         f"({_MAKES[kind]}) or drop the scenario")
                pool = pool_df[pool_df["label"] == code]
                got = _sample(pool, want, seed, f"{kind}:{code}")
                if len(got) < want and warn:
                    log.warning(
                        "scenario %s: class %s needs %d %s images but only %d are available; using %d (shortfall %d)",
                        sc.name, code, want, kind, len(pool), len(got), want - len(got),
                    )
                parts.append(got)
            row[f"{kind}_requested"] = want
            row[kind] = 0 if got is None else len(got)
            row[f"{kind}_shortfall"] = want - row[kind]
        row["train_total"] = row["selected"] + row["synthetic"] + row["traditional"]
        row["val"] = int((val["label"] == code).sum())
        row["test"] = int((test["label"] == code).sum())
        rows.append(row)
    train = pd.concat([p for p in parts if len(p)], ignore_index=True)
    check_sets(train, val, test)
    return train, val, test, pd.DataFrame(rows)


def check_sets(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> None:
    """Val and test must be real rows of their split only; train must not share a patient with them."""
    for name, df in (("val", val), ("test", test)):
        bad = df[(df["origin"] != "real") | (df["split"] != name)]
        assert bad.empty, f"{len(bad)} non-real or mis-split rows in {name}: {bad['path'].head(3).tolist()}"
    assert (train["split"] == "train").all(), "training rows outside the train split"
    shared = set(train["patient_id"]) & (set(val["patient_id"]) | set(test["patient_id"]))
    assert not shared, f"patients in both train and val/test: {sorted(shared)[:5]}"


def accepted_synthetic(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """Only synthetic rows the labeler accepted may enter a training set."""
    if df is None:
        return None
    if "accepted" not in df.columns:
        raise RetinaugError("the synthetic manifest has no 'accepted' column: run the label stage (`retinaug label`) first")
    return df[(df["origin"] == "synthetic") & df["accepted"].fillna(False).astype(bool)].reset_index(drop=True)


def asked_vs_labelled(accepted: pd.DataFrame) -> pd.DataFrame:
    """Accepted synthetic images counted by the class asked of the generator (rows) and the class they train as
    (columns): under the relabel policy an image asked to be G may enter the training sets as C."""
    asked = accepted["intended_label"] if "intended_label" in accepted.columns else accepted["label"]
    table = pd.crosstab(asked.astype(str).rename("asked"), accepted["label"].astype(str).rename("labelled"))
    return table.reindex(index=[c for c in CLASSES if c in table.index], columns=[c for c in CLASSES if c in table.columns])


# ---------------------------------------------------------------- running


def _optional_manifest(path: Path | None) -> pd.DataFrame | None:
    return load_manifest(path) if path is not None and manifest_file(path).is_file() else None


def _traditional_pool(cfg: ExperimentConfig, scenarios: list[Scenario], data: pd.DataFrame, run: Path) -> pd.DataFrame | None:
    """Traditional rows from the augment stage, or made once on the fly (into experiments/_traditional)."""
    from .augment import augment

    wanted = [s for s in scenarios if s.traditional > 0]
    if not wanted:
        return None
    ratio = max(s.traditional for s in wanted)
    classes = tuple(dict.fromkeys(c for s in wanted for c in s.added_classes("traditional")))
    out = run / "experiments" / "_traditional"
    if manifest_file(out).is_file():
        pool = load_manifest(out)
    else:
        train = data[(data["split"] == "train") & (data["origin"] == "real")]
        pool = augment(train, ratio=ratio, classes=classes, seed=cfg.traditional_pool_seed, out=out)
    return pool[pool["origin"] == "traditional"].reset_index(drop=True)


def run_experiments(
    cfg: ExperimentConfig,
    run: str | Path,
    data: Path | None = None,
    synthetic: Path | None = None,
    traditional: Path | None = None,
    selection: Path | None = None,
    ignore: Collection[str] = (),
) -> pd.DataFrame:
    """Train and evaluate every scenario x seed (resumable), then aggregate. Returns the summary table.

    Inputs default to the run folder's stage outputs (data/, synthetic/, augment/, selection/); those named in
    `ignore` ('synthetic', 'selection', 'augment': stages switched off) are not read even if an older run left
    them there."""
    from .classify import evaluate, fit, load_classifier, warm_start

    run = Path(run)

    def optional(name: str, path: Path | None) -> pd.DataFrame | None:
        return None if name in ignore else _optional_manifest(path or run / name)

    data_df = load_manifest(data or run / "data")
    syn_df = accepted_synthetic(optional("synthetic", synthetic))
    sel_df = optional("selection", selection)
    scenarios = cfg.resolve()
    trad_df = optional("augment", traditional)
    if trad_df is not None:
        trad_df = trad_df[trad_df["origin"] == "traditional"].reset_index(drop=True)
    needed = max((s.traditional for s in scenarios), default=0)
    if trad_df is None or (needed and _pool_short(trad_df, scenarios, data_df)):
        trad_df = _traditional_pool(cfg, scenarios, data_df, run) if needed else trad_df
    root = run / "experiments"
    init = warm_start(cfg.train, data_df, root / "_init")  # init: all-classes is trained once, for every scenario and seed
    compositions = []
    jobs = [(sc, seed) for sc in scenarios for seed in cfg.seed_list]
    for sc, seed in track(jobs, "scenarios x seeds", unit="model"):
        first_seed = seed == cfg.seed_list[0]
        train, val, test, counts = compose(sc, seed, data_df, syn_df, trad_df, sel_df, warn=first_seed)
        if first_seed:
            compositions.append(counts)
        out = root / sc.name / f"seed{seed}"
        tcfg = cfg.train.model_copy(update={"task": sc.task, "seed": seed, **({"imbalance": sc.imbalance} if sc.imbalance else {})})
        rows = _row_hashes(train, test, run)
        recipe = {"scenario": _recipe(sc), "seed": seed, "train": tcfg.model_dump(mode="json"), "n_boot": cfg.n_boot, **rows,
                  **({"init_sha256": sha256_file(init)} if init else {})}
        key = _seed_key(recipe)
        done = out / "metrics.json"
        found = _read_json(out / "recipe.json")
        legacy = _seed_key({**recipe, **_row_hashes(train, test, None)})  # key of runs made before portable keys
        if done.is_file() and found.get("key") in (key, legacy):
            if found["key"] != key:  # upgrade in place, so the run folder can move from now on
                write_json_atomic(out / "recipe.json", {**found, **rows, "key": key})
            log.info("%s seed %d: finished earlier, skipped", sc.name, seed)
            continue
        if out.exists():
            shutil.rmtree(out)  # partial or stale: redo from scratch so the result equals an uninterrupted run
        out.mkdir(parents=True)
        write_json_atomic(out / "recipe.json", {"key": key, **recipe, "counts": counts.to_dict(orient="records")})
        log.info("%s seed %d: training on %d images (%s)", sc.name, seed, len(train), _origin_counts(train))
        fit(train, val, tcfg.model_copy(update={"init": init}) if init else tcfg, out)
        metrics = evaluate(load_classifier(out), test, out, n_boot=cfg.n_boot, seed=seed)
        if not done.is_file():
            write_json_atomic(done, metrics)
    composition = pd.concat(compositions, ignore_index=True)
    return aggregate(root, scenarios, cfg.seed_list, composition)


def _pool_short(pool: pd.DataFrame, scenarios: list[Scenario], data: pd.DataFrame) -> bool:
    """True when the augment stage's rows cannot cover the largest traditional multiplier asked for."""
    real = data[(data["split"] == "train") & (data["origin"] == "real")]
    for sc in scenarios:
        for code in sc.added_classes("traditional") if sc.traditional else ():
            if (pool["label"] == code).sum() < _half_up(sc.traditional * (real["label"] == code).sum()):
                return True
    return False


def _seed_key(recipe: dict) -> str:
    return sha256_text(json.dumps(result_settings(recipe), sort_keys=True))


def _row_hashes(train: pd.DataFrame, test: pd.DataFrame, run: Path | None) -> dict[str, str]:
    """Hashes of the exact training rows (image + transform) and test images. Images inside the run folder are
    named relative to it, so a moved or copied run keeps its finished seeds (run=None: absolute, as before)."""
    root = run.resolve() if run is not None else None

    def names(paths: pd.Series) -> pd.Series:
        if root is None:
            return paths.astype(str)
        return paths.map(lambda p: Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else str(p))

    return {"train_rows": sha256_text("\n".join(sorted(names(train["path"]) + "|" + _transforms(train)))),
            "test_rows": sha256_text("\n".join(sorted(names(test["path"]))))}


def _transforms(df: pd.DataFrame) -> pd.Series:
    return df["transform"].fillna("").astype(str) if "transform" in df.columns else pd.Series([""] * len(df), index=df.index)


def _origin_counts(df: pd.DataFrame) -> str:
    return ", ".join(f"{k} {v}" for k, v in df["origin"].value_counts().items())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- aggregation

HEADLINE = ("precision", "recall", "f1", "accuracy")


def flatten_metrics(metrics: dict, classes: Sequence[str]) -> dict[tuple[str, str], float]:
    """(metric, class or 'macro') -> value from one seed's metrics.json."""
    out: dict[tuple[str, str], float] = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = key.removeprefix("macro_")
            out[(name, "macro")] = float(value)
    per_class = metrics.get("per_class") or {}
    for code in classes:
        for name, value in (per_class.get(code) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(name, code)] = float(value)
    return out


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    sem = float(stats.sem(values))
    if sem == 0:
        return mean, mean, mean
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Mean difference a - b, its 95% t-interval, and the paired t-test p-value."""
    from scipy import stats

    diff = a - b
    mean, lo, hi = _mean_ci(diff)
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return mean, lo, hi, float("nan") if len(diff) < 2 else (1.0 if diff[0] == 0 else 0.0)
    return mean, lo, hi, float(stats.ttest_rel(a, b).pvalue)


def seed_metrics(root: Path, scenarios: list[Scenario], seeds: list[int]) -> dict[str, dict[int, dict[tuple[str, str], float]]]:
    """scenario -> seed -> flattened metrics, for the seed runs that have finished (metrics.json written)."""
    per_seed: dict[str, dict[int, dict[tuple[str, str], float]]] = {}
    for sc in scenarios:
        for seed in seeds:
            m = _read_json(root / sc.name / f"seed{seed}" / "metrics.json")
            if m:
                per_seed.setdefault(sc.name, {})[seed] = flatten_metrics(m, sc.classes)
    return per_seed


def summarize(root: Path, scenarios: list[Scenario], seeds: list[int]) -> pd.DataFrame:
    """Mean, 95% t-interval over seeds and paired difference vs the baseline, per scenario, metric and class,
    from the finished seed runs under `root` (a partly finished grid gives a partial table)."""
    per_seed = seed_metrics(root, scenarios, seeds)
    rows = []
    for sc in scenarios:
        runs = per_seed.get(sc.name, {})
        base = baseline_of(sc, scenarios)
        base_runs = per_seed.get(base or "", {})
        keys = sorted({k for r in runs.values() for k in r})
        for metric, cls in keys:
            vals = np.array([runs[s][(metric, cls)] for s in sorted(runs) if (metric, cls) in runs[s]])
            mean, lo, hi = _mean_ci(vals)
            row = dict(scenario=sc.name, label=sc.label, task=sc.task, metric=metric, cls=cls, n_seeds=len(vals),
                       mean=mean, ci_low=lo, ci_high=hi, baseline=base or "")
            paired = [s for s in sorted(runs) if s in base_runs and (metric, cls) in runs[s] and (metric, cls) in base_runs[s]]
            if base and paired:
                a = np.array([runs[s][(metric, cls)] for s in paired])
                b = np.array([base_runs[s][(metric, cls)] for s in paired])
                row.update(zip(("diff_mean", "diff_ci_low", "diff_ci_high", "p_value"), _paired(a, b)))
            rows.append(row)
    return pd.DataFrame(rows, columns=["scenario", "label", "task", "metric", "cls", "n_seeds", "mean", "ci_low",
                                       "ci_high", "baseline", "diff_mean", "diff_ci_low", "diff_ci_high", "p_value"])


def aggregate(root: Path, scenarios: list[Scenario], seeds: list[int], composition: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write summary.csv (see `summarize`), table.md/.csv (the paper's shape) and composition.csv. Returns the summary."""
    summary = summarize(root, scenarios, seeds)
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / "summary.csv", summary.to_csv(index=False))
    table = headline_table(summary, scenarios, composition)
    write_text_atomic(root / "table.csv", table.to_csv(index=False))
    write_text_atomic(root / "table.md", _markdown(table))
    if composition is not None:
        write_text_atomic(root / "composition.csv", composition.to_csv(index=False))
    return summary


def headline_table(summary: pd.DataFrame, scenarios: list[Scenario], composition: pd.DataFrame | None) -> pd.DataFrame:
    """One row per scenario: macro precision, recall, F1 and accuracy as 'mean [lo, hi]', F1 change vs baseline."""
    rows = []
    for sc in scenarios:
        s = summary[(summary["scenario"] == sc.name) & (summary["cls"] == "macro")].set_index("metric")
        if s.empty:
            continue
        row = {"scenario": sc.name, "label": sc.label, "task": sc.task, "seeds": int(s["n_seeds"].max())}
        if composition is not None:
            c = composition[composition["scenario"] == sc.name]
            row["train images"] = int(c["train_total"].sum())
        for metric in HEADLINE:
            row[metric] = _fmt(s, metric)
        if "f1" in s.index and isinstance(s.loc["f1", "diff_mean"], float) and not math.isnan(s.loc["f1", "diff_mean"]):
            d = s.loc["f1"]
            row["ΔF1 vs real"] = f"{d['diff_mean']:+.3f} (p={d['p_value']:.2g})"
        else:
            row["ΔF1 vs real"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(s: pd.DataFrame, metric: str) -> str:
    if metric not in s.index:
        return ""
    r = s.loc[metric]
    if math.isnan(r["ci_low"]):
        return f"{r['mean']:.3f}"
    # the metrics live in [0, 1]; the t-interval of few seeds can overshoot (summary.csv keeps it unclipped)
    return f"{r['mean']:.3f} [{max(r['ci_low'], 0):.3f}, {min(r['ci_high'], 1):.3f}]"


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no finished scenarios)\n"
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
