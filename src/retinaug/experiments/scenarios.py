"""Scenarios: recipes for a training set (real train rows, + accepted synthetic rows at a multiplier of each
class's real train count, + traditional augmentation rows at a multiplier, + the t-SNE selected subset replacing
the dominant classes, + an imbalance control), the paper's named grids, and `compose`, which builds one
scenario's training set. Validation and test sets are always the real val/test patients of the task, identical
for every scenario and seed, so scenarios are compared on the same patients and paired over seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator, model_validator

from ..classes import CLASSES, ClassCodes, Task, resolve_task
from ..classify import TrainConfig
from ..errors import LeakageError, RetinaugError
from ..fields import MAX_BOOT, MAX_MULTIPLIER, SEED_MAX, STRICT
from ..io import sha256_text
from ..manifest import half_up, real_rows

log = logging.getLogger("retinaug.experiments")

Imbalance = Literal["none", "class-weights", "oversample"]
MAX_SEEDS = 10_000  # seeds per scenario: each is a fit


class Scenario(BaseModel):
    """One training-set recipe; val/test are never touched by a recipe."""

    model_config = STRICT

    name: str = Field(description="Unique scenario name; also its folder under RUN/experiments/.")
    label: str = Field("", description="Short display label (e.g. the paper's 'sc3').")
    description: str = Field("", description="One line shown in the report table.")
    task: Task = Field("5-class", description="Task name (5-class, 7-class, 8-class) or comma-separated class codes.")
    synthetic: float = Field(0.0, ge=0, le=MAX_MULTIPLIER, description="Accepted synthetic rows per class, as a multiple of that class's real train count.")
    synthetic_classes: ClassCodes | None = Field(
        None, description="Classes receiving synthetic rows (default: the task's classes, minus the selection classes)."
    )
    traditional: float = Field(0.0, ge=0, le=MAX_MULTIPLIER, description="Traditional-augmentation rows per class, as a multiple of the real train count.")
    traditional_classes: ClassCodes | None = Field(None, description="Classes receiving traditional rows (default: as synthetic_classes).")
    selection: bool = Field(False, description="Replace the real train rows of `selection_classes` by the t-SNE-selected subset.")
    selection_classes: ClassCodes = Field(["D", "N"], description="Dominant classes reduced by the t-SNE selection.")
    imbalance: Imbalance | None = Field(None, description="Imbalance control for this scenario (default: the train config's).")
    baseline: str | None = Field(
        None, description="Scenario to pair against (default: the first real-only scenario of the same task)."
    )

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        for field in ("synthetic_classes", "traditional_classes"):
            extra = sorted(set(getattr(self, field) or []) - set(self.classes))
            if extra:
                raise ValueError(f"{field} {extra} are not in task {self.task} ({','.join(self.classes)})")
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

    def recipe(self) -> dict:
        """What decides the training set and fit (not the display label or description)."""
        return self.model_dump(exclude={"label", "description"})


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
    # Not in the paper: what synthetic images add to flips and rotations (syn + trad is paired against trad alone).
    "synthetic-on-traditional": [
        _s("5class-real", "real", "real images only"),
        _s("5class-trad-x1", "+1x trad", "real + 1x traditional augmentation per class", traditional=1),
        _s("5class-syn-x1-trad-x1", "+1x syn +1x trad", "real + 1x synthetic + 1x traditional per class, vs +1x trad",
           synthetic=1, traditional=1, baseline="5class-trad-x1"),
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


class RayConfig(BaseModel):
    """How `executor: ray` runs the fits: where Ray is, and the resources and retries of each fit's task."""

    model_config = STRICT

    address: str | None = Field(
        None, description="Ray cluster address (e.g. ray://head:10001 or head:6379); None: $RAY_ADDRESS if set, else an "
        "embedded Ray instance of `workers` x `num_cpus` CPUs started for this run and stopped after it."
    )
    num_cpus: float = Field(1, gt=0, description="CPUs per fit; also the fit's torch threads (at least 1).")
    num_gpus: float = Field(0, ge=0, description="GPUs per fit; a fraction shares a GPU between small fits (0.25: four per GPU); 0 trains on the CPU.")
    max_retries: int = Field(2, ge=0, description="Retries of a fit that raised or whose worker died, before it is reported as failed.")


