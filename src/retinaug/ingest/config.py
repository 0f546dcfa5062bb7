"""The settings of the ingest verbs (`prepare_odir`, `prepare_folder`), written once: the verbs, the `prepare odir|folder`
CLI options and the pipeline's `data:` section (`config.DataStage`, which inherits them) read them from here.

Light on purpose (pydantic only, no pandas or PIL): the CLI reads every verb's config class when it starts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ..classes import CODES
from ..errors import RetinaugError
from ..fields import STRICT, Seed


def parse_mapping(spec: str | dict[str, str] | None) -> dict[str, str]:
    """'glaucoma=G,cataract=C' (or a dict) -> {'glaucoma': 'G', ...} with validated codes."""
    if not spec:
        return {}
    pairs = spec.items() if isinstance(spec, dict) else [p.split("=", 1) for p in spec.split(",") if p.strip()]
    mapping = {}
    for pair in pairs:
        if len(pair) != 2 or not pair[0].strip():
            raise RetinaugError(f"bad --map entry {'='.join(pair)!r}: write FOLDER=CODE, e.g. 'glaucoma=G,cataract=C'")
        name, code = pair[0].strip().lower(), pair[1].strip().upper()
        if code not in CODES:
            raise RetinaugError(f"--map {name}={code}: unknown class code; valid codes: {','.join(CODES)}")
        mapping[name] = code
    return mapping


class SplitConfig(BaseModel):
    """The patient-level split every ingest ends with (`finish_prepare`)."""

    model_config = STRICT

    val: float = Field(0.15, ge=0, lt=1, description="Fraction of patients for validation.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction of patients for test.")
    seed: Seed = Field(
        0,
        description="Seed of the patient-level split (and of the phantom images): same seed + data = same split.",
    )


class ScreenConfig(SplitConfig):
    """The image checks of a dataset read from disk (`checks.screen`), beside the split."""

    min_size: int = Field(64, ge=1, description="Reject images whose shorter side is below this many pixels.")
    workers: int | None = Field(
        None,
        ge=1,
        description="Threads that read and check images (default: 4 x CPU cores, at most 16); does not change the result.",
    )


class OdirConfig(ScreenConfig):
    """`prepare_odir`: ODIR-5K as downloaded, either layout."""

    labels: Literal["kaggle", "keywords"] = Field(
        "kaggle",
        description="Label source: kaggle = the patient-level label (Kaggle labels column / N..O flags, as the paper), keywords = per-eye label from the eye's diagnostic keywords.",
    )
    allow_multilabel: bool = Field(
        False,
        description="Keep images with several findings under their primary class (a specific finding beats O) instead of rejecting them.",
    )


class FolderConfig(ScreenConfig):
    """`prepare_folder`: one sub-folder per class."""

    mapping: dict[str, str] | None = Field(
        None,
        description="Folder name -> class code, e.g. {glaucoma: G, cataract: C} (or 'glaucoma=G,cataract=C'); codes (G) and class names (glaucoma) work without it.",
    )
    patient_regex: str | None = Field(
        None,
        description="Regex searched in each file stem; its group 'patient' (or first group) is the patient id (a group 'eye' gives the eye), e.g. '^(\\d+)_'. Default: `<patient>_<eye>` names (eye left/right/l/r/od/os, any case) are grouped by patient.",
    )
    unmatched: Literal["own-patient", "reject"] = Field(
        "own-patient",
        description="A file whose stem the patient pattern does not match is its own patient (own-patient) or is rejected (reject, listed in rejected.csv).",
    )

    @field_validator("mapping", mode="before")
    @classmethod
    def _mapping(cls, v):
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
