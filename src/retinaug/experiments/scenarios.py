"""Scenarios: recipes for a training set (real train rows, or a nested patient-level subsample of them, + accepted
synthetic rows at a multiplier of each class's real train count, spread over the classes proportionally, to balance
them or by need, + traditional augmentation rows at a multiplier, + the t-SNE selected subset replacing the dominant
classes, + an imbalance control) and for how its synthetic rows train (mixed in, pretrained on, or replacing real
rows; loss weights; soft labels), the paper's named grids, and `compose`, which builds one scenario's training set.
Validation and test sets are always the real val/test patients of the task, identical for every scenario and seed,
so scenarios are compared on the same patients and paired over seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator, model_validator

from ..classes import CLASSES, ClassCodes, Task, resolve_task
from ..classify import RowUse, TrainConfig
from ..classify.config import Probability, RowWeight
from ..errors import LeakageError, RetinaugError
from ..fields import MAX_BOOT, MAX_MULTIPLIER, SEED_MAX, STRICT
from ..io import sha256_text
from ..manifest import accepted_mask, half_up, real_rows
from ..split import patient_groups, strata

log = logging.getLogger("retinaug.experiments")

Imbalance = Literal["none", "class-weights", "oversample"]
SyntheticUse = Literal["mix", "pretrain", "replace"]
Allocation = Literal["proportional", "balanced", "need"]
MAX_SEEDS = 10_000  # seeds per scenario: each is a fit
# seeds the order of the real_fraction subsample: fixed, never a fit seed, so every fit seed (and every scenario of a
# fraction) trains on the same patients; the data split seed already decides which patients are train patients
SUBSAMPLE_SEED = int(sha256_text("real_fraction")[:8], 16)


class Scenario(BaseModel):
    """One training-set recipe; val/test are never touched by a recipe."""

    model_config = STRICT

    name: str = Field(description="Unique scenario name; also its folder under RUN/experiments/.")
    label: str = Field("", description="Short display label (e.g. the paper's 'sc3').")
    description: str = Field("", description="One line shown in the report table.")
    task: Task = Field("5-class", description="Task name (5-class, 7-class, 8-class) or comma-separated class codes.")
    synthetic: float = Field(
        0.0,
        ge=0,
        le=MAX_MULTIPLIER,
        description="Accepted synthetic rows per class, as a multiple of that class's real train count.",
    )
    synthetic_classes: ClassCodes | None = Field(
        None, description="Classes receiving synthetic rows (default: the task's classes, minus the selection classes)."
    )
    traditional: float = Field(
        0.0,
        ge=0,
        le=MAX_MULTIPLIER,
        description="Traditional-augmentation rows per class, as a multiple of the real train count.",
    )
    traditional_classes: ClassCodes | None = Field(
        None, description="Classes receiving traditional rows (default: as synthetic_classes)."
    )
    selection: bool = Field(
        False, description="Replace the real train rows of `selection_classes` by the t-SNE-selected subset."
    )
    selection_classes: ClassCodes = Field(["D", "N"], description="Dominant classes reduced by the t-SNE selection.")
    imbalance: Imbalance | None = Field(
        None, description="Imbalance control for this scenario (default: the train config's)."
    )
    baseline: str | None = Field(
        None, description="Scenario to pair against (default: the first real-only scenario of the same task)."
    )
    synthetic_use: SyntheticUse = Field(
        "mix",
        description="How the synthetic rows train: mix (added to the real rows, each once per epoch), pretrain "
        "(first train on them, then fine-tune on the real rows alone), replace (each epoch, each real row is shown as one "
        "of its synthetic stand-ins with probability replace_probability: DA-Fusion).",
    )
    pretrain_with_real: bool = Field(
        False,
        description="pretrain: the pretrain phase trains on the real rows too (with synthetic 0: "
        "on the real rows alone, the control for what pretrain owes to training twice).",
    )
    finetune_epochs: int | None = Field(
        None, ge=1, description="pretrain: epochs of the fine-tune phase (default: the train config's)."
    )
    finetune_lr: float | None = Field(
        None, gt=0, description="pretrain: peak learning rate of the fine-tune phase (default: the train config's)."
    )
    replace_probability: Probability = Field(
        0.5, description="replace: probability that a real row is shown as one of its synthetic stand-ins in an epoch."
    )
    synthetic_weight: RowWeight = Field(
        1.0,
        description="Loss weight of a synthetic row relative to a real one (0: synthetic rows move no weight through the loss).",
    )
    traditional_weight: RowWeight = Field(
        1.0, description="Loss weight of a traditional-augmentation row relative to a real one."
    )
    soft_labels: bool = Field(
        False,
        description="Synthetic rows train on the labeler's class probabilities (renormalised over the task's "
        "classes) instead of their label; real rows keep one-hot targets with label smoothing.",
    )
    allocation: Allocation = Field(
        "proportional",
        description="How the synthetic rows are spread over the classes that get them; the total is always "
        "proportional's (the sum of synthetic x each class's real train count): proportional (each class synthetic x its "
        "own count), balanced (the rarest classes first, so each ends with equal real + synthetic counts; classes above that "
        "level get none), need (in proportion to 1 - the class's validation recall in the real-only fit of the same task, "
        "real_fraction and seed, which therefore runs first).",
    )
    real_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Train on this fraction of the real train patients: the first ceil(f x n) of each "
        "class stratum in a fixed seeded order (nested: 0.1 within 0.25 within 1; both eyes of a patient together; the same "
        "for every seed); multipliers count the kept rows, and synthetic or traditional rows made from a left-out patient's "
        "image are not used. Val and test are untouched.",
    )

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        for field in ("synthetic_classes", "traditional_classes"):
            extra = sorted(set(getattr(self, field) or []) - set(self.classes))
            if extra:
                raise ValueError(f"{field} {extra} are not in task {self.task} ({','.join(self.classes)})")
        if problem := self._use_problem():
            raise ValueError(problem)
        return self

    def _use_problem(self) -> str | None:
        """A use setting that would do nothing, or that the chosen use cannot honour (said rather than ignored)."""
        default = {name: info.default for name, info in Scenario.model_fields.items()}
        needs = {
            "synthetic_use": "synthetic",
            "soft_labels": "synthetic",
            "synthetic_weight": "synthetic",
            "traditional_weight": "traditional",
            "allocation": "synthetic",
        }
        if self.synthetic_use == "pretrain" and self.pretrain_with_real:
            needs.pop("synthetic_use")  # the schedule control: pretrain may run on the real rows alone
        for field, amount in needs.items():
            if getattr(self, field) != default[field] and not getattr(self, amount):
                return f"{field}: {getattr(self, field)} needs {amount} rows: set {amount} above 0"
        for field, use in (
            ("replace_probability", "replace"),
            ("pretrain_with_real", "pretrain"),
            ("finetune_epochs", "pretrain"),
            ("finetune_lr", "pretrain"),
        ):
            if getattr(self, field) != default[field] and self.synthetic_use != use:
                return f"{field} is read only with synthetic_use: {use} (this scenario's is {self.synthetic_use})"
        if self.real_fraction < 1 and self.selection:
            return (
                "real_fraction below 1 with selection: the t-SNE selection picks from every train patient, the left-out "
                "ones too: set selection to false, or real_fraction to 1"
            )
        if self.synthetic_use != "pretrain":
            return None
        if self.traditional:
            return (
                "synthetic_use: pretrain fine-tunes on the real rows alone, so traditional rows would go unused: "
                "set traditional to 0, or use synthetic_use: mix"
            )
        if not self.pretrain_with_real:
            if self.synthetic_weight != 1:
                return (
                    "synthetic_weight weighs synthetic rows against real ones: a pretrain phase on synthetic rows alone "
                    "has none (set pretrain_with_real: true, or drop synthetic_weight)"
                )
            if missing := [c for c in self.classes if c not in self.added_classes("synthetic")]:
                return (
                    f"synthetic_use: pretrain trains on synthetic rows alone first, and classes {missing} get none: "
                    "add them to synthetic_classes, or set pretrain_with_real: true"
                )
        return None

    @property
    def classes(self) -> tuple[str, ...]:
        return resolve_task(self.task)

    @property
    def real_only(self) -> bool:
        """Real rows trained the plain way: the default baseline (a two-phase pretrain on real rows alone is not one)."""
        return (
            self.synthetic == 0
            and self.traditional == 0
            and not self.selection
            and self.imbalance in (None, "none")
            and self.synthetic_use == "mix"
        )

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

    def row_use(self) -> RowUse:
        """How a fit of this scenario trains its synthetic and traditional rows (pretrain: in its pretrain phase)."""
        return RowUse(
            synthetic_weight=self.synthetic_weight,
            traditional_weight=self.traditional_weight,
            soft_labels=self.soft_labels,
            replace_probability=self.replace_probability if self.synthetic_use == "replace" else None,
        )


def _s(name: str, label: str, description: str, **kw) -> Scenario:
    return Scenario(name=name, label=label, description=description, **kw)


def _scarce(f: float) -> list[Scenario]:
    """Real, + 1x synthetic and + 1x traditional on the fraction `f` of the real train patients, the last two paired
    against real at `f` (at 1: the scenarios of paper-5class-vs-traditional, under their names)."""
    tag, pct, of = (
        ("", "", "") if f == 1 else (f"-{f:.0%}".replace("%", "pct"), f" {f:.0%}", f" of {f:.0%} of the train patients")
    )
    real = f"5class-real{tag}"
    scarce = {"real_fraction": f, "baseline": real if f < 1 else None}
    return [
        _s(real, f"real{pct}", f"real images{of}", real_fraction=f),
        _s(f"5class-syn-x1{tag}", f"+1x syn{pct}", f"real images{of} + 1x synthetic per class", synthetic=1, **scarce),
        _s(
            f"5class-trad-x1{tag}",
            f"+1x trad{pct}",
            f"real images{of} + 1x traditional augmentation per class",
            traditional=1,
            **scarce,
        ),
    ]


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
        _s(
            "5class-syn-x1-trad-x1",
            "+1x syn +1x trad",
            "real + 1x synthetic + 1x traditional per class, vs +1x trad",
            synthetic=1,
            traditional=1,
            baseline="5class-trad-x1",
        ),
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
    # Not in the paper: how the synthetic rows train, beside plain mixing (each paired against real-only).
    "synthetic-use": [
        _s("5class-real", "real", "real images only"),
        _s("5class-syn-x1", "+1x syn", "real + 1x synthetic per class", synthetic=1),
        _s(
            "5class-syn-x1-pretrain",
            "pretrain",
            "pretrain on 1x synthetic per class, fine-tune on the real images",
            synthetic=1,
            synthetic_use="pretrain",
        ),
        _s(
            "5class-real-pretrain",
            "real, twice",
            "pretrain's schedule without synthetic rows: train on the real images, "
            "then fine-tune that model on them again (what pretrain owes to its second training phase)",
            synthetic_use="pretrain",
            pretrain_with_real=True,
        ),
        _s(
            "5class-syn-x1-replace0.5",
            "replace 0.5",
            "each epoch, real images shown as a synthetic stand-in with p 0.5 (1x pool)",
            synthetic=1,
            synthetic_use="replace",
            replace_probability=0.5,
        ),
        _s(
            "5class-syn-x1-weight0.5",
            "+1x syn w0.5",
            "real + 1x synthetic per class, synthetic loss weight 0.5",
            synthetic=1,
            synthetic_weight=0.5,
        ),
        _s(
            "5class-syn-x1-soft",
            "+1x syn soft",
            "real + 1x synthetic per class, soft labels from the labeler",
            synthetic=1,
            soft_labels=True,
        ),
        _s(
            "5class-syn-x1-need",
            "+1x syn need",
            "real + as many synthetic rows as x1, shared by the real-only fit's "
            "validation misses (1 - recall) per class",
            synthetic=1,
            allocation="need",
        ),
        _s("5class-trad-x1", "+1x trad", "real + 1x traditional augmentation per class", traditional=1),
    ],
    # Not in the paper: what synthetic and traditional rows add as real patients get scarce (nested subsamples).
    "scarcity": [sc for f in (0.1, 0.25, 0.5, 1.0) for sc in _scarce(f)],
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
        None,
        description="Ray cluster address (e.g. ray://head:10001 or head:6379); None: $RAY_ADDRESS if set, else an "
        "embedded Ray instance of `workers` x `num_cpus` CPUs started for this run and stopped after it.",
    )
    num_cpus: float = Field(1, gt=0, description="CPUs per fit; also the fit's torch threads (at least 1).")
    num_gpus: float = Field(
        0,
        ge=0,
        description="GPUs per fit; a fraction shares a GPU between small fits (0.25: four per GPU); 0 trains on the CPU.",
    )
    max_retries: int = Field(
        2, ge=0, description="Retries of a fit that raised or whose worker died, before it is reported as failed."
    )


class ExperimentConfig(BaseModel):
    """Which scenarios to run, how many seeds, the classifier recipe shared by all of them, and how the fits run."""

    model_config = STRICT

    sets: list[str] = Field(["paper-5class-synthetic"], description=f"Named scenario sets: {', '.join(SCENARIO_SETS)}.")
    scenarios: list[Scenario] = Field([], description="Extra custom scenarios (added after the named sets).")
    only: list[str] = Field([], description="If given, run only these scenario names (plus their baselines).")
    seeds: int | list[int] = Field(3, description="Number of seeds (0..n-1) or an explicit list of seeds.")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="Classifier training config for every scenario."
    )
    n_boot: int = Field(
        200, ge=0, le=MAX_BOOT, description="Patient-bootstrap resamples for each seed's test metrics CI."
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="local: one fit after another in this process; ray: every (scenario, seed) fit is a Ray task, "
        'in parallel on this machine or a Ray cluster (pip install "retinaug[ray]"; docs/scaling.md). Same results.',
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="ray: fits at once on the embedded Ray instance (default: the usable cores / ray.num_cpus); "
        "a cluster's own resources decide there. local: 1 (or unset).",
    )
    ray: RayConfig = Field(
        default_factory=RayConfig, description="executor ray: cluster address, resources and retries per fit."
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if self.executor == "local" and (self.workers or 1) > 1:
            raise ValueError(
                f"workers: {self.workers} fits at once need executor: ray (local runs one fit after another)"
            )
        if self.executor == "local" and self.ray != RayConfig():
            raise ValueError(
                "ray: set, but read only when executor is ray (set executor: ray, or drop the ray settings)"
            )
        if self.workers and self.ray.address:
            raise ValueError(
                "workers: sizes the embedded Ray instance only; on a Ray cluster (ray.address) its resources "
                "decide how many fits run at once: leave workers unset"
            )
        unknown = [s for s in self.sets if s not in SCENARIO_SETS]
        if unknown:
            raise ValueError(f"unknown scenario set(s) {unknown}; known: {', '.join(SCENARIO_SETS)}")
        if not self.seed_list or len(set(self.seed_list)) != len(self.seed_list):
            raise ValueError(f"seeds: give a count >= 1 or a list of distinct seeds, got {self.seeds!r}")
        for sc in self.resolve():
            if problem := sc.row_use().problem(self.train):
                raise ValueError(f"scenario {sc.name}: {problem}")
            if sc.real_fraction < 1 and self.train.init == "all-classes":
                raise ValueError(
                    f"scenario {sc.name}: real_fraction {sc.real_fraction:g} with train.init: all-classes would start "
                    "every fit from a classifier trained on all the train patients, the left-out ones too: set "
                    "train.init to scratch (or a backbone's pretrained weights)"
                )
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
            raise ValueError(
                f"baseline: {unknown} (scenario: baseline) name no scenario of this run; known: {', '.join(out)}"
            )
        if orphans := [
            sc.name for sc in out.values() if sc.allocation == "need" and not real_reference(sc, list(out.values()))
        ]:
            raise ValueError(
                f"allocation: need shares the synthetic rows of {orphans} by the validation recall of the real-only "
                "scenario of the same task and real_fraction, and this run has none: add one (no synthetic, "
                "traditional, selection or imbalance)"
            )
        if self.only:
            missing = sorted(set(self.only) - set(out))
            if missing:
                raise ValueError(f"only: unknown scenario(s) {missing}; known: {', '.join(out)}")
            every, keep, todo = list(out.values()), set(), list(self.only)
            # a kept scenario's baseline (and need reference) is kept, and its baseline's (syn+trad -> trad -> real)
            while todo:
                name = todo.pop()
                if name not in keep:
                    keep.add(name)
                    todo += depends_on(out[name], every)
            out = {k: v for k, v in out.items() if k in keep}
        return list(out.values())


def baseline_of(sc: Scenario, scenarios: Sequence[Scenario]) -> str | None:
    """The scenario `sc` is paired against: explicit `baseline`, else its real-only reference."""
    return sc.baseline or real_reference(sc, scenarios)


def real_reference(sc: Scenario, scenarios: Sequence[Scenario]) -> str | None:
    """The first real-only scenario of `sc`'s task and real_fraction (None: there is none, or it is `sc`): its
    default baseline, and the fit whose validation recall `allocation: need` shares the synthetic rows by."""
    for other in scenarios:
        if other.real_only and other.classes == sc.classes and other.real_fraction == sc.real_fraction:
            return other.name if other.name != sc.name else None
    return None


def traditional_reference(sc: Scenario, scenarios: Sequence[Scenario]) -> str | None:
    """The traditional-only scenario `sc`'s synthetic rows are also compared with, when the run has one: the first with
    the same classes, real_fraction, selection and imbalance and as many traditional rows as `sc` has synthetic ones
    (+1x synthetic against +1x traditional: do synthetic images beat flips and rotations?). None for scenarios
    without synthetic rows, with traditional rows of their own, or already paired against it as their baseline."""
    if sc.synthetic == 0 or sc.traditional > 0:
        return None
    for other in scenarios:
        if other.synthetic == 0 and other.traditional == sc.synthetic and same_real_rows(other, sc):
            return other.name if other.name != baseline_of(sc, scenarios) else None
    return None


def same_real_rows(a: Scenario, b: Scenario) -> bool:
    """Whether two scenarios train on the same real rows the same way (classes, real fraction, t-SNE selection and
    imbalance control): what a comparison between them must hold equal."""
    return (
        a.classes == b.classes
        and a.real_fraction == b.real_fraction
        and a.selection == b.selection
        and a.imbalance == b.imbalance
    )


def schedule_control(sc: Scenario, scenarios: Sequence[Scenario]) -> str | None:
    """The scenario a `synthetic_use: pretrain` scenario is also compared with when the run has one: pretrain's two
    training phases on the real rows alone (synthetic 0, pretrain_with_real) with the same classes, real_fraction,
    selection, imbalance and fine-tune settings. A pretrain gain over real-only may be the second training phase's,
    not the synthetic images' (BENCHMARKS.md: 5 seeds on ODIR); this pairing tells them apart. None for other
    scenarios, or when that control is already `sc`'s baseline or traditional reference."""
    if sc.synthetic_use != "pretrain" or sc.synthetic == 0:
        return None
    paired = {baseline_of(sc, scenarios), traditional_reference(sc, scenarios)}
    for other in scenarios:
        if (
            other.synthetic == 0
            and other.synthetic_use == "pretrain"
            and same_real_rows(other, sc)
            and other.finetune_epochs == sc.finetune_epochs
            and other.finetune_lr == sc.finetune_lr
        ):
            return other.name if other.name not in paired else None
    return None


