"""Fit a classifier on the train rows, select the epoch with the best validation macro-F1, save it.

The test split is never read here: `train()` passes only the train (+ extra) and val rows to `fit()`."""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.metrics import f1_score, recall_score
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup
from timm.data.mixup import mixup_target
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from .. import faults
from ..classes import CLASSES, resolve_task
from ..errors import RetinaugError
from ..hardware import default_device, new_accelerator, resolve_precision
from ..io import sha256_file, sha256_text
from ..manifest import accepted_mask, load_manifest
from ..progress import progress_bar
from ..tracking import start_tracking, tracker_args
from .config import RowUse, TrainConfig
from .data import Augment, Replacement, TrainingRows, class_weights, load_images, normalise, rows_hash, train_loader
from .label import soft_targets
from .models import WEIGHTS, class_probs, create_model, read_safetensors, save_classifier
from .weights import init_file, recorded_sha256

log = logging.getLogger("retinaug.classify")
VAL_RECALL = "val_recall_"  # a history row's recall of one class on the validation rows: VAL_RECALL + class code


def make_accelerator(config: TrainConfig, out: Path | None = None) -> Accelerator:
    precision = resolve_precision(config.mixed_precision, default_device(config.cpu), config.size)
    return new_accelerator(mixed_precision=precision, cpu=config.cpu, **tracker_args(config.tracker, out))


def task_rows(df: pd.DataFrame, classes: tuple[str, ...], what: str) -> pd.DataFrame:
    """Keep the task's classes; say how many rows of which classes were dropped (never silently)."""
    keep = df["label"].isin(classes)
    if (~keep).any():
        dropped = df.loc[~keep, "label"].value_counts().to_dict()
        log.info("%s: dropped %d row(s) outside task %s: %s", what, int((~keep).sum()), ",".join(classes), dropped)
    return df[keep]