class ExperimentConfig(BaseModel):
    """Which scenarios to run, how many seeds, the classifier recipe shared by all of them, and how the fits run."""

    model_config = STRICT

    sets: list[str] = Field(["paper-5class-synthetic"], description=f"Named scenario sets: {', '.join(SCENARIO_SETS)}.")
    scenarios: list[Scenario] = Field([], description="Extra custom scenarios (added after the named sets).")
    only: list[str] = Field([], description="If given, run only these scenario names (plus their baselines).")
    seeds: int | list[int] = Field(3, description="Number of seeds (0..n-1) or an explicit list of seeds.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Classifier training config for every scenario.")
    n_boot: int = Field(200, ge=0, le=MAX_BOOT, description="Patient-bootstrap resamples for each seed's test metrics CI.")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: one fit after another in this process; ray: every (scenario, seed) fit is a Ray task, "
        "in parallel on this machine or a Ray cluster (pip install \"retinaug[ray]\"; docs/scaling.md). Same results."
    )
    workers: int | None = Field(
        None, ge=1, description="ray: fits at once on the embedded Ray instance (default: the usable cores / ray.num_cpus); "
        "a cluster's own resources decide there. local: 1 (or unset)."
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="executor ray: cluster address, resources and retries per fit.")

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if self.executor == "local" and (self.workers or 1) > 1:
            raise ValueError(f"workers: {self.workers} fits at once need executor: ray (local runs one fit after another)")
        if self.executor == "local" and self.ray != RayConfig():
            raise ValueError("ray: set, but read only when executor is ray (set executor: ray, or drop the ray settings)")
        if self.workers and self.ray.address:
            raise ValueError("workers: sizes the embedded Ray instance only; on a Ray cluster (ray.address) its resources "
                             "decide how many fits run at once: leave workers unset")
        unknown = [s for s in self.sets if s not in SCENARIO_SETS]
        if unknown:
            raise ValueError(f"unknown scenario set(s) {unknown}; known: {', '.join(SCENARIO_SETS)}")
        if not self.seed_list or len(set(self.seed_list)) != len(self.seed_list):
            raise ValueError(f"seeds: give a count >= 1 or a list of distinct seeds, got {self.seeds!r}")
        self.resolve()
        return self

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        """At most MAX_SEEDS (checked before `seed_list` builds the list), each a seed numpy accepts."""
        count = v if isinstance(v, int) else len(v)
        if count > MAX_SEEDS:
            raise ValueError(f"must be at most {MAX_SEEDS} (seeds are fits, one after another)")
        if isinstance(v, list) and (bad := [s for s in v if not 0 <= s <= SEED_MAX]):
            raise ValueError(f"a seed must lie in 0..{SEED_MAX}, not {bad[0]}")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def resolve(self) -> list[Scenario]:
        """The scenarios in run order, de-duplicated by name (identical recipes required for equal names)."""
        out: dict[str, Scenario] = {}
        for sc in [s for name in self.sets for s in SCENARIO_SETS[name]] + list(self.scenarios):
            if sc.name in out:
                if out[sc.name].recipe() != sc.recipe():
                    raise ValueError(f"two different scenarios are named {sc.name!r}; rename one")
                continue
            out[sc.name] = sc
        unknown = {sc.name: sc.baseline for sc in out.values() if sc.baseline and sc.baseline not in out}
        if unknown:
            raise ValueError(f"baseline: {unknown} (scenario: baseline) name no scenario of this run; known: {', '.join(out)}")
        if self.only:
            missing = sorted(set(self.only) - set(out))
            if missing:
                raise ValueError(f"only: unknown scenario(s) {missing}; known: {', '.join(out)}")
            every, keep, todo = list(out.values()), set(), list(self.only)
            while todo:  # a kept scenario's baseline is kept, and its baseline's (syn+trad -> trad -> real)
                name = todo.pop()
                if name not in keep:
                    keep.add(name)
                    todo += [b] if (b := baseline_of(out[name], every)) else []
            out = {k: v for k, v in out.items() if k in keep}
        return list(out.values())


def baseline_of(sc: Scenario, scenarios: Sequence[Scenario]) -> str | None:
    """The scenario `sc` is paired against: explicit `baseline`, else the first real-only one of its task."""
    if sc.baseline:
        return sc.baseline
    for other in scenarios:
        if other.real_only and other.classes == sc.classes:
            return other.name if other.name != sc.name else None
    return None


# ---------------------------------------------------------------- composition

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
    return tuple(real_rows(data, s, sc.classes).reset_index(drop=True) for s in ("train", "val", "test"))  # type: ignore[return-value]


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
            sel = real_rows(selection, "train", [code])
            if "selected" in sel.columns:
                sel = sel[sel["selected"].astype(bool)]
            kept = sel
        row["selected"] = len(kept)
        parts.append(kept)
        for kind, mult, chosen, pool_df in (
            ("synthetic", sc.synthetic, syn_classes, synthetic),
            ("traditional", sc.traditional, trad_classes, traditional),
        ):
            want = half_up(mult * len(real_c)) if code in chosen else 0
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
    """Val and test must be real rows of their split only; train must not share a patient with them.
    A real error, not an assert: `python -O` must not turn the leakage guard off."""
    for name, df in (("val", val), ("test", test)):
        bad = df[(df["origin"] != "real") | (df["split"] != name)]
        if len(bad):
            raise LeakageError(f"{len(bad)} non-real or mis-split rows in {name}: {bad['path'].head(3).tolist()}")
    outside = train[train["split"] != "train"]
    if len(outside):
        raise LeakageError(f"{len(outside)} training rows outside the train split: {outside['path'].head(3).tolist()}")
    shared = set(train["patient_id"]) & (set(val["patient_id"]) | set(test["patient_id"]))
    if shared:
        raise LeakageError(f"patients in both train and val/test: {sorted(shared)[:5]}")


def accepted_synthetic(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """Only synthetic rows the labeler accepted may enter a training set."""
    if df is None:
        return None
    if "accepted" not in df.columns:
        raise RetinaugError("the synthetic manifest has no 'accepted' column: give the label stage's output "
                            "(RUN/label, written by `retinaug label`), not the raw synthetic manifest")
    return df[(df["origin"] == "synthetic") & df["accepted"].fillna(False).astype(bool)].reset_index(drop=True)


def asked_vs_labelled(accepted: pd.DataFrame) -> pd.DataFrame:
    """Accepted synthetic images counted by the class asked of the generator (rows) and the class they train as
    (columns): under the relabel policy an image asked to be G may enter the training sets as C."""
    asked = accepted["intended_label"] if "intended_label" in accepted.columns else accepted["label"]
    table = pd.crosstab(asked.astype(str).rename("asked"), accepted["label"].astype(str).rename("labelled"))
    return table.reindex(index=[c for c in CLASSES if c in table.index], columns=[c for c in CLASSES if c in table.columns])
