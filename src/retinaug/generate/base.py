"""The generator interface (model + sampler + trainer) and the one training loop both generators share.

A generator builds its networks (`build`), says what to optimise (`trainable`) and how to score a batch
(`training_loss`); `fit` runs AdamW under accelerate (devices, mixed precision, gradient accumulation,
multi-GPU) and records the loss curve. Sampling takes one seed per image, so a batch of images is the
same whatever the batch size.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler
from diffusers.optimization import get_scheduler
from pydantic import BaseModel

from ..cache import image_cache
from ..io import atomic_path, sha256_text
from ..tracking import hparams, tracker_args
from ..errors import RetinaugError
from ..hardware import default_device, new_accelerator, resolve_precision
from ..progress import progress_bar

SAMPLERS = {
    "dpm": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "pndm": PNDMScheduler,
}
log = logging.getLogger("retinaug.generate")
CHECKPOINT = "train_state.pt"
# config fields that only matter at sampling time or for logging: a checkpoint stays valid when they change
NOT_TRAINING = {"scheduler", "sample_steps", "guidance_scale", "samples_per_class", "tracker", "mode", "strength"}
# generate() option name -> config field name
SAMPLING_FIELDS = {"steps": "sample_steps", "guidance": "guidance_scale", "scheduler": "scheduler", "mode": "mode", "strength": "strength"}


def make_sampler(name: str, train_scheduler_config) -> object:
    """A deterministic multistep sampler built from the training noise schedule's config."""
    return SAMPLERS[name].from_config(train_scheduler_config)


