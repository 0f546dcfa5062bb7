"""The generator interface and the one training loop every generator shares.

A generator holds networks and a noise schedule (`build`, `save_weights`, `load_weights`), says how it is
trained as one or more `Phase`s (what to optimise, how to score a batch, for how long) and hands out a sampling
pipeline (`pipeline()`, see sampling.py). `fit` runs each phase through the same loop: AdamW under accelerate
(devices, mixed precision, gradient accumulation, multi-GPU), optional EMA, a loss curve, resumable checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from pydantic import BaseModel

from .. import faults
from ..cache import image_cache
from ..errors import RetinaugError
from ..fields import SEED_MAX
from ..hardware import default_device, new_accelerator, resolve_precision
from ..io import atomic_path, json_dict, sha256_text, write_json_atomic, writing_weights
from ..progress import progress_bar
from ..tracking import start_tracking, tracker_args
from .conditioning import SIDES, Conditions
from .sampling import SamplingPipeline

log = logging.getLogger("retinaug.generate")
CHECKPOINT = "train_state.pt"
PHASE_RECORD = "phase.json"
# config fields that shape what `finetune` writes or logs, not the weights: a checkpoint stays valid when they change
NOT_WEIGHTS = ("samples_per_class", "tracker")


@dataclass
class Phase:
    """One optimisation run of the shared loop.

    `loss(indices, flips)` scores a batch of training images (their rows in `Generator.data`, and which of
    them are mirrored). `settings` is what decides the phase's result besides the training images: its
    checkpoint is only resumed, and a finished phase only reused, when they are unchanged. A phase that is
    not the last one is kept in OUT/<name>/ when it finishes (`save`), so a later run resumes after it
    (`load`) instead of training it again."""

    name: str
    modules: dict[str, torch.nn.Module]  # generator attribute -> trainable module (accelerate wraps it meanwhile)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    settings: dict
    steps: int
    epochs: float | None
    batch_size: int
    lr: float
    warmup_steps: int = 0
    weight_decay: float = 0.0
    ema: EMAModel | None = None  # of every parameter of `modules`, copied in when the phase ends
    start: Callable[[], None] | None = None  # before the first step (also when resuming)
    finish: Callable[[Path | None], dict] | None = None  # after the last step; returns extra history entries
    save: Callable[[Path], None] | None = None
    load: Callable[[Path], None] | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters()]


class TrainSet:
    """The TRAIN images (uint8 on the CPU, decoded once) with their condition indices."""

    def __init__(self, df: pd.DataFrame, size: int, conditions: Conditions):
        if conditions.eyes and (unknown := int((~df["eye"].isin(SIDES)).sum())):
            raise RetinaugError(f"condition_eye needs the eye side of every TRAIN image: {unknown} of {len(df)} have eye "
                                f"{', '.join(sorted(set(df['eye']) - set(SIDES)))}; set condition_eye: false")
        self.conditions = conditions
        self.images = torch.from_numpy(image_cache(df, size).rows(df))  # (N, S, S, 3)
        self.cond = torch.tensor(conditions.index(list(df["label"]), list(df["eye"])))

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, idx: torch.Tensor, flip: torch.Tensor, device) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1], mirrored where `flip`."""
        x = self.images[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        return torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)

    def condition(self, idx: torch.Tensor, flip: torch.Tensor, device) -> torch.Tensor:
        """Condition indices; a mirrored image of a left eye looks like a right eye."""
        cond = self.cond[idx]
        return torch.where(flip, self.conditions.flipped(cond), cond).to(device)


def diffusion_loss(pred: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule, snr_gamma: float | None) -> torch.Tensor:
    """MSE against the schedule's prediction target, optionally Min-SNR-gamma weighted (Hang et al. 2023): per
    timestep min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v_prediction, min(SNR, gamma) for sample."""
    kind = schedule.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = schedule.get_velocity(clean, noise, t)
    elif kind == "sample":
        target = clean
    else:
        raise RetinaugError(f"unsupported prediction_type {kind!r} in the noise schedule")
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    snr = compute_snr(schedule, t)
    weight = torch.clamp(snr, max=snr_gamma) / {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}[kind]
    per_image = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_image * weight).mean()


def condition_dropout(cond: torch.Tensor, p: float, null: int) -> torch.Tensor:
    """Replace conditions by the null one with probability p (what classifier-free guidance needs)."""
    drop = torch.rand(len(cond), device=cond.device) < p
    return torch.where(drop, torch.full_like(cond, null), cond)


