"""The pipeline's one YAML: every stage's config nested under its stage name, validated by pydantic.

Sources merge in order: a packaged preset (`--preset demo`), the user's YAML, then `--set a.b=value`
overrides. Unknown keys and bad values are errors that name the key path (`experiments.train.epocs`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from .classes import ClassCodes
from .classify.config import TrainConfig
from .errors import RetinaugError, validated
from .experiments.scenarios import ExperimentConfig
from .fields import MAX_BOOT, MAX_MULTIPLIER, STRICT, Seed
from .generate.config import DDPMConfig, GenerateConfig, LDMConfig, SDLoRAConfig
from .io import read_yaml
from .quality.config import AuditConfig
from .select import SelectConfig
from .strict_yaml import parse_yaml

PRESETS = ("demo", "odir-cpu", "paper")


class _Section(BaseModel):
    model_config = STRICT

    def result_config(self) -> dict:
        """What decides the stage's result (hashed in its record): every setting but the on/off switch."""
        return self.model_dump(mode="json", exclude={"enabled"})


class DataStage(_Section):
    """Where the real images come from and how patients are split.

    The odir and folder options carry the keyword names of `prepare_odir` / `prepare_folder` (and of the
    `prepare odir|folder` CLI options), so a run ingests exactly as `retinaug prepare` does."""

    source: Literal["phantom", "odir", "folder"] = Field(
        "phantom",
        description="phantom (embedded procedural data), odir (Kaggle ODIR-5K layout) or folder (one sub-folder per class).",
    )
    path: str | None = Field(
        None, description="odir/folder: dataset folder, relative to the current directory or absolute."
    )
    n: int = Field(600, ge=10, le=100_000, description="phantom: number of images.")
    size: int = Field(64, ge=16, le=1024, description="phantom: image size in pixels.")
    proportions: dict[str, float] | None = Field(
        None, description="phantom: class proportions (default: ODIR-like imbalance)."
    )
    labels: Literal["kaggle", "keywords"] = Field(
        "kaggle",
        description="odir: label source; kaggle = the patient-level label (Kaggle labels column / N..O flags, as the paper), keywords = per-eye label from the eye's diagnostic keywords.",
    )
    allow_multilabel: bool = Field(
        False,
        description="odir: keep images with several findings under their primary class (a specific finding beats O) instead of rejecting them.",
    )
    mapping: dict[str, str] | None = Field(
        None,
        description="folder: folder name -> class code, e.g. {glaucoma: G, cataract: C} (or 'glaucoma=G,cataract=C'); codes and class names work without it.",
    )
    patient_regex: str | None = Field(
        None,
        description="folder: regex searched in each file stem; its group 'patient' (or first group) is the patient id, e.g. '^(\\d+)_'.",
    )
    unmatched: Literal["own-patient", "reject"] = Field(
        "own-patient",
        description="folder: a file whose stem patient_regex does not match is its own patient (own-patient) or is rejected (reject).",
    )
    min_size: int = Field(
        64, ge=1, description="odir/folder: reject images whose shorter side is below this many pixels."
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="odir/folder: threads that read and check images (default: 4 x CPU cores, at most 16); does not change the result.",
    )
    val: float = Field(0.15, ge=0, lt=1, description="Fraction of patients for validation.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction of patients for test.")
    seed: Seed = Field(0, description="Seed of the patient-level split (and of the phantom images).")
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

    @field_validator("mapping", mode="before")
    @classmethod
    def _mapping(cls, v):
        from .ingest.folder import parse_mapping

        try:
            return parse_mapping(v) or None
        except RetinaugError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("patient_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"{v!r} is not a valid regular expression: {exc}") from None
        return v

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

    def prepare_options(self) -> dict:
        """Keyword arguments of the source's ingest function (`prepare_odir` / `prepare_folder`), beside root and out."""
        return {k: getattr(self, k) for k in ("val", "test", "seed", *INGEST_OPTIONS[self.source])}


# The options of each ingest function that DataStage carries under the same names (the split's val/test/seed aside).
INGEST_OPTIONS: dict[str, tuple[str, ...]] = {
    "odir": ("labels", "allow_multilabel", "min_size", "workers"),
    "folder": ("mapping", "patient_regex", "unmatched", "min_size", "workers"),
}
# The other options only some sources read: the phantom's plan, the dataset folder.
SOURCE_OPTIONS: dict[str, tuple[str, ...]] = {
    "phantom": ("n", "size", "proportions"),
    "odir": ("path",),
    "folder": ("path",),
}


class GeneratorStage(_Section):
    """The diffusion generator, trained on the training patients only."""

    enabled: bool = Field(True, description="Train a generator (off: no synthetic scenarios can run).")
    method: Literal["ddpm", "ldm", "sd-lora"] = Field(
        "ddpm",
        description="ddpm (pixel-space, from scratch), ldm (autoencoder + latent diffusion, from scratch) or sd-lora (Stable Diffusion + LoRA, local base model).",
    )
    ddpm: DDPMConfig = Field(default_factory=DDPMConfig, description="Settings when method is ddpm.")
    ldm: LDMConfig = Field(default_factory=LDMConfig, description="Settings when method is ldm.")
    sd_lora: SDLoRAConfig = Field(default_factory=SDLoRAConfig, description="Settings when method is sd-lora.")

    def method_config(self) -> DDPMConfig | LDMConfig | SDLoRAConfig:
        return getattr(self, self.method.replace("-", "_"))

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


class LabelStage(_Section):
    """Which synthetic images are accepted."""

    policy: Literal["agree", "relabel", "all"] = Field(
        "agree",
        description="agree: predicted class = intended class and confidence >= threshold; relabel: label := prediction when confidence >= threshold (the seed's policy); all: keep everything.",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Minimum labeler confidence to accept an image.")


class SelectionStage(SelectConfig, _Section):
    """t-SNE selection that reduces the dominant classes (D, N) of the training split."""

    enabled: bool = Field(True, description="Run the t-SNE selection (needed by 7-class selection scenarios).")


class AugmentStage(_Section):
    """Traditional augmentation rows (flips/rotations applied at load time)."""

    enabled: bool = Field(True, description="Make traditional-augmentation rows.")
    ratio: float | None = Field(
        None,
        gt=0,
        le=MAX_MULTIPLIER,
        description="Rows per class as a multiple of its real train count (default: the largest traditional multiplier of the scenarios).",
    )
    classes: ClassCodes | None = Field(None, description="Classes to augment (default: those the scenarios ask for).")
    seed: Seed = Field(0, description="Sampling seed.")


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


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfig:
    """Preset, then YAML file, then `--set` overrides -> a validated PipelineConfig."""
    raw: dict[str, Any] = preset_dict(preset) if preset else {}
    if path is not None:
        raw = deep_merge(raw, read_yaml(path))
    for item in overrides:
        raw = apply_set(raw, item)
    origin = (
        " + ".join(
            filter(
                None, [f"preset {preset}" if preset else "", str(path) if path else "", "--set" if overrides else ""]
            )
        )
        or "(defaults)"
    )
    return validated(PipelineConfig, raw, f"config {origin}")


def dump_config(cfg: PipelineConfig) -> str:
    """The resolved config as YAML, every default written out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
