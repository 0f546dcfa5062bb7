"""Stage records (`RUN/<stage>/stage.json`): what a stage ran on, with which config, what it wrote, and whether
it finished.

A finished stage is skipped when its config hash and input hashes are unchanged *and* its outputs still hash to
what it recorded. A stage found 'running' (killed mid-way) with the same hashes is resumed in place (its own
loops skip finished work); a stage whose config or inputs changed, whose outputs were changed or removed since
it finished, or that is forced, starts again from a folder emptied of what it wrote (ownership.py: a stage folder
holding files retinaug did not write is refused, never emptied) so no stale file survives — except when only
settings its own resume can absorb changed (`keep_when`: e.g. more synthetic images per class), where it reruns
in place and keeps its finished work.

Input hashes chain: a stage's inputs are the output hashes its upstream stages recorded, and an output hash
covers the *content* of every file a later stage reads (images included, see fingerprint.py), so any upstream
change re-runs everything below it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .fingerprint import Digests, fingerprint
from .io import read_json, sha256_text, write_json_atomic
from .ownership import check_foreign, clean, owned_output

log = logging.getLogger("retinaug.stages")
# why an unfinished stage resumes, by the status its record kept
_LAST_ATTEMPT = {
    "failed": "its last attempt failed",
    "interrupted": "its last attempt was interrupted",
    "running": "its last attempt stopped mid-way (the process ended)",
}

RECORD = "stage.json"
SOURCE = "source"  # the input key of the user's files a stage reads (the dataset), beside its upstream stages
FORMAT = 2  # 2: output hashes by file content (retinaug 0.2); records of another format are redone
DIGESTS = ".digests.json"
MANIFEST = "manifest.parquet"
# never read by a later stage; the model card (README.md, loss_curve.png) is rewritten by the report with the audit
NOT_OUTPUTS = {"tracking", "logs", "cache", RECORD, "train_state.pt", "README.md", "loss_curve.png"}

# Settings that change how work is watched, paced or placed, not its result, and their defaults: hashed as the
# default, so turning TensorBoard on, reading images with more threads or running the fits on Ray does not redo a
# finished stage.
OPERATIONAL = {
    "tracker": "none",
    "workers": None,
    "executor": "local",
    "ray": None,
    # sd-lora memory options (issue 30): gradient checkpointing recomputes the same activations (LoRA weights
    # equal to float rounding), VAE slicing decodes each image alone (the same images); vae_tiling changes
    # pixels above the VAE's size, so it is hashed
    "gradient_checkpointing": False,
    "vae_slicing": True,
}
# Settings added after run folders existed, with the default that behaves as before: hashed only when set to
# something else (an operational one: never), so a finished stage or fit of an earlier retinaug is not redone for a
# setting it did not have.
ADDED = {
    "backbone_lr": 1.0,
    "freeze_epochs": 0,
    # a scenario's use of its synthetic rows (issue 28); its defaults are the plain concatenation of before
    "synthetic_use": "mix",
    "pretrain_with_real": False,
    "finetune_epochs": None,
    "finetune_lr": None,
    "replace_probability": 0.5,
    "synthetic_weight": 1.0,
    "traditional_weight": 1.0,
    "soft_labels": False,
    # how a scenario spreads its synthetic rows over the classes, and the share of the real train patients it keeps
    "allocation": "proportional",
    "real_fraction": 1.0,
    # sd-lora memory options (issue 30): the operational two are hashed as their default, so never; tiling when on
    "gradient_checkpointing": False,
    "vae_slicing": True,
    "vae_tiling": False,
    # augment's PNG copies (issue 29: the pipeline's section is the verb's config): the rows only, as before
    "write_files": False,
}
# Settings that only fill in others (a classifier's `recipe` sets its backbone, size, epochs...), which are hashed.
FILLS = {"recipe"}


def result_settings(obj: Any) -> Any:
    """A config (pydantic model or plain data) as plain data with the operational settings at their defaults."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        settled = {
            k: OPERATIONAL[k] if k in OPERATIONAL else result_settings(v) for k, v in obj.items() if k not in FILLS
        }
        return {k: v for k, v in settled.items() if not (k in ADDED and v == ADDED[k])}
    if isinstance(obj, list):
        return [result_settings(v) for v in obj]
    return obj


def config_hash(obj: Any) -> str:
    """Hash of a config (pydantic model or plain data), independent of key order and of operational settings."""
    return sha256_text(json.dumps(result_settings(obj), sort_keys=True, default=str))[:16]


def read_record(folder: Path) -> dict:
    rec = read_json(Path(folder) / RECORD)
    return rec if isinstance(rec, dict) else {}


