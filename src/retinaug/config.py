"""The pipeline's one YAML: every stage's config nested under its stage name, validated by pydantic.

Sources merge in order: a packaged preset (`--preset demo`), the user's YAML, then `--set a.b=value`
overrides. Unknown keys and bad values are errors that name the key path (`experiments.train.epocs`).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from .augment import AugmentConfig
from .classes import ClassCodes
from .classify.config import LabelConfig, TrainConfig
from .errors import RetinaugError, validated
from .experiments.scenarios import ExperimentConfig
from .fields import MAX_BOOT, MAX_MULTIPLIER, STRICT
from .generate.config import GenerateConfig, GeneratorConfig
from .ingest.config import FolderConfig, OdirConfig
from .io import read_yaml
from .phantom.config import MIN_SIZE, PhantomConfig, Proportions
from .quality.config import AuditConfig
from .select import SelectConfig
from .strict_yaml import parse_yaml

PRESETS = ("demo", "odir-cpu", "paper")
M = TypeVar("M", bound=BaseModel)


class _Section(BaseModel):
    model_config = STRICT

    def result_config(self) -> dict:
        """What decides the stage's result (hashed in its record): every setting but the on/off switch."""
        return self.model_dump(mode="json", exclude={"enabled"})


class DataStage(OdirConfig, FolderConfig, PhantomConfig, _Section):
    """Where the real images come from and how patients are split.

    The split (val, test, seed) and the options of each source are the fields of the ingest verbs' configs
    (`OdirConfig`, `FolderConfig`, `PhantomConfig`, inherited here and passed whole to the verb), so a run ingests
    exactly as `retinaug prepare` does; only the phantom's defaults differ (a smaller dataset)."""

    source: Literal["phantom", "odir", "folder"] = Field(
        "phantom",
        description="phantom (embedded procedural data), odir (Kaggle ODIR-5K layout) or folder (one sub-folder per class).",
    )
    path: str | None = Field(
        None, description="odir/folder: dataset folder, relative to the current directory or absolute."
    )
    n: int = Field(600, ge=10, le=100_000, description="phantom: number of images.")
    size: int = Field(64, ge=MIN_SIZE, le=1024, description="phantom: image size in pixels.")
    proportions: Proportions = Field(
        None,
        description="phantom: class proportions: 'uniform', 'N=2,D=1,G=1' or {N: 2, D: 1, G: 1} (classes left out are not generated); null or 'odir': ODIR-like imbalance.",
    )
    external: str | None = Field(
        None,
        description="An external test set: a prepared dataset from another source (a folder made by `retinaug prepare folder|odir|phantom`, or its manifest.parquet; never written to). Every row is a test row whatever its split. Every fit is also scored on it, on the classes of its task it has, after the patients with a near-copy of the run's train/val images are dropped (RUN/experiments/external/). null: none.",
    )
    folds: int = Field(
        1,
        ge=1,
        le=20,
        description="Patient-level k-fold cross-validation: k > 1 runs every fitted stage once per fold into RUN/fold-<i>/ (fold i's patients are its test split, data.val of all patients its validation split, the rest train) and the report pools the folds; each patient is tested exactly once. data.test is then not read (said in the log). k times the cost of one run. 1: one split (data.val, data.test).",
    )

    @model_validator(mode="after")
    def _fold_fractions(self):
        if self.folds > 1 and self.val * self.folds / (self.folds - 1) >= 1:
            raise ValueError(f"val {self.val} of all patients leaves no training patients with {self.folds} folds")
        return self

    def result_config(self) -> dict:
        """The ingest's settings: `folds` changes how the fold stages split the ingested data, not the ingest, and
        `external` is read by the experiments stage alone."""
        return self.model_dump(mode="json", exclude={"enabled", "folds", "external"})

    @model_validator(mode="after")
    def _options_of_source(self):
        """An option set for a source that does not read it (data.path of the phantom) is a mistake, not something to ignore."""
        readers = {s: keys + INGEST_OPTIONS.get(s, ()) for s, keys in SOURCE_OPTIONS.items()}
        foreign = {
            k: [s for s, keys in readers.items() if k in keys]
            for keys in readers.values()
            for k in keys
            if k not in readers[self.source] and getattr(self, k) != type(self).model_fields[k].default
        }
        if foreign:
            said = ", ".join(f"{k} ({'/'.join(sources)} only)" for k, sources in foreign.items())
            raise ValueError(f"{said}: not read when source is {self.source}")
        return self