def depends_on(sc: Scenario, scenarios: Sequence[Scenario]) -> list[str]:
    """The scenarios `sc` needs in its run: its baseline, and for `allocation: need` its real-only reference."""
    names = [baseline_of(sc, scenarios)] + ([real_reference(sc, scenarios)] if sc.allocation == "need" else [])
    return list(dict.fromkeys(n for n in names if n))


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
    recall: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build (train, val, test, counts) for one scenario and seed (`warn`: log shortfalls and left-out rows;
    `recall`: per class, the validation recall of the real-only reference fit of this seed, for `allocation: need`).

    `counts` has one row per class: real, selected (real rows kept after the t-SNE selection), synthetic and
    traditional requested/used/shortfall, and the train total; with real_fraction below 1 also the synthetic and
    traditional rows left out because their parent image is a left-out patient's, and with allocation need the
    recall it shared by. Multipliers use the class's real train count (after the real_fraction subsample, before
    selection), rounded half up; see `allocate`."""
    train_real, val, test = real_splits(data, sc)
    if val.empty or test.empty:
        raise RetinaugError(f"scenario {sc.name}: the data has no real val or test rows for task {sc.task}")
    pools = {"synthetic": synthetic, "traditional": traditional}
    left_out: dict[str, pd.Series] = {}
    if sc.real_fraction < 1:
        train_real, pools, left_out = _subsample(sc, train_real, pools, warn)
    real = train_real["label"].value_counts().reindex(list(sc.classes), fill_value=0)
    asked = {kind: allocate(sc, kind, real, recall) for kind in pools}
    parts, rows = [], []
    for code in sc.classes:
        real_c = train_real[train_real["label"] == code]
        kept = _kept_real(sc, code, real_c, selection)
        row = {"scenario": sc.name, "class": code, "real": len(real_c), "selected": len(kept)}
        parts.append(kept)
        for kind, pool_df in pools.items():
            want = int(asked[kind][code])
            got = _added(sc, kind, code, pool_df, want, seed, warn)
            parts.append(got)
            row[f"{kind}_requested"] = want
            row[kind] = len(got)
            row[f"{kind}_shortfall"] = want - row[kind]
            if kind in left_out:
                row[f"{kind}_left_out"] = int(left_out[kind].get(code, 0))
        if sc.allocation == "need":
            row["real_val_recall"] = recall.get(code) if recall else None
        row["train_total"] = row["selected"] + row["synthetic"] + row["traditional"]
        row["val"] = int((val["label"] == code).sum())
        row["test"] = int((test["label"] == code).sum())
        rows.append(row)
    train = pd.concat([p for p in parts if len(p)], ignore_index=True)
    check_sets(train, val, test)
    return train, val, test, pd.DataFrame(rows)


def _subsample(
    sc: Scenario, train_real: pd.DataFrame, pools: dict[str, pd.DataFrame | None], warn: bool
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame | None], dict[str, pd.Series]]:
    """`real_fraction` of the train patients, and the pools less the rows made from the others' images (counted)."""
    subsample = real_subsample(train_real, sc.real_fraction)
    kept, left_out = {}, {}
    for kind, pool in pools.items():
        kept[kind], left_out[kind] = made_from(pool, subsample["path"])
    if warn:
        log.info(
            "scenario %s: real_fraction %g keeps %d of %d train patients (%d of %d images); left out: %d synthetic and "
            "%d traditional rows made from the others' images",
            sc.name,
            sc.real_fraction,
            subsample["patient_id"].nunique(),
            train_real["patient_id"].nunique(),
            len(subsample),
            len(train_real),
            *(int(left_out[k].sum()) for k in pools),
        )
    return subsample, kept, left_out