def output_files(folder: Path, writes: Sequence[str], run: Path) -> list[tuple[str, Path]]:
    """What later stages read of a stage, as (name, path) in a stable order: the files in `folder` matching the
    globs `writes` (a plain name that matches nothing is listed, to count as absent) and, for every manifest
    among them, the image files its rows name. Names are relative to the run folder where the file lies in it,
    so a moved run keeps its hashes. Paths are compared resolved, so a run reached through a link is the same run."""
    from .manifest import load_manifest

    run = Path(os.path.realpath(run))

    def name(p: Path) -> str:
        p = Path(os.path.realpath(p))
        return p.relative_to(run).as_posix() if p.is_relative_to(run) else str(p)

    found: dict[str, Path] = {}
    for pattern in writes:
        matches = [p for p in folder.glob(pattern) if p.is_file()]
        matches = [
            p
            for p in matches
            if not any(part in NOT_OUTPUTS or part.startswith(".") for part in p.relative_to(folder).parts)
        ]
        if not matches and not any(ch in pattern for ch in "*?["):
            matches = [folder / pattern]
        found.update((name(p), p) for p in matches)
    images: dict[str, Path] = {}
    for p in [p for p in found.values() if p.name == MANIFEST and p.is_file()]:
        images.update((name(Path(f)), Path(f)) for f in load_manifest(p)["path"])
    return sorted(found.items()) + sorted(images.items())


@dataclass
class Stage:
    """One pipeline stage: `run()` does the work in `folder`; `writes` (globs in `folder`) is what later stages read,
    and what the output hash covers."""

    name: str
    folder: Path
    config: Any
    inputs: dict[str, str]
    run: Callable[[], Any]
    writes: Sequence[str] = ()
    run_folder: Path | None = None  # output names are relative to it (default: the folder's parent)
    clean_on_change: bool = True
    # The part of the config whose change makes the finished work invalid; None: all of it.
    keep_when: Any = None

    def outputs(self) -> list[tuple[str, Path]]:
        return output_files(self.folder, self.writes, self.run_folder or self.folder.parent)

    def output_hash(self, save: bool = True) -> str:
        """Content hash of the outputs; re-reads only files changed since the last call (cache in the folder)."""
        digests = Digests(self.folder / DIGESTS)
        value = fingerprint(self.outputs(), digests)
        if save and self.folder.is_dir():
            digests.save()
        return value

    def decision(self, force: bool, save: bool = False) -> tuple[str, str]:
        """('skip' | 'resume' | 'fresh', why). `save`: keep the digests computed to verify a finished stage."""
        rec = read_record(self.folder)
        chash = config_hash(self.config)
        if force:
            return "fresh", "forced"
        if not rec:
            return "fresh", "never run"
        if rec.get("format") != FORMAT:
            return "fresh", "recorded by an older retinaug (another record format): redone"
        if rec.get("config_hash") != chash:
            if (
                self.keep_when is not None
                and rec.get("keep_hash") == config_hash(self.keep_when)
                and rec.get("inputs") == self.inputs
            ):
                return "resume", "config changed in amounts only: finished work kept"
            return "fresh", "config changed"
        if rec.get("inputs") != self.inputs:
            changed = sorted(
                k
                for k in set(rec.get("inputs", {})) | set(self.inputs)
                if rec.get("inputs", {}).get(k) != self.inputs.get(k)
            )
            return "fresh", f"inputs changed ({', '.join(changed)})"
        if rec.get("status") != "done":
            return "resume", _LAST_ATTEMPT.get(rec.get("status"), _LAST_ATTEMPT["running"])
        try:
            outputs = self.outputs()
        except ManifestError as exc:  # a truncated manifest: the finished work is damaged, so it is redone
            return "fresh", f"outputs unreadable ({exc})"
        missing = [n for n, p in outputs if not p.is_file()]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            return "fresh", f"outputs missing ({', '.join(missing[:3])}{more})"
        if self.output_hash(save) != rec.get("output_hash"):
            return "fresh", "outputs changed since it finished (a file was rewritten)"
        return "skip", "finished, config and inputs unchanged"

    def execute(self, force: bool = False) -> dict:
        """Run (or skip) the stage and return its record."""
        action, why = self.decision(force, save=True)
        if action == "skip":
            log.info("[%s] skipped: %s", self.name, why)
            return read_record(self.folder)
        check_foreign(self.folder, "stage folder")
        if action == "fresh" and self.clean_on_change:
            clean(self.folder)
        with owned_output(self.folder, "stage folder"):
            return self._work(action, why)

    def _work(self, action: str, why: str) -> dict:
        rec = {
            "stage": self.name,
            "format": FORMAT,
            "status": "running",
            "config_hash": config_hash(self.config),
            **({"keep_hash": config_hash(self.keep_when)} if self.keep_when is not None else {}),
            "inputs": self.inputs,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "why": why,
            "host": platform.node(),
            "pid": os.getpid(),
        }
        write_json_atomic(self.folder / RECORD, rec)
        log.info("[%s] %s (%s)", self.name, "resuming" if action == "resume" else "running", why)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            self.run()
        except BaseException as exc:  # Ctrl-C and SIGTERM are BaseExceptions, not Exceptions
            rec.update(
                status="failed" if isinstance(exc, Exception) else "interrupted",
                seconds=round(time.perf_counter() - t0, 2),
            )
            write_json_atomic(self.folder / RECORD, rec)
            raise
        rec.update(
            status="done",
            seconds=round(time.perf_counter() - t0, 2),
            cpu_seconds=round(time.process_time() - c0, 2),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            output_hash=self.output_hash(),
        )
        write_json_atomic(self.folder / RECORD, rec)
        log.info("[%s] done in %.1f s", self.name, rec["seconds"])
        return rec