def _labels(df: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return df["label"].map(index).to_numpy(dtype=int)


@torch.inference_mode()
def validate(
    model,
    pixels: torch.Tensor,
    y: np.ndarray,
    classes: tuple[str, ...],
    mean,
    std,
    accelerator,
    batch_size: int,
    tta: bool = False,
) -> dict:
    """Validation loss, macro-F1, accuracy and each present class's recall (VAL_RECALL + code: what a scenario's
    `allocation: need` shares its synthetic rows by)."""
    model.eval()
    logits = []
    for start in range(0, len(pixels), batch_size):
        x = normalise(pixels[start : start + batch_size].to(accelerator.device), mean, std)
        with accelerator.autocast():
            # with TTA the log of the averaged probabilities: cross-entropy of it is the averaged prediction's loss
            out = class_probs(model, x, tta=True).clamp_min(torch.finfo(torch.float32).tiny).log() if tta else model(x)
            logits.append(out.float().cpu())
    logits_t = torch.cat(logits)
    pred = logits_t.argmax(1).numpy()
    present = np.unique(y)
    return {
        "val_loss": float(torch.nn.functional.cross_entropy(logits_t, torch.tensor(y)).item()),
        "val_macro_f1": float(f1_score(y, pred, average="macro", labels=present, zero_division=0)),
        "val_accuracy": float((pred == y).mean()),
        **{
            VAL_RECALL + classes[i]: float(r)
            for i, r in zip(present, recall_score(y, pred, labels=present, average=None))
        },
    }


def _scheduler(optimizer, config: TrainConfig, steps: int):
    if config.schedule == "onecycle":
        warmup = 0.2 if 0.2 * steps != 1 else 0.4  # torch divides by (pct_start x steps - 1)
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks if len(peaks) > 1 else config.lr, total_steps=steps, pct_start=warmup
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def input_stats(model: torch.nn.Module) -> tuple[list[float], list[float]]:
    """The per-channel mean and std the backbone's weights expect (timm's pretrained config: ImageNet's for most,
    0.5 for the tf_efficientnet_lite family, trained on [-1, 1] pixels)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return list(cfg.get("mean", IMAGENET_DEFAULT_MEAN)), list(cfg.get("std", IMAGENET_DEFAULT_STD))


def param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW parameter groups: the backbone at `backbone_lr` x the head's learning rate (one group when equal)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    if config.backbone_lr == 1.0:
        return [{"params": list(model.parameters()), "lr": config.lr}]
    return [
        {"params": [p for p in model.parameters() if id(p) not in head], "lr": config.lr * config.backbone_lr},
        {"params": [p for p in model.parameters() if id(p) in head], "lr": config.lr},
    ]


def freeze_backbone(model: torch.nn.Module, frozen: bool) -> None:
    """Train the head only (`frozen`): no gradients for the backbone and its batch-norm statistics kept."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(not frozen)
    if frozen:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _mixer(config: TrainConfig, n_classes: int) -> Mixup | None:
    """timm's batch Mixup/CutMix, with the label smoothing folded into its soft targets (None when both are off)."""
    if not (config.mixup or config.cutmix):
        return None
    return Mixup(
        mixup_alpha=config.mixup,
        cutmix_alpha=config.cutmix,
        label_smoothing=config.label_smoothing,
        num_classes=n_classes,
    )


def row_targets(train_df: pd.DataFrame, labels: np.ndarray, classes: tuple[str, ...], smoothing: float) -> torch.Tensor:
    """(N, classes) soft targets for `soft_labels`: the labeler's probabilities of each synthetic row over the task's
    classes (renormalised), the other rows' labels one-hot with the label smoothing (timm's, as for mixup)."""
    targets = mixup_target(torch.tensor(labels), len(classes), 1.0, smoothing)
    synthetic = (train_df["origin"] == "synthetic").to_numpy()
    targets[torch.tensor(synthetic)] = torch.from_numpy(soft_targets(train_df[synthetic], classes))
    return targets


def row_weights(train_df: pd.DataFrame, use: RowUse, device: torch.device) -> torch.Tensor | None:
    """Each row's loss weight (synthetic_weight, traditional_weight, real rows 1); None when every row weighs 1."""
    by_origin = {"synthetic": use.synthetic_weight, "traditional": use.traditional_weight}
    weights = train_df["origin"].map(lambda o: by_origin.get(o, 1.0)).to_numpy(dtype=np.float32)
    return None if (weights == 1).all() else torch.tensor(weights, device=device)


def _loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    row_weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    smoothing: float,
) -> torch.Tensor:
    """Cross-entropy (torch's, with its class weights and label smoothing). Row weights make it the weighted mean of
    the per-row losses, normalised as torch normalises its own mean (by the rows' class weights for class-index
    targets, by the row count for probability targets), each row counted `row_weight` times: a row of weight 0 moves
    nothing, and a batch of only such rows has a zero loss. Without row weights it is torch's own mean, so a fit
    whose rows all weigh 1 computes exactly the loss of earlier versions."""
    if row_weight is None:
        return torch.nn.functional.cross_entropy(logits, target, weight=class_weight, label_smoothing=smoothing)
    per_row = torch.nn.functional.cross_entropy(
        logits, target, weight=class_weight, label_smoothing=smoothing, reduction="none"
    )
    norm = row_weight * class_weight[target] if class_weight is not None and target.ndim == 1 else row_weight
    return (per_row * row_weight).sum() / norm.sum().clamp_min(torch.finfo(norm.dtype).tiny)


@dataclass
class TrainState:
    """What every epoch of a fit shares, built once by `_train_state`: the prepared model, optimiser, schedule and
    loader, the batch's preprocessing, and each row's label, soft target and loss weight, looked up by the row a
    batch shows."""

    config: TrainConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    dataset: TrainingRows  # the loader's: the replacement sets the row each position shows
    replacement: Replacement | None
    ema: ModelEmaV3 | None  # validated and saved instead of the raw weights
    augment: Augment | None
    mixer: Mixup | None
    mean: torch.Tensor  # (1, 3, 1, 1): the backbone's input statistics
    std: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None  # soft_labels: the rows' class probabilities
    weights: torch.Tensor | None  # None when every row weighs 1
    class_weight: torch.Tensor | None
    smoothing: float  # the loss's label smoothing: 0 when mixed or soft targets already carry it
    step: int = 0  # optimiser steps so far: the EMA's decay warms up over them

    @property
    def scored(self) -> torch.nn.Module:
        """The weights validated and saved: the EMA copy when one is kept."""
        return self.ema.module if self.ema else self.model


