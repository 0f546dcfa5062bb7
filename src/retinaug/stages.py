"""Stage records (`RUN/<stage>/stage.json`): what a stage ran on, with which config, and whether it finished.

A finished stage is skipped when its config hash and input hashes are unchanged. A stage found 'running'
(killed mid-way) with the same hashes is resumed in place (its own loops skip finished work); a stage whose
config or inputs changed, or that is forced, starts again from an empty folder so no stale file survives — except
when only settings its own resume can absorb changed (`keep_when`: e.g. more synthetic images per class), where it
reruns in place and keeps its finished work.
Input hashes chain: a stage's inputs are the output hashes its upstream stages recorded when they finished.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import sha256_file, sha256_text, write_json_atomic

log = logging.getLogger("retinaug.stages")

RECORD = "stage.json"


# Settings that change how work is watched, not its result, and their defaults: hashed as the default, so turning
# TensorBoard on does not redo a finished stage (and hashes of runs made before this rule are unchanged).
OPERATIONAL = {"tracker": "none"}


def result_settings(obj: Any, top: bool = True) -> Any:
    """A config as plain data with the operational settings at their defaults, at any depth. A pydantic model
    inside a plain container stays a model (reset the same way): it has always been hashed through its repr."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_copy(update={k: v for k, v in OPERATIONAL.items() if k in type(obj).model_fields})
        if not top:
            return obj
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {k: OPERATIONAL[k] if k in OPERATIONAL else result_settings(v, False) for k, v in obj.items()}
    if isinstance(obj, list):
        return [result_settings(v, False) for v in obj]
    return obj


def config_hash(obj: Any) -> str:
    """Hash of a config (pydantic model or plain data), independent of key order and of operational settings."""
    return sha256_text(json.dumps(result_settings(obj), sort_keys=True, default=str))[:16]


def fingerprint(paths: Iterable[Path]) -> str:
    """Content hash of files, and of folders' files (by relative path, size and mtime; the stage's own
    stage.json, caches and logs excluded), in a stable order."""
    parts = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            parts.append(f"{p.name}:{sha256_file(p)}")
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if f.is_file() and f.name != RECORD and rel.parts[0] not in ("cache", "logs") and not f.name.startswith("."):
                    st = f.stat()
                    parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
        else:
            parts.append(f"{p.name}:absent")
    return sha256_text("\n".join(parts))[:16]


def read_record(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Stage:
    """One pipeline stage: `run()` does the work in `folder`; `outputs` are hashed when it finishes."""

    name: str
    folder: Path
    config: Any
    inputs: dict[str, str]
    run: Callable[[], Any]
    outputs: list[Path] = field(default_factory=list)
    clean_on_change: bool = True
    # The part of the config whose change makes the finished work invalid; None: all of it.
    keep_when: Any = None

    def decision(self, force: bool) -> tuple[str, str]:
        """('skip' | 'resume' | 'fresh', why)."""
        rec = read_record(self.folder)
        chash = config_hash(self.config)
        if force:
            return "fresh", "forced"
        if not rec:
            return "fresh", "never run"
        if rec.get("config_hash") != chash:
            if self.keep_when is not None and rec.get("keep_hash") == config_hash(self.keep_when) and rec.get("inputs") == self.inputs:
                return "resume", "config changed in amounts only: finished work kept"
            return "fresh", "config changed"
        if rec.get("inputs") != self.inputs:
            changed = sorted(k for k in set(rec.get("inputs", {})) | set(self.inputs) if rec.get("inputs", {}).get(k) != self.inputs.get(k))
            return "fresh", f"inputs changed ({', '.join(changed)})"
        if rec.get("status") != "done":
            return "resume", f"interrupted while {rec.get('status', 'running')}"
        missing = [str(p) for p in self.outputs if not Path(p).exists()]
        if missing:
            return "fresh", f"outputs missing ({', '.join(missing)})"
        return "skip", "finished, config and inputs unchanged"

    def execute(self, force: bool = False) -> dict:
        """Run (or skip) the stage and return its record."""
        action, why = self.decision(force)
        if action == "skip":
            log.info("[%s] skipped: %s", self.name, why)
            return read_record(self.folder)
        if action == "fresh" and self.clean_on_change and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        rec = {
            "stage": self.name,
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
        except BaseException:
            rec.update(status="failed", seconds=round(time.perf_counter() - t0, 2))
            write_json_atomic(self.folder / RECORD, rec)
            raise
        rec.update(
            status="done",
            seconds=round(time.perf_counter() - t0, 2),
            cpu_seconds=round(time.process_time() - c0, 2),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            output_hash=fingerprint(self.outputs),
        )
        write_json_atomic(self.folder / RECORD, rec)
        log.info("[%s] done in %.1f s", self.name, rec["seconds"])
        return rec