def _kept_real(sc: Scenario, code: str, real_c: pd.DataFrame, selection: pd.DataFrame | None) -> pd.DataFrame:
    """A class's real train rows: those the t-SNE selection kept where the scenario reduces the class, else all."""
    if not (sc.selection and code in sc.selection_classes):
        return real_c
    if selection is None:
        raise RetinaugError(
            f"scenario {sc.name} needs the t-SNE selection: switch the selection stage on "
            "(selection.enabled: true) or run `retinaug select`"
        )
    sel = real_rows(selection, "train", [code])
    return sel[sel["selected"].astype(bool)] if "selected" in sel.columns else sel


def _added(
    sc: Scenario, kind: str, code: str, pool_df: pd.DataFrame | None, want: int, seed: int, warn: bool
) -> pd.DataFrame:
    """`want` rows of class `code` drawn from a pool of added rows (synthetic or traditional): fewer when the pool is
    short (logged), none when none are wanted; a pool that is needed but absent is an error naming its stages."""
    if not want:
        return pd.DataFrame() if pool_df is None else pool_df.iloc[:0]
    if pool_df is None:
        raise RetinaugError(
            f"scenario {sc.name} needs {kind} images: switch on the stages that make them "
            f"({_MAKES[kind]}) or drop the scenario"
        )
    pool = pool_df[pool_df["label"] == code]
    got = _sample(pool, want, seed, f"{kind}:{code}")
    if len(got) < want and warn:
        log.warning(
            "scenario %s: class %s needs %d %s images but only %d are available; using %d (shortfall %d)",
            sc.name,
            code,
            want,
            kind,
            len(pool),
            len(got),
            want - len(got),
        )
    return got