def _train_state(
    config: TrainConfig,
    classes: tuple[str, ...],
    train_df: pd.DataFrame,
    y_train: np.ndarray,
    train_pixels: np.ndarray,
    accelerator: Accelerator,
    use: RowUse,
    start: Path | None,
) -> TrainState:
    """Build the loop's parts in the order the seed's draws expect (the model initialises after the loader's and the
    augmentation's generators are seeded)."""
    # replace: the epoch's positions are the non-synthetic rows, each drawn anew as itself or a synthetic stand-in
    replacement = (
        Replacement(train_df, use.replace_probability, config.seed) if use.replace_probability is not None else None
    )
    positions = replacement.positions if replacement else np.arange(len(train_df))
    dataset = TrainingRows(train_pixels, y_train, positions)
    augment = Augment(config, config.seed) if config.augment else None
    loader = train_loader(dataset, config.batch_size, config.imbalance, len(classes), config.seed, config.num_workers)
    model = create_model(config, len(classes))
    if start is not None:
        model.load_state_dict(read_safetensors(Path(start)))
        log.info("continuing from %s (head included)", start)
    model = model.to(memory_format=torch.channels_last)
    # fused: one vectorised pass over every parameter (3.4x faster steps for resnet10t on a CPU; BENCHMARKS.md)
    optimizer = torch.optim.AdamW(
        param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )
    scheduler = _scheduler(optimizer, config, config.epochs * len(loader))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    # the EMA copy is validated and saved instead of the raw weights; decay warms up, so short CPU fits do not
    # average in their random initialisation
    ema = (
        ModelEmaV3(accelerator.unwrap_model(model), decay=config.ema_decay, use_warmup=True)
        if config.ema_decay
        else None
    )
    mixer = _mixer(config, len(classes))
    device = accelerator.device
    class_weight = None
    if config.imbalance == "class-weights":
        class_weight = torch.tensor(
            class_weights(dataset.labels.numpy(), len(classes)), dtype=torch.float32, device=device
        )
    labels = torch.tensor(y_train, device=device)
    targets = row_targets(train_df, y_train, classes, config.label_smoothing).to(device) if use.soft_labels else None
    weights = row_weights(train_df, use, device)
    # mixed and soft targets already carry the label smoothing; cross-entropy takes them as class probabilities
    smoothing = 0.0 if mixer or use.soft_labels else config.label_smoothing
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in input_stats(accelerator.unwrap_model(model)))
    return TrainState(
        config=config,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        dataset=dataset,
        replacement=replacement,
        ema=ema,
        augment=augment,
        mixer=mixer,
        mean=mean,
        std=std,
        labels=labels,
        targets=targets,
        weights=weights,
        class_weight=class_weight,
        smoothing=smoothing,
    )