def seed_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU torch.Generator per image: the noise of image k depends on its seed only."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Generator:
    """Base class; subclasses are registered with `@register_generator(name)`."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel):
        self.config = config
        self.classes: list[str] = []
        self.device = torch.device("cpu")

    # --- what a subclass provides -------------------------------------------------------------------
    def check(self) -> None:
        """Refuse unusable inputs (e.g. an incomplete model folder) before any data is loaded."""

    def build(self) -> None:
        """Create (or load) the networks for `self.classes`."""
        raise NotImplementedError

    def trainable(self) -> dict[str, torch.nn.Module]:
        """Modules with trainable parameters, by attribute name (they get wrapped by accelerate)."""
        raise NotImplementedError

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Diffusion loss of one batch of images in [-1, 1] (B, 3, S, S) and class indices (B,)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook after each optimiser step (EMA update)."""

    def finish_training(self) -> None:
        """Hook after the last step (copy EMA weights in)."""

    def save_weights(self, out: Path) -> None:
        raise NotImplementedError

    def load_weights(self, path: Path) -> None:
        raise NotImplementedError

    def sample(self, labels: list[str], seeds: list[int], parents: list[str] | None = None) -> np.ndarray:
        """(B, S, S, 3) uint8 images, image k from seeds[k] (and parents[k] for img2img)."""
        raise NotImplementedError

    def provenance(self, label: str) -> dict:
        """The per-image columns recorded in the synthetic manifest (prompt, steps, guidance, strength)."""
        raise NotImplementedError

    @property
    def needs_parent(self) -> bool:
        return False

    def to(self, device: torch.device | str) -> Generator:
        self.device = torch.device(device)
        return self

    # --- shared behaviour ----------------------------------------------------------------------------
    def set_sampling(self, **overrides) -> None:
        """Override sampling settings (steps, guidance, scheduler, mode, strength); None keeps the config's."""
        update = {}
        for key, value in overrides.items():
            if value is None:
                continue
            field = SAMPLING_FIELDS[key]
            if field not in type(self.config).model_fields:
                raise RetinaugError(f"option {key!r} does not apply to the {self.name} generator")
            update[field] = value
        self.config = type(self.config)(**{**self.config.model_dump(), **update})

    def extra_state(self) -> dict:
        """Training state beyond the trainable modules (e.g. an EMA copy), saved in checkpoints."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    def _checkpoint_key(self, train_df: pd.DataFrame) -> str:
        cfg = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in NOT_TRAINING}
        rows = "\n".join(sorted(train_df["path"].astype(str) + "|" + train_df["label"].astype(str)))
        return sha256_text(json.dumps({"method": self.name, "classes": self.classes, "config": cfg, "rows": rows}, sort_keys=True))

    def fit(self, train_df: pd.DataFrame, out: Path | None = None, checkpoint_every: int = 500) -> dict:
        """Train on the rows of `train_df` (already restricted to TRAIN-split real images of `self.classes`).

        `out` is where an optional tracker writes (OUT/tracking) and where, every `checkpoint_every` optimizer
        steps (0: never), the training state is saved (OUT/train_state.pt, loaded with weights_only=True): an
        interrupted fit with the same config and images continues from there, and on one process ends with the
        same weights as an uninterrupted one. The checkpoint is deleted when training finishes."""
        cfg = self.config
        accelerator = new_accelerator(
            mixed_precision=resolve_precision(cfg.mixed_precision, default_device()), gradient_accumulation_steps=cfg.grad_accum, **tracker_args(cfg.tracker, out)
        )
        if cfg.tracker != "none":
            accelerator.init_trackers(self.name, config=hparams(cfg))
        self.device = accelerator.device
        set_seed(cfg.seed)  # identical initialisation on every process
        self.build()
        cache = image_cache(train_df, cfg.size)
        images = torch.from_numpy(cache.rows(train_df))  # (N, S, S, 3) uint8, stays on CPU
        labels = torch.tensor([self.classes.index(c) for c in train_df["label"]])
        n = len(images)
        per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
        steps = cfg.steps if cfg.epochs is None else max(1, math.ceil(cfg.epochs * n / per_step))

        modules = self.trainable()
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        lr_schedule = get_scheduler(
            "constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps * accelerator.num_processes
        )
        prepared = accelerator.prepare(*modules.values(), optimizer, lr_schedule)
        wrapped, optimizer, lr_schedule = prepared[:-2], prepared[-2], prepared[-1]
        for name, module in zip(modules, wrapped):
            setattr(self, name, module)
        set_seed(cfg.seed + accelerator.process_index)  # different batches/noise per process
        batch_rng = torch.Generator().manual_seed(cfg.seed + 7919 * accelerator.process_index)

        history: dict = {"step": [], "loss": []}
        log_every = max(1, steps // 200)
        running, count, step, seconds_before = 0.0, 0, 0, 0.0
        ckpt = Path(out) / CHECKPOINT if out is not None and checkpoint_every > 0 else None
        key = self._checkpoint_key(train_df) if ckpt else ""
        if ckpt is not None and ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if state.get("key") != key or state.get("steps") != steps:
                log.warning("%s was made with another config or training set: ignored, training from step 0", ckpt)
            else:
                for name, module in zip(modules, wrapped):
                    bad = accelerator.unwrap_model(module).load_state_dict(state["modules"][name], strict=False).unexpected_keys
                    if bad:
                        raise RetinaugError(f"{ckpt} does not fit the {name} network ({len(bad)} unexpected keys); delete it to start over")
                optimizer.load_state_dict(state["optimizer"])
                lr_schedule.load_state_dict(state["lr_schedule"])
                self.load_extra_state(state["extra"])
                if accelerator.is_main_process:  # other processes keep their fresh per-process streams
                    batch_rng.set_state(state["batch_rng"])
                    torch.set_rng_state(state["torch_rng"])
                    if torch.cuda.is_available() and state.get("cuda_rng"):
                        torch.cuda.set_rng_state_all(state["cuda_rng"])
                step, history, seconds_before = state["step"], state["history"], state["seconds"]
                running, count = state["running"], state["count"]
                log.info("resuming %s training at step %d of %d from %s", self.name, step, steps, ckpt)
        resumed_from = step
        start = time.perf_counter()

        def save_checkpoint() -> None:
            if not accelerator.is_main_process:
                return
            state = {
                "key": key, "steps": steps, "step": step, "history": history, "running": running, "count": count,
                "seconds": seconds_before + time.perf_counter() - start,
                "modules": {name: {k: v.detach().cpu() for k, v in accelerator.unwrap_model(m).named_parameters() if v.requires_grad}
                            for name, m in zip(modules, wrapped)},
                "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(), "extra": self.extra_state(),
                "batch_rng": batch_rng.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)

        with progress_bar(f"training {self.name}" + (f" (resumed at step {step})" if step else ""), steps - step, "step") as advance:
            while step < steps:
                idx = torch.randint(n, (cfg.batch_size,), generator=batch_rng)
                x = images[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1).to(accelerator.device)
                if cfg.hflip:
                    flip = torch.rand(len(x), generator=batch_rng) < 0.5
                    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
                with accelerator.accumulate(*wrapped):
                    with accelerator.autocast():
                        loss = self.training_loss(x, labels[idx].to(accelerator.device))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    lr_schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                running += loss.detach().item()
                count += 1
                if accelerator.sync_gradients:
                    step += 1
                    self.after_step()
                    advance(1)
                    if step % log_every == 0 or step == steps:
                        history["step"].append(step)
                        history["loss"].append(running / count)
                        accelerator.log({"loss": running / count}, step=step)
                        running, count = 0.0, 0
                    if ckpt is not None and step % checkpoint_every == 0 and step < steps:
                        save_checkpoint()
        seconds = time.perf_counter() - start
        accelerator.wait_for_everyone()
        if ckpt is not None and accelerator.is_main_process:
            ckpt.unlink(missing_ok=True)
        accelerator.end_training()
        for name, module in zip(modules, wrapped):
            setattr(self, name, accelerator.unwrap_model(module))
        self.finish_training()
        history.update(
            seconds=seconds_before + seconds,
            images_per_s=(steps - resumed_from) * per_step / seconds,
            resumed_from_step=resumed_from,
            steps=steps,
            n_train_images=n,
            precision=accelerator.mixed_precision,
            is_main_process=accelerator.is_main_process,
        )
        return history