# The options of each ingest config that DataStage inherits (the split's val/test/seed aside): the fields of
# OdirConfig / FolderConfig, which the data stage passes whole to prepare_odir / prepare_folder.
INGEST_OPTIONS: dict[str, tuple[str, ...]] = {
    "odir": ("labels", "allow_multilabel", "min_size", "workers"),
    "folder": ("mapping", "patient_regex", "unmatched", "min_size", "workers"),
}
# The other options only some sources read: the phantom's plan (PhantomConfig's own fields), the dataset folder.
SOURCE_OPTIONS: dict[str, tuple[str, ...]] = {
    "phantom": ("n", "size", "proportions"),
    "odir": ("path",),
    "folder": ("path",),
}


class GeneratorStage(GeneratorConfig, _Section):
    """The diffusion generator, trained on the training patients only."""

    enabled: bool = Field(True, description="Train a generator (off: no synthetic scenarios can run).")

    def result_config(self) -> dict:
        """The method and its settings only: editing the other method's section redoes nothing."""
        return {"method": self.method, "config": self.method_config().model_dump(mode="json")}


class SyntheticStage(GenerateConfig, _Section):
    """What and how many synthetic images to generate (before the labeler filters them), and the sampling settings."""

    enabled: bool = Field(True, description="Generate synthetic images.")
    margin: float = Field(
        1.25,
        ge=1,
        le=10,
        description="When neither ratio nor per_class is set: generate margin x the largest synthetic multiplier of the scenarios (room for rejected images).",
    )
    processes: int | Literal["auto"] = Field(
        "auto",
        description="Sampling processes (torchrun), each on its own GPU: auto = one per visible CUDA GPU (1 without GPUs). "
        "The images do not depend on it (each image's seed comes from its class and index); N > 1 without GPUs runs N CPU processes.",
    )

    @field_validator("processes")
    @classmethod
    def _processes(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("processes must be auto or at least 1")
        return v

    def result_config(self) -> dict:
        """How many processes share the sampling does not change the images."""
        return self.model_dump(mode="json", exclude={"enabled", "processes"})


class LabelerStage(_Section):
    """The classifier trained on real training images that labels (and filters) synthetic images."""

    enabled: bool = Field(
        True, description="Train the labeler (needed by label, and by selection/quality when they use it)."
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(task="8-class"), description="Labeler training config."
    )
    n_boot: int = Field(
        200, ge=0, le=MAX_BOOT, description="Patient-bootstrap resamples of the labeler's test metrics (labeler/eval)."
    )


class LabelStage(LabelConfig, _Section):
    """Which synthetic images are accepted."""


class SelectionStage(SelectConfig, _Section):
    """t-SNE selection that reduces the dominant classes (D, N) of the training split."""

    enabled: bool = Field(True, description="Run the t-SNE selection (needed by 7-class selection scenarios).")


class AugmentStage(AugmentConfig, _Section):
    """Traditional augmentation rows (flips/rotations applied at load time)."""

    enabled: bool = Field(True, description="Make traditional-augmentation rows.")
    ratio: float | None = Field(
        None,
        gt=0,
        le=MAX_MULTIPLIER,
        description="Rows per class as a multiple of its real train count (default: the largest traditional multiplier of the scenarios).",
    )
    classes: ClassCodes | None = Field(None, description="Classes to augment (default: those the scenarios ask for).")


class ExperimentsStage(ExperimentConfig, _Section):
    """Scenario experiments (see `retinaug experiment --help`)."""

    enabled: bool = Field(True, description="Run the scenario experiments.")


class QualityStage(AuditConfig, _Section):
    """Synthetic-data audit: nearest neighbours, memorization, FID/KID, class fidelity, CAS."""

    enabled: bool = Field(True, description="Run the quality audit.")
    cas_recipe: TrainConfig | None = Field(
        None,
        description="CAS classifier recipe; None: the experiments' train recipe with their first seed (filled in when the run starts).",
    )


class PipelineConfig(_Section):
    """One run of the whole pipeline; every field has a default, so a YAML only says what differs."""

    name: str = Field("run", description="Run name (shown in the report).")
    data: DataStage = Field(default_factory=DataStage, description="Data stage.")
    generator: GeneratorStage = Field(default_factory=GeneratorStage, description="Generator training stage.")
    synthetic: SyntheticStage = Field(default_factory=SyntheticStage, description="Synthetic generation stage.")
    labeler: LabelerStage = Field(default_factory=LabelerStage, description="Labeler training stage.")
    label: LabelStage = Field(default_factory=LabelStage, description="Synthetic labelling/filtering stage.")
    selection: SelectionStage = Field(default_factory=SelectionStage, description="t-SNE selection stage.")
    augment: AugmentStage = Field(default_factory=AugmentStage, description="Traditional augmentation stage.")
    experiments: ExperimentsStage = Field(default_factory=ExperimentsStage, description="Scenario experiments stage.")
    quality: QualityStage = Field(default_factory=QualityStage, description="Quality audit stage.")


# ---------------------------------------------------------------- loading


def deep_merge(base: dict, over: dict) -> dict:
    """`over` wins; nested dicts merge key by key (lists are replaced, not concatenated)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_set(raw: dict, assignment: str) -> dict:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, booleans, lists, null)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise RetinaugError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set experiments.seeds=2")
    parsed = parse_yaml(value, f"--set {assignment!r}: value") if value.strip() else None
    parts = key.strip().split(".")
    out = dict(raw)
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is not None and not isinstance(child, dict):
            raise RetinaugError(f"--set {assignment!r}: {'.'.join(parts[: i + 1])} is not a section")
        node[part] = dict(child or {})
        node = node[part]
    node[parts[-1]] = parsed
    return out


def preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise RetinaugError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return (
        parse_yaml(resources.files("retinaug").joinpath("presets", f"{name}.yaml").read_bytes(), f"preset {name}") or {}
    )


def load_model(
    model: type[M],
    path: str | Path | None = None,
    given: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
    defaults: dict | None = None,
    read: Callable[[dict], dict] | None = None,
    origin: str | None = None,
) -> M:
    """Every config is built here, for `run` and every verb alike: `base` (a preset), the verb's `defaults`, the YAML
    file at `path` (mapped by `read`), the named values `given` (CLI options), then `--set` `overrides`, validated by
    `model` with every bad key named."""
    raw: dict[str, Any] = deep_merge(dict(base or {}), dict(defaults or {}))
    if path is not None:
        content = read_yaml(path)
        raw = deep_merge(raw, read(content) if read is not None else content)
    raw = deep_merge(raw, dict(given or {}))
    for item in overrides:
        raw = apply_set(raw, item)
    said = [str(path) if path is not None else "", "options" if given else "", "--set" if overrides else ""]
    return validated(model, raw, origin or f"settings {' + '.join(filter(None, said)) or '(defaults)'}")


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfig:
    """Preset, then YAML file, then `--set` overrides -> a validated PipelineConfig."""
    said = [f"preset {preset}" if preset else "", str(path) if path else "", "--set" if overrides else ""]
    base = preset_dict(preset) if preset else None
    origin = f"config {' + '.join(filter(None, said)) or '(defaults)'}"
    return load_model(PipelineConfig, path, overrides=overrides, base=base, origin=origin)


def dump_config(cfg: PipelineConfig) -> str:
    """The resolved config as YAML, every default written out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