def train_one_epoch(state: TrainState, epoch: int) -> dict:
    """One pass over the loader: each batch augmented, normalised and mixed, its loss (under autocast) propagated
    back, then one optimiser, schedule and EMA step. Returns the history row's training part: the mean loss per image
    and, when replacing, how many positions showed a synthetic stand-in."""
    config, model, accelerator = state.config, state.model, state.accelerator
    model.train()
    if config.freeze_epochs:
        freeze_backbone(accelerator.unwrap_model(model), epoch <= config.freeze_epochs)
    if state.replacement:
        state.dataset.shown = state.replacement.draw(epoch)
    total, seen = 0.0, 0
    with progress_bar(f"epoch {epoch}/{config.epochs}", len(state.dataset), "img") as advance:
        for x, rows in state.loader:
            x, y = normalise(state.augment(x) if state.augment else x, state.mean, state.std), state.labels[rows]
            target = y if state.targets is None else state.targets[rows]
            # timm mixes pairs: an odd batch (only ever a dataset smaller than one batch) gets smoothed targets
            if state.mixer:
                mixer = state.mixer
                x, target = (
                    mixer(x, y)
                    if len(y) % 2 == 0
                    else (x, mixup_target(y, mixer.num_classes, 1.0, mixer.label_smoothing))
                )
            with accelerator.autocast():
                loss = _loss(
                    model(x),
                    target,
                    None if state.weights is None else state.weights[rows],
                    state.class_weight,
                    state.smoothing,
                )
            state.optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            state.optimizer.step()
            state.scheduler.step()
            state.step += 1
            if state.ema:
                state.ema.update(accelerator.unwrap_model(model), step=state.step)
            total += float(loss.item()) * len(y)
            seen += len(y)
            advance(len(y))
    row = {"train_loss": total / max(seen, 1)}
    if state.replacement:  # positions shown as a synthetic stand-in this epoch
        row["replaced"] = int((state.dataset.shown != state.replacement.positions).sum())
    return row