class Generator:
    """Base class; subclasses are registered with `@register_generator(name)`."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel):
        self.config = config
        self.classes: list[str] = []
        self.device = torch.device("cpu")

    @property
    def conditions(self) -> Conditions:
        return Conditions(tuple(self.classes), bool(self.config.condition_eye))

    # --- what a subclass provides -------------------------------------------------------------------
    def check(self) -> None:
        """Refuse unusable inputs (e.g. an incomplete model folder) before any data is loaded."""

    def build(self) -> None:
        """Create (or load) the networks and the noise schedule for `self.classes`."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """How the networks are trained, in order (after `build`, with `self.data` set)."""
        raise NotImplementedError

    def save_weights(self, out: Path) -> None:
        raise NotImplementedError

    def load_weights(self, path: Path) -> None:
        raise NotImplementedError

    def pipeline(self) -> SamplingPipeline:
        """The sampling pipeline over the current networks (settings are its call arguments)."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Generator:
        self.device = torch.device(device)
        return self

    # --- training ------------------------------------------------------------------------------------
    def fit(self, train_df: pd.DataFrame, out: Path | None = None, checkpoint_every: int = 500, holdout: pd.DataFrame | None = None) -> dict:
        """Train on the rows of `train_df` (TRAIN-split real images of `self.classes`); `holdout` (val images)
        is only read by generators that report a held-out score (ldm's reconstruction).

        Every `checkpoint_every` optimiser steps (0: never) the training state goes to OUT/train_state.pt: an
        interrupted fit with the same settings and images continues from there and, on one process, ends with
        the same weights as an uninterrupted one. Returns the last phase's history, earlier phases' under their name."""
        cfg = self.config
        accelerator = new_accelerator(
            mixed_precision=resolve_precision(cfg.mixed_precision, default_device()), gradient_accumulation_steps=cfg.grad_accum,
            **tracker_args(cfg.tracker, out),
        )
        start_tracking(accelerator, cfg.tracker, self.name, cfg, out)
        self.device = accelerator.device
        set_seed(cfg.seed)  # identical initialisation on every process
        self.build()
        self.data = TrainSet(train_df, cfg.size, self.conditions)
        self.holdout = holdout
        rows = "\n".join(sorted(train_df["path"].astype(str) + "|" + train_df["label"].astype(str) + "|" + train_df["eye"].astype(str)))
        key = sha256_text(json.dumps({"method": self.name, "classes": self.classes, "rows": rows}))
        ckpt = Path(out) / CHECKPOINT if out is not None and checkpoint_every > 0 else None
        phases, history = self.phases(), {}
        for i, phase in enumerate(phases):
            key = sha256_text(json.dumps({"after": key, "phase": phase.name, "settings": phase.settings}, sort_keys=True, default=str))
            kept = Path(out) / phase.name if out is not None and phase.save is not None and i < len(phases) - 1 else None
            if kept is not None and json_dict(kept / PHASE_RECORD).get("key") == key:
                phase.load(kept)
                history[phase.name] = json_dict(kept / PHASE_RECORD)["history"]
                log.info("%s phase already trained in %s: reused", phase.name, kept)
                continue
            # different batches/noise per process; wrapped into the range numpy takes (unchanged below it)
            set_seed((cfg.seed + 1009 * i + accelerator.process_index) % (SEED_MAX + 1))
            if phase.start is not None:
                phase.start()
            metric = "loss" if i == len(phases) - 1 else f"{phase.name}_loss"  # the tracker's name for the curve
            history[phase.name] = self._train(phase, accelerator, ckpt, key, checkpoint_every, seed=cfg.seed + 1009 * i, metric=metric)
            if phase.finish is not None:
                history[phase.name].update(phase.finish(Path(out) if out is not None and accelerator.is_main_process else None))
            if kept is not None and accelerator.is_main_process:
                with writing_weights(kept):
                    phase.save(kept)
                write_json_atomic(kept / PHASE_RECORD, {"key": key, "history": history[phase.name]})
            if ckpt is not None and accelerator.is_main_process:
                ckpt.unlink(missing_ok=True)  # after the phase is kept: a kill in between loses nothing
            accelerator.wait_for_everyone()
        accelerator.end_training()
        last = history.pop(phases[-1].name)
        return {**last, **history, "precision": accelerator.mixed_precision, "is_main_process": accelerator.is_main_process}

    def _train(self, phase: Phase, accelerator: Accelerator, ckpt: Path | None, key: str, checkpoint_every: int, seed: int, metric: str) -> dict:
        """The training loop: draw a batch, step AdamW (with accumulation, clipping, warm-up), update the EMA,
        log the loss, save a checkpoint now and then."""
        n = len(self.data)
        per_step = phase.batch_size * accelerator.gradient_accumulation_steps * accelerator.num_processes
        steps = phase.steps if phase.epochs is None else max(1, math.ceil(phase.epochs * n / per_step))
        params = [p for p in phase.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay, fused=True)  # as classify.fit's
        lr_schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=phase.warmup_steps * accelerator.num_processes)
        *wrapped, optimizer, lr_schedule = accelerator.prepare(*phase.modules.values(), optimizer, lr_schedule)
        for name, module in zip(phase.modules, wrapped):
            setattr(self, name, module)
            module.train()
        batch_rng = torch.Generator().manual_seed(seed + 7919 * accelerator.process_index)
        run = {"step": 0, "history": {"step": [], "loss": []}, "running": 0.0, "count": 0, "seconds": 0.0}
        if ckpt is not None and ckpt.is_file():
            self._restore(ckpt, key, steps, phase, wrapped, optimizer, lr_schedule, batch_rng, run, accelerator)
        resumed_from, log_every, start = run["step"], max(1, steps // 200), time.perf_counter()

        def save_checkpoint() -> None:
            modules = {name: {k: v.detach().cpu() for k, v in accelerator.unwrap_model(m).named_parameters() if v.requires_grad}
                       for name, m in zip(phase.modules, wrapped)}
            state = {**run, "key": key, "steps": steps, "seconds": run["seconds"] + time.perf_counter() - start, "modules": modules,
                     "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(),
                     "ema": phase.ema.state_dict() if phase.ema is not None else {},
                     "batch_rng": batch_rng.get_state(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)

        title = f"training {self.name} {phase.name}" + (f" (resumed at step {resumed_from})" if resumed_from else "")
        with progress_bar(title, steps - resumed_from, "step") as advance:
            while run["step"] < steps:
                idx = torch.randint(n, (phase.batch_size,), generator=batch_rng)
                flip = torch.rand(len(idx), generator=batch_rng) < 0.5 if self.config.hflip else torch.zeros(len(idx), dtype=torch.bool)
                with accelerator.accumulate(*wrapped):
                    with accelerator.autocast():
                        loss = phase.loss(idx, flip)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    lr_schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                run["running"] += loss.detach().item()
                run["count"] += 1
                if not accelerator.sync_gradients:
                    continue
                run["step"] += 1
                step = run["step"]
                if phase.ema is not None:
                    phase.ema.step(p for m in wrapped for p in m.parameters())
                advance(1)
                if step % log_every == 0 or step == steps:
                    run["history"]["step"].append(step)
                    run["history"]["loss"].append(run["running"] / run["count"])
                    accelerator.log({metric: run["running"] / run["count"]}, step=step)
                    run["running"], run["count"] = 0.0, 0
                if ckpt is not None and step % checkpoint_every == 0 and step < steps and accelerator.is_main_process:
                    save_checkpoint()
                faults.reached("step")
        seconds = time.perf_counter() - start
        for name, module in zip(phase.modules, wrapped):
            setattr(self, name, accelerator.unwrap_model(module).eval())
        if phase.ema is not None:
            phase.ema.copy_to(phase.parameters())
        return {**run["history"], "seconds": run["seconds"] + seconds, "images_per_s": (steps - resumed_from) * per_step / max(seconds, 1e-9),
                "resumed_from_step": resumed_from, "steps": steps, "n_train_images": n}

    def _restore(self, ckpt, key, steps, phase, wrapped, optimizer, lr_schedule, batch_rng, run, accelerator) -> None:
        """Continue from a checkpoint of this very phase (same settings and images); warn and start over otherwise."""
        state = load_checkpoint(ckpt)
        if state["key"] != key or state["steps"] != steps:
            log.warning("%s was made by another training phase, config or training set: ignored, training %s from step 0", ckpt, phase.name)
            return
        for name, module in zip(phase.modules, wrapped):
            module = accelerator.unwrap_model(module)
            saved = state["modules"].get(name, {})
            wanted = {k for k, v in module.named_parameters() if v.requires_grad}
            bad = module.load_state_dict(saved, strict=False).unexpected_keys
            if bad or wanted - set(saved):
                raise RetinaugError(f"{ckpt} does not fit the {name} network ({len(bad)} unexpected, {len(wanted - set(saved))} missing "
                                    "tensors); delete it to start over")
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        if phase.ema is not None:
            phase.ema.load_state_dict(state["ema"])
            phase.ema.to(self.device)  # the checkpoint is loaded onto the CPU
        if accelerator.is_main_process:  # other processes keep their fresh per-process streams
            batch_rng.set_state(state["batch_rng"])
            torch.set_rng_state(state["torch_rng"])
            if torch.cuda.is_available() and state["cuda_rng"]:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        run.update({k: state[k] for k in run})
        log.info("resuming %s %s training at step %d of %d from %s", self.name, phase.name, run["step"], steps, ckpt)


CHECKPOINT_KEYS = ("key", "steps", "step", "history", "running", "count", "seconds", "modules", "optimizer", "lr_schedule", "ema",
                   "batch_rng", "torch_rng", "cuda_rng")


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with torch's weights-only unpickler (tensors and plain containers only: a
    crafted file cannot run code); an unreadable or foreign file is a RetinaugError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetinaugError(f"cannot read the training checkpoint {path} ({type(exc).__name__}: {reason[:200]}); "
                            "delete it to train from step 0") from None
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise RetinaugError(f"{path} is not a retinaug training checkpoint (missing {', '.join(missing)}); delete it to train from step 0")
    return state


def training_settings(config: BaseModel, exclude: tuple[str, ...] = ()) -> dict:
    """The config fields that decide trained weights (for checkpoint keys)."""
    return config.model_dump(mode="json", exclude=set(NOT_WEIGHTS) | set(exclude))

