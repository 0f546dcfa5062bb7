"""The generator interface and the one training loop every generator shares.

A generator holds networks and a noise schedule (`build`, `save_weights`, `load_weights`), says how it is
trained as one or more `Phase`s (what to optimise, how to score a batch, for how long) and hands out a sampling
pipeline (`pipeline()`, see sampling.py). `fit` runs each phase through the same loop (`_train`): AdamW under
accelerate (devices, mixed precision, gradient accumulation, multi-GPU), optional EMA, a loss curve, resumable
checkpoints (checkpoint.py).
"""

from __future__ import annotations

import logging
import math
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
from ..progress import progress_bar
from ..tracking import start_tracking, tracker_args
from .checkpoint import CHECKPOINT, TrainState, data_key, keep_phase, kept_history, phase_key, resume, save_checkpoint
from .conditioning import SIDES, Conditions
from .sampling import SamplingPipeline, to_unit

log = logging.getLogger("retinaug.generate")
Nets = dict[str, torch.nn.Module]


@dataclass
class Phase:
    """One optimisation run of the shared loop: what to train, how to score a batch, for how long.

    `loss(nets, indices, flips)` scores a batch of training images (their rows in `Generator.data`, and which of
    them are mirrored) through `nets`: `modules` as accelerate prepared them (call these, not the generator's
    attributes: under DDP only the wrapper syncs gradients). `settings` is what decides the phase's result besides the
    training images: its checkpoint is only resumed, and a finished phase only reused, when they are unchanged.
    What only ldm needs: `start` runs before the first step (also when resuming), `finish` after the last (it returns
    extra history entries), and a phase that is not the last one and has `save` is kept in OUT/<name>/ when it
    finishes, so a later run `load`s it instead of training it again."""

    name: str
    modules: Nets  # the generator's trainable networks, by name
    loss: Callable[[Nets, torch.Tensor, torch.Tensor], torch.Tensor]
    settings: dict
    steps: int
    epochs: float | None  # when set, the length instead of `steps`
    batch_size: int
    lr: float
    ema: EMAModel | None = None  # of every parameter of `modules`, copied in when the phase ends
    start: Callable[[], None] | None = None
    finish: Callable[[Path | None], dict] | None = None
    save: Callable[[Path], None] | None = None
    load: Callable[[Path], None] | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters()]