def _fit_rows(
    train_df: pd.DataFrame, val_df: pd.DataFrame, config: TrainConfig, classes: tuple[str, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The task's train and val rows (train renumbered from 0: rows are looked up by position); refuses a fit that
    cannot select a model or learn every class."""
    train_df = task_rows(train_df, classes, "train")
    val_df = task_rows(val_df, classes, "val")
    if len(train_df) == 0 or len(val_df) == 0:
        raise RetinaugError(
            f"need train and val images of task {config.task}: got {len(train_df)} train, {len(val_df)} val"
        )
    absent = [c for c in classes if c not in set(train_df["label"])]
    if absent:
        raise RetinaugError(f"class(es) {', '.join(absent)} have no training image; choose a task without them")
    if config.init == "all-classes":
        raise RetinaugError(
            "init: all-classes needs the whole train split: call train(), or warm_start() and pass its path as init"
        )
    return train_df.reset_index(drop=True), val_df


def model_meta(
    model: torch.nn.Module,
    config: TrainConfig,
    classes: tuple[str, ...],
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    use: RowUse,
    start: Path | None,
    history: list[dict],
) -> dict:
    """model.json's record of a fit, its timings aside: what rebuilds and feeds the model (classes, size, input
    statistics, backbone, config), the rows and row use it learnt from, and its epochs with the one selected."""
    mean, std = input_stats(model)
    best = max(history, key=lambda r: (r["val_macro_f1"], -r["val_loss"]))
    return {
        "classes": list(classes),
        "size": config.size,
        "mean": mean,
        "std": std,
        "backbone": config.backbone,
        "config": config.model_dump(mode="json"),
        "n_train": int(len(train_df)),
        "n_val": int(len(val_df)),
        "train_counts": {c: int((train_df["label"] == c).sum()) for c in classes},
        "train_origins": {str(k): int(v) for k, v in train_df["origin"].value_counts().items()},
        "row_use": use.model_dump(),
        **({"start": str(start)} if start is not None else {}),
        "best_epoch": best["epoch"],
        "best_val_macro_f1": best["val_macro_f1"],
        "history": history,
    }


def _epoch(
    state: TrainState, epoch: int, val_images: torch.Tensor, y_val: np.ndarray, classes: tuple[str, ...]
) -> dict:
    """One epoch's history row: train, then validate the weights that would be saved."""
    t_epoch = time.perf_counter()
    row = {"epoch": epoch, **train_one_epoch(state, epoch)}
    cfg = state.config
    row.update(
        validate(
            state.scored,
            val_images,
            y_val,
            classes,
            state.mean,
            state.std,
            state.accelerator,
            2 * cfg.batch_size,
            cfg.tta,
        )
    )
    row["seconds"] = round(time.perf_counter() - t_epoch, 3)
    return row


def _timings(t0: float, cpu0: float, t_data: float, history: list[dict], accelerator: Accelerator) -> dict:
    """model.json's timings of a fit that started at `t0` (wall) and `cpu0` (this process's CPU seconds)."""
    return {
        "load_images_s": round(t_data, 3),
        "train_s": round(sum(r["seconds"] for r in history), 3),
        "total_s": round(time.perf_counter() - t0, 3),
        # CPU seconds of this process: a contention-robust cost when other jobs share the cores
        "cpu_s": round(time.process_time() - cpu0, 3),
        "threads": torch.get_num_threads(),
        "device": str(accelerator.device),
        "precision": accelerator.mixed_precision,
    }


def fit(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    config: TrainConfig,
    out: Path,
    use: RowUse = RowUse(),
    start: Path | None = None,
) -> dict:
    """Train on `train_df`, early-stop on `val_df` macro-F1, save out/model.safetensors + out/model.json.

    `use`: how the synthetic and traditional rows train (loss weights, soft labels, replacing real rows; default:
    as real rows). `start`: a classifier's weights of the same task to continue from, head included (the fine-tune
    phase of a scenario's `synthetic_use: pretrain`). Rows outside the task's classes are dropped with a logged
    count. Returns the model.json dict."""
    if problem := use.problem(config):
        raise RetinaugError(problem)
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(out)
    classes = resolve_task(config.task)
    train_df, val_df = _fit_rows(train_df, val_df, config, classes)
    set_seed(config.seed)
    accelerator = make_accelerator(config, out)
    start_tracking(accelerator, config.tracker, "classifier", config, out)
    y_train, y_val = _labels(train_df, classes), _labels(val_df, classes)
    train_pixels, val_pixels = load_images(train_df, config.size), load_images(val_df, config.size)
    t_data = time.perf_counter() - t0
    state = _train_state(config, classes, train_df, y_train, train_pixels, accelerator, use, start)
    val_images = torch.from_numpy(val_pixels).permute(0, 3, 1, 2)

    log.info(
        "training %s at %dpx on %d images (%d val), classes %s, device %s (%s), imbalance=%s, augment=%s",
        *(config.backbone, config.size, len(train_df), len(val_df), ",".join(classes)),
        *(accelerator.device, accelerator.mixed_precision, config.imbalance, config.augment),
    )
    history: list[dict] = []
    best, best_state, stale = (-1.0, 0.0), None, 0
    for epoch in range(1, config.epochs + 1):
        row = _epoch(state, epoch, val_images, y_val, classes)
        history.append(row)
        accelerator.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        # ties in macro-F1 (common on small val sets) go to the lower validation loss
        improved = (row["val_macro_f1"], -row["val_loss"]) > best
        if improved:
            best, stale = (row["val_macro_f1"], -row["val_loss"]), 0
            best_state = copy.deepcopy(accelerator.unwrap_model(state.scored).state_dict())
        else:
            stale += 1
        log.info(
            "epoch %3d  loss %.4f  val loss %.4f  val macro-F1 %.4f  val acc %.4f  %.1fs%s",
            *(row[k] for k in ("epoch", "train_loss", "val_loss", "val_macro_f1", "val_accuracy", "seconds")),
            "  *" if improved else "",
        )
        faults.reached("epoch")
        if stale >= config.patience:
            log.info("early stop: no better val macro-F1 for %d epoch(s)", config.patience)
            break

    accelerator.end_training()
    final = accelerator.unwrap_model(state.model)
    final.load_state_dict(best_state)
    meta = model_meta(final, config, classes, train_df, val_df, use, start, history)
    meta["timings"] = _timings(t0, cpu0, t_data, history, accelerator)
    save_classifier(final, meta, out, train_df)
    log.info(
        "best epoch %d (val macro-F1 %.4f); saved %s/model.safetensors in %.1fs",
        meta["best_epoch"],
        meta["best_val_macro_f1"],
        out,
        meta["timings"]["total_s"],
    )
    return meta


def _extra_rows(path: Path) -> pd.DataFrame:
    """Training rows from an extra manifest: its train split, and only `accepted` rows when labelled."""
    df = load_manifest(path)
    notes = []
    if (df["split"] != "train").any():
        notes.append(f"{int((df['split'] != 'train').sum())} non-train row(s)")
        df = df[df["split"] == "train"]
    if "accepted" in df.columns:
        rejected = ~accepted_mask(df)
        if rejected.any():
            notes.append(f"{int(rejected.sum())} not-accepted row(s)")
        df = df[~rejected]
    log.info("extra %s: using %d row(s)%s", path, len(df), f", skipped {', '.join(notes)}" if notes else "")
    return df


def warm_start(config: TrainConfig, data: pd.DataFrame, cache: Path) -> Path | None:
    """The weights file a fit with `config.init` starts from (None for scratch); `fit` then re-initialises the head.

    all-classes: the same recipe trained on every class of `data`'s real train rows (selected on its real val
    rows; the test split is never read), saved in CACHE/all-classes-<key>/ and reused by every later call whose
    key matches. The key covers the recipe (task and init aside) and the content, label and transform of each
    of those rows, so a changed image or recipe trains a new one and an unchanged one is never trained twice.
    PATH: the classifier folder's (checksum-verified) or the file's weights."""
    if config.init == "scratch":
        return None
    if isinstance(config.init, Path):
        return init_file(config.init)
    real = data[data["origin"] == "real"] if "origin" in data.columns else data
    train_df, val_df = real[real["split"] == "train"], real[real["split"] == "val"]
    present = set(train_df["label"])
    classes = [c for c in CLASSES if c in present]
    if len(classes) < 2:
        raise RetinaugError(
            f"init: all-classes needs train images of at least two classes, found {', '.join(classes) or 'none'}"
        )
    recipe = config.model_copy(update={"task": ",".join(classes), "init": "scratch", "tracker": "none"})
    key = sha256_text(
        json.dumps(
            {
                "recipe": recipe.model_dump(mode="json", exclude={"recipe"}),
                "train": rows_hash(train_df, _image_sha256),
                "val": rows_hash(val_df, _image_sha256),
            },
            sort_keys=True,
        )
    )[:16]
    folder = Path(cache) / f"all-classes-{key}"
    weights = folder / WEIGHTS
    if _finished(folder):
        log.info("init: all-classes model %s reused", folder)
        return weights
    log.info("init: training the all-classes model (%s) once into %s", recipe.task, folder)
    fit(train_df, val_df, recipe, folder)
    return weights


def _image_sha256(path: str) -> str:
    """A training image's sha256 for the all-classes key: an image it cannot read is the data stage's to redo."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise RetinaugError(
            f"init: all-classes cannot read training image {path} ({exc.strerror or exc}); re-run the data stage"
        ) from None


def _finished(folder: Path) -> bool:
    """A classifier folder whose model.json (written last) records the weights' checksum and the weights match it."""
    recorded = recorded_sha256(folder)
    return recorded is not None and (folder / WEIGHTS).is_file() and sha256_file(folder / WEIGHTS) == recorded


def train(data: Path, config: TrainConfig, out: Path, extra: list[Path] = [], init_cache: Path | None = None) -> dict:  # noqa: B006 (never mutated)
    """Train on DATA's train split (+ the extra manifests' accepted train rows), select on its val split.
    `init: all-classes` trains (or reuses) its all-classes model in `init_cache` (default OUT/init) first."""
    df = load_manifest(data)
    train_df = df[df["split"] == "train"]
    val_df = df[df["split"] == "val"]
    if extra:
        train_df = pd.concat([train_df, *(_extra_rows(Path(p)) for p in extra)], ignore_index=True)
    start = warm_start(config, df, Path(init_cache) if init_cache is not None else Path(out) / "init")
    return fit(train_df, val_df, config.model_copy(update={"init": start}) if start else config, out)