def real_subsample(train_real: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The real train rows of the first ceil(fraction x n) of each stratum's n patients: `split.strata`'s units and
    order (a patient, merged with any patient sharing an identical image; stratified by its rarest class among these
    rows, rarity by image count; ordered by patient id, then by a permutation seeded by SUBSAMPLE_SEED and the class).
    The order does not depend on the fraction, so a smaller fraction keeps a subset of a larger one's patients."""
    if fraction == 1:
        return train_real
    groups = patient_groups(train_real)
    keep = [
        g
        for members in strata(train_real, groups, SUBSAMPLE_SEED).values()
        for g in members[: math.ceil(round(fraction * len(members), 9))]
    ]  # round: 0.3 x 10 is 3.0000000000000004
    return train_real[np.isin(groups, keep)].reset_index(drop=True)


def made_from(pool: pd.DataFrame | None, kept: pd.Series) -> tuple[pd.DataFrame | None, pd.Series]:
    """The pool's rows whose `parent` image (img2img children, traditional copies) is one of the `kept` real paths or
    none (txt2img), and the others counted per class: a row made from a left-out patient's image would bring that
    patient back into a scarce-data experiment."""
    if pool is None or "parent" not in pool.columns:
        return pool, pd.Series(dtype=int)
    out = pool["parent"].notna() & ~pool["parent"].isin(kept)
    return pool[~out].reset_index(drop=True), pool.loc[out, "label"].value_counts()


def allocate(sc: Scenario, kind: str, real: pd.Series, recall: Mapping[str, float] | None = None) -> pd.Series:
    """Rows of `kind` asked for per class of the task (`real`: its real train rows per class). proportional (and
    traditional rows always): `kind`'s multiplier x the count of each class that gets them, rounded half up.
    Synthetic rows with balanced or need: that total, spread over the same classes by shares (`_balanced`, or
    1 - `recall`), in whole rows by largest remainders. A pool too small for its class is a shortfall, as for
    proportional: the rows are not moved to other classes."""
    added = real[list(sc.added_classes(kind))]
    asked = (getattr(sc, kind) * added).map(half_up)
    total = int(asked.sum())
    if kind == "synthetic" and total and sc.allocation != "proportional":
        shares = _balanced(added, total) if sc.allocation == "balanced" else 1 - _recall(sc, added.index, recall)
        if shares.sum() > 0:
            asked = _apportion(total, shares)
        else:
            log.warning(
                "scenario %s: its real-only fit recalls every class on the validation rows, so allocation need has "
                "nothing to share by: the synthetic rows are spread proportionally",
                sc.name,
            )
    return asked.reindex(real.index, fill_value=0)


def _balanced(counts: pd.Series, total: int) -> pd.Series:
    """Per class, the rows that fill it up to the level at which `total` rows raise the rarest classes evenly (water
    filling): every class below the level ends at it, every class above it gets none."""
    r = np.sort(counts.to_numpy(dtype=float))
    levels = (total + np.cumsum(r)) / np.arange(1, len(r) + 1)  # the level if the j rarest classes share the rows
    level = levels[np.flatnonzero(r < levels)[-1]]
    return (level - counts).clip(lower=0)


def _recall(sc: Scenario, classes: pd.Index, recall: Mapping[str, float] | None) -> pd.Series:
    """allocation need: the validation recall of each class that gets synthetic rows (an error naming what is missing)."""
    if recall is None:
        raise RetinaugError(
            f"scenario {sc.name}: allocation need shares by the validation recall of its real-only fit; "
            "run it through run_experiments, which plans it once that fit has finished"
        )
    if missing := [c for c in classes if c not in recall]:
        raise RetinaugError(
            f"scenario {sc.name}: allocation need has no validation recall of class(es) {', '.join(missing)} "
            "(no validation images of them): use allocation balanced, or leave them out of synthetic_classes"
        )
    return pd.Series({c: float(recall[c]) for c in classes}).clip(0, 1)


def _apportion(total: int, shares: pd.Series) -> pd.Series:
    """`total` whole rows in proportion to `shares` (Hamilton's largest remainders; ties go to the task's earlier class)."""
    exact = total * shares / shares.sum()
    whole = np.floor(exact + 1e-9).astype(int)
    whole.loc[(exact - whole).sort_values(ascending=False, kind="stable").index[: total - int(whole.sum())]] += 1
    return whole


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
        raise RetinaugError(
            "the synthetic manifest has no 'accepted' column: give the label stage's output "
            "(RUN/label, written by `retinaug label`), not the raw synthetic manifest"
        )
    return df[(df["origin"] == "synthetic") & accepted_mask(df)].reset_index(drop=True)


def asked_vs_labelled(accepted: pd.DataFrame) -> pd.DataFrame:
    """Accepted synthetic images counted by the class asked of the generator (rows) and the class they train as
    (columns): under the relabel policy an image asked to be G may enter the training sets as C."""
    asked = accepted["intended_label"] if "intended_label" in accepted.columns else accepted["label"]
    table = pd.crosstab(asked.astype(str).rename("asked"), accepted["label"].astype(str).rename("labelled"))
    return table.reindex(
        index=[c for c in CLASSES if c in table.index], columns=[c for c in CLASSES if c in table.columns]
    )