class TrainSet:
    """The TRAIN images (uint8 on the CPU, decoded once) with their condition indices."""

    def __init__(self, df: pd.DataFrame, size: int, conditions: Conditions):
        if conditions.eyes and (unknown := int((~df["eye"].isin(SIDES)).sum())):
            raise RetinaugError(
                f"condition_eye needs the eye side of every TRAIN image: {unknown} of {len(df)} have eye "
                f"{', '.join(sorted(set(df['eye']) - set(SIDES)))}; set condition_eye: false"
            )
        self.conditions = conditions
        self.images = torch.from_numpy(image_cache(df, size).rows(df))  # (N, S, S, 3)
        self.cond = torch.tensor(conditions.index(list(df["label"]), list(df["eye"])))

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, idx: torch.Tensor, flip: torch.Tensor, device) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1], mirrored where `flip`."""
        x = to_unit(self.images[idx], device)
        return torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)

    def condition(self, idx: torch.Tensor, flip: torch.Tensor, device) -> torch.Tensor:
        """Condition indices; a mirrored image of a left eye looks like a right eye."""
        cond = self.cond[idx]
        return torch.where(flip, self.conditions.flipped(cond), cond).to(device)


def diffusion_loss(
    pred: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule, snr_gamma: float | None
) -> torch.Tensor:
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
    weight = (
        torch.clamp(snr, max=snr_gamma)
        / {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}[kind]
    )
    per_image = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_image * weight).mean()


def condition_dropout(cond: torch.Tensor, p: float, null: int) -> torch.Tensor:
    """Replace conditions by the null one with probability p (what classifier-free guidance needs)."""
    drop = torch.rand(len(cond), device=cond.device) < p
    return torch.where(drop, torch.full_like(cond, null), cond)


class Generator:
    """Base class; retinaug's own are listed in `registry.BUILTIN`, a plugin's registered with `@register_generator(name)`."""

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
    def fit(
        self,
        train_df: pd.DataFrame,
        classes: list[str],
        out: Path | None = None,
        checkpoint_every: int = 500,
        holdout: pd.DataFrame | None = None,
    ) -> dict:
        """Learn `classes` from the rows of `train_df` (TRAIN-split real images of those classes); `holdout` (val
        images) is only read by generators that report a held-out score (ldm's reconstruction).

        Every `checkpoint_every` optimiser steps (0: never) the training state goes to OUT/train_state.pt: an
        interrupted fit with the same settings and images continues from there and, on one process, ends with
        the same weights as an uninterrupted one. Returns the last phase's history, earlier phases' under their name."""
        cfg = self.config
        self.classes = list(classes)
        accelerator = new_accelerator(
            mixed_precision=resolve_precision(cfg.mixed_precision, default_device()),
            gradient_accumulation_steps=cfg.grad_accum,
            **tracker_args(cfg.tracker, out),
        )
        start_tracking(accelerator, cfg.tracker, self.name, cfg, out)
        self.device = accelerator.device
        set_seed(cfg.seed)  # identical initialisation on every process
        self.build()
        self.data = TrainSet(train_df, cfg.size, self.conditions)
        self.holdout = holdout
        key = data_key(self.name, self.classes, train_df)
        ckpt = Path(out) / CHECKPOINT if out is not None and checkpoint_every > 0 else None
        phases, history = self.phases(), {}
        for i, phase in enumerate(phases):
            key = phase_key(key, phase.name, phase.settings)
            kept = (
                Path(out) / phase.name if out is not None and phase.save is not None and i < len(phases) - 1 else None
            )
            if kept is not None and (record := kept_history(kept, key)) is not None:
                phase.load(kept)
                history[phase.name] = record
                log.info("%s phase already trained in %s: reused", phase.name, kept)
                continue
            # different batches/noise per process; wrapped into the range numpy takes (unchanged below it)
            set_seed((cfg.seed + 1009 * i + accelerator.process_index) % (SEED_MAX + 1))
            if phase.start is not None:
                phase.start()
            metric = "loss" if i == len(phases) - 1 else f"{phase.name}_loss"  # the tracker's name for the curve
            history[phase.name] = self._train(
                phase, accelerator, key, ckpt, checkpoint_every, seed=cfg.seed + 1009 * i, metric=metric
            )
            if phase.finish is not None:
                history[phase.name].update(
                    phase.finish(Path(out) if out is not None and accelerator.is_main_process else None)
                )
            if kept is not None and accelerator.is_main_process:
                keep_phase(kept, key, history[phase.name], phase.save)
            if ckpt is not None and accelerator.is_main_process:
                ckpt.unlink(missing_ok=True)  # after the phase is kept: a kill in between loses nothing
            accelerator.wait_for_everyone()
        accelerator.end_training()
        last = history.pop(phases[-1].name)
        return {
            **last,
            **history,
            "precision": accelerator.mixed_precision,
            "is_main_process": accelerator.is_main_process,
        }

    def _train(
        self,
        phase: Phase,
        accelerator: Accelerator,
        key: str,
        ckpt: Path | None,
        checkpoint_every: int,
        seed: int,
        metric: str,
    ) -> dict:
        """One phase: AdamW under accelerate (accumulation, clipping, warm-up), resumed from `ckpt` when it is this
        phase's; each step draws a batch, steps the optimiser and the EMA, logs the loss now and then and saves a
        checkpoint every `checkpoint_every` steps. Returns the phase's history."""
        cfg, n = self.config, len(self.data)
        per_step = phase.batch_size * accelerator.gradient_accumulation_steps * accelerator.num_processes
        steps = phase.steps if phase.epochs is None else max(1, math.ceil(phase.epochs * n / per_step))
        params = [p for p in phase.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=cfg.weight_decay, fused=True)  # as classify's
        lr_schedule = get_scheduler(
            "constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps * accelerator.num_processes
        )
        *wrapped, optimizer, lr_schedule = accelerator.prepare(*phase.modules.values(), optimizer, lr_schedule)
        nets = dict(zip(phase.modules, wrapped))
        for net in wrapped:
            net.train()
        state = TrainState(
            key,
            steps,
            phase.modules,
            optimizer,
            lr_schedule,
            phase.ema,
            main_process=accelerator.is_main_process,
            batch_rng=torch.Generator().manual_seed(seed + 7919 * accelerator.process_index),
        )
        if ckpt is not None:
            resume(ckpt, state, self.name, phase.name)
        resumed_from, log_every = state.step, max(1, steps // 200)
        state.started = time.perf_counter()  # this run's training time starts after the checkpoint is loaded
        title = f"training {self.name} {phase.name}" + (f" (resumed at step {resumed_from})" if resumed_from else "")
        with progress_bar(title, steps - resumed_from, "step") as advance:
            while state.step < steps:
                idx = torch.randint(n, (phase.batch_size,), generator=state.batch_rng)
                flip = (
                    torch.rand(len(idx), generator=state.batch_rng) < 0.5
                    if cfg.hflip
                    else torch.zeros(len(idx), dtype=torch.bool)
                )
                with accelerator.accumulate(*wrapped):
                    with accelerator.autocast():
                        loss = phase.loss(nets, idx, flip)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    lr_schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                state.running += loss.detach().item()
                state.count += 1
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                if phase.ema is not None:
                    phase.ema.step(phase.parameters())
                advance(1)
                if state.step % log_every == 0 or state.step == steps:
                    mean = state.running / state.count
                    state.history["step"].append(state.step)
                    state.history["loss"].append(mean)
                    accelerator.log({metric: mean}, step=state.step)
                    state.running, state.count = 0.0, 0
                if (
                    ckpt is not None
                    and state.step % checkpoint_every == 0
                    and state.step < steps
                    and accelerator.is_main_process
                ):
                    save_checkpoint(ckpt, state)
                faults.reached("step")
        seconds = state.elapsed()
        for module in phase.modules.values():
            module.eval()
        if phase.ema is not None:
            phase.ema.copy_to(phase.parameters())
        return {
            **state.history,
            "seconds": state.seconds + seconds,
            "images_per_s": (steps - resumed_from) * per_step / max(seconds, 1e-9),
            "resumed_from_step": resumed_from,
            "steps": steps,
            "n_train_images": n,
        }
