"""Resumable generator training: the state a checkpoint holds, when a checkpoint may be resumed, and kept phases.

While a phase trains, OUT/train_state.pt holds its `TrainState` now and then (written atomically: a kill leaves the
previous one). It is resumed only by a phase with the same key (`data_key` chained through `phase_key`: the
generator, its classes, the training images and every setting that shapes the weights) and the same length; any
other run warns and trains from step 0. A finished phase that a later one builds on (ldm's autoencoder) is kept in
OUT/<phase>/ with its key and history (`keep_phase`), so a re-run reuses it (`kept_history`) instead of training it again.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from diffusers.training_utils import EMAModel
from pydantic import BaseModel

from ..errors import RetinaugError
from ..io import atomic_path, json_dict, sha256_text, write_json_atomic, writing_weights

if TYPE_CHECKING:
    from accelerate.scheduler import AcceleratedScheduler

log = logging.getLogger("retinaug.generate")
CHECKPOINT = "train_state.pt"
PHASE_RECORD = "phase.json"
# config fields that shape what `finetune` writes or logs, not the weights: a checkpoint stays valid when they change
NOT_WEIGHTS = ("samples_per_class", "tracker")
CHECKPOINT_KEYS = (
    "key",
    "steps",
    "step",
    "history",
    "running",
    "count",
    "seconds",
    "modules",
    "optimizer",
    "lr_schedule",
    "ema",
    "batch_rng",
    "torch_rng",
    "cuda_rng",
)


def training_settings(config: BaseModel, exclude: tuple[str, ...] = ()) -> dict:
    """The config fields that decide trained weights (for checkpoint keys)."""
    return config.model_dump(mode="json", exclude=set(NOT_WEIGHTS) | set(exclude))


def data_key(method: str, classes: list[str], train_df: pd.DataFrame) -> str:
    """What every phase's key starts from: the generator, its classes and the training images (in any order)."""
    rows = "\n".join(
        sorted(train_df["path"].astype(str) + "|" + train_df["label"].astype(str) + "|" + train_df["eye"].astype(str))
    )
    return sha256_text(json.dumps({"method": method, "classes": classes, "rows": rows}))


def phase_key(previous: str, name: str, settings: dict) -> str:
    """A phase's key: the key before it (a phase trains on what earlier ones made) with its name and settings."""
    return sha256_text(
        json.dumps({"after": previous, "phase": name, "settings": settings}, sort_keys=True, default=str)
    )


@dataclass
class TrainState:
    """Where a phase's training stands: what a checkpoint saves (`state_dict`) and a resumed run takes back.

    `modules` are the generator's own (unwrapped) networks; only their trainable tensors are saved, the frozen rest
    comes from `build` again. Only the main process writes checkpoints, so only it takes the saved random streams
    back (`main_process`): the others keep their fresh per-process ones. The saved keys are unchanged from earlier
    versions (`CHECKPOINT_KEYS`), so a run killed before an upgrade resumes after it."""

    key: str
    steps: int
    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer  # and the learning-rate schedule: as accelerate prepared them
    lr_schedule: AcceleratedScheduler
    ema: EMAModel | None
    batch_rng: torch.Generator  # which images (and flips) each step draws
    main_process: bool
    step: int = 0  # optimiser steps done
    history: dict[str, list] = field(default_factory=lambda: {"step": [], "loss": []})
    running: float = 0.0  # loss summed over the `count` batches since the last history entry
    count: int = 0
    seconds: float = 0.0  # spent training in earlier (interrupted) runs
    started: float = field(default_factory=time.perf_counter)  # when this run's training began (not saved)

    def elapsed(self) -> float:
        """Seconds this run has trained."""
        return time.perf_counter() - self.started

    def state_dict(self) -> dict:
        modules = {
            name: {k: v.detach().cpu() for k, v in m.named_parameters() if v.requires_grad}
            for name, m in self.modules.items()
        }
        return {
            "step": self.step,
            "history": self.history,
            "running": self.running,
            "count": self.count,
            "seconds": self.seconds + self.elapsed(),
            "key": self.key,
            "steps": self.steps,
            "modules": modules,
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "batch_rng": self.batch_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"].get(name, {}), strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            # it was loaded onto the CPU
            self.ema.to(next(p for m in self.modules.values() for p in m.parameters()).device)
        if self.main_process:
            self.batch_rng.set_state(state["batch_rng"])
            torch.set_rng_state(state["torch_rng"])
            if torch.cuda.is_available() and state["cuda_rng"]:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.history, self.seconds = state["step"], state["history"], state["seconds"]
        self.running, self.count = state["running"], state["count"]


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write the checkpoint atomically: a kill while writing leaves the previous one."""
    with atomic_path(path) as tmp:
        torch.save(state.state_dict(), tmp)


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with torch's weights-only unpickler (tensors and plain containers only: a
    crafted file cannot run code); an unreadable or foreign file is a RetinaugError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetinaugError(
            f"cannot read the training checkpoint {path} ({type(exc).__name__}: {reason[:200]}); "
            "delete it to train from step 0"
        ) from None
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise RetinaugError(
            f"{path} is not a retinaug training checkpoint (missing {', '.join(missing)}); delete it to train from step 0"
        )
    return state


def resume(path: Path, state: TrainState, method: str, phase: str) -> None:
    """Continue from the checkpoint at `path` if it is one of this very phase (same key and length); warn and
    start over if it is another's. Tensors that do not fit the networks are an error, before anything is loaded."""
    if not path.is_file():
        return
    saved = load_checkpoint(path)
    if saved["key"] != state.key or saved["steps"] != state.steps:
        log.warning(
            "%s was made by another training phase, config or training set: ignored, training %s from step 0",
            path,
            phase,
        )
        return
    for name, module in state.modules.items():
        have = set(saved["modules"].get(name, {}))
        bad = have - set(module.state_dict())
        missing = {k for k, v in module.named_parameters() if v.requires_grad} - have
        if bad or missing:
            raise RetinaugError(
                f"{path} does not fit the {name} network ({len(bad)} unexpected, {len(missing)} missing "
                "tensors); delete it to start over"
            )
    state.load_state_dict(saved)
    log.info("resuming %s %s training at step %d of %d from %s", method, phase, state.step, state.steps, path)


def kept_history(folder: Path, key: str) -> dict | None:
    """The history of the phase kept in `folder` when it was trained with `key`; None when there is none."""
    record = json_dict(folder / PHASE_RECORD)
    return record["history"] if record.get("key") == key else None


def keep_phase(folder: Path, key: str, history: dict, save: Callable[[Path], None]) -> None:
    """Keep a finished phase in `folder`: its networks (`save`), then the record that makes them reusable."""
    with writing_weights(folder):
        save(folder)
    write_json_atomic(folder / PHASE_RECORD, {"key": key, "history": history})
