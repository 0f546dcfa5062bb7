"""The two stage functions: `finetune` (train a generator on TRAIN patients) and `generate` (resumable sampling).

`generate` plans every image up front as (class, index) with its own seed derived from (run seed, class,
index) and, for img2img, its parent and strength, so the pixels do not depend on batch size or on how many
processes share the work. Each PNG is written atomically; a re-run skips the PNGs already there and rebuilds
the manifest from the files present.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from PIL import Image
from pydantic import BaseModel
from torchvision.utils import make_grid

from .. import faults
from ..cards import write_model_card
from ..classes import CLASSES
from ..errors import RetinaugError
from ..generation_record import RUN_RECORD, training_id
from ..hardware import resolve_precision
from ..io import atomic_path, load_json, write_json_atomic, writing_weights
from ..manifest import load_manifest, new_manifest, real_rows, save_manifest
from ..progress import progress_bar
from .base import Generator
from .conditioning import SIDES
from .config import DDPMConfig, GenerateConfig, GeneratorConfig, LDMConfig, SDLoRAConfig
from .registry import CONFIG_NAME, create_generator, load_generator, method_of, weight_checksums
from .sampling import sampling_defaults

log = logging.getLogger("retinaug.generate")


def train_rows(df: pd.DataFrame, classes: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """Real TRAIN-split images (never val/test patients, never synthetic rows), optionally of some classes."""
    return real_rows(df, "train", classes)


def learned_classes(train_classes: str | list[str], present: list[str], data) -> list[str]:
    """The classes a generator learns from (`train_classes`), checked against the TRAIN split."""
    if train_classes == "all":
        return present
    if train_classes == "synthetic":
        raise RetinaugError(
            "train_classes: synthetic means the classes a pipeline run generates (`retinaug run` fills them in); "
            "here give all or class codes, e.g. --set train_classes=[G,C,A]"
        )
    missing = [c for c in train_classes if c not in present]
    if missing:
        raise RetinaugError(
            f"no TRAIN images of class(es) {', '.join(missing)} in {data}; classes with train images: {', '.join(present)}"
        )
    return list(train_classes)


def finetune(
    data: str | Path,
    config: DDPMConfig | LDMConfig | SDLoRAConfig | GeneratorConfig,
    out: str | Path,
    checkpoint_every: int = 500,
) -> dict:
    """Train a generator on the TRAIN split of the manifest in `data`: the method whose config `config` is
    (`DDPMConfig` -> ddpm, `LDMConfig` -> ldm, `SDLoRAConfig` -> sd-lora), or the one a `GeneratorConfig` names.

    It learns every class of the TRAIN split unless `train_classes` narrows that. Writes `out/config.json`, the
    weights (safetensors), `out/history.json`, `out/samples.png` (a row per class) and the model card `out/README.md`
    (with `out/loss_curve.png`); returns the config.json content. Every `checkpoint_every` steps the training state
    is saved in `out`, so running the same call again after an interruption continues from the last checkpoint."""
    out = Path(out)
    if isinstance(config, GeneratorConfig):
        method, config = config.method, config.method_config()
    elif isinstance(config, BaseModel):
        method = method_of(config)
    else:  # e.g. a dict: its method's config class validates it, DDPMConfig(**settings)
        raise RetinaugError(
            f"finetune's config is a DDPMConfig, LDMConfig, SDLoRAConfig or GeneratorConfig (built from settings with "
            f"e.g. DDPMConfig(**settings)), not a {type(config).__name__}"
        )
    gen = create_generator(method, config)
    gen.check()
    df = load_manifest(data)
    present = [c for c in CLASSES if c in set(train_rows(df)["label"])]
    classes = learned_classes(gen.config.train_classes, present, data)
    train = train_rows(df, classes)
    history = gen.fit(train, classes, out, checkpoint_every=checkpoint_every, holdout=real_rows(df, "val"))
    if not history.pop("is_main_process"):
        return {}
    out.mkdir(parents=True, exist_ok=True)
    with writing_weights(out):
        gen.save_weights(out)
    counts = train["label"].value_counts()
    meta = {
        "method": gen.name,
        "classes": gen.classes,
        "config": gen.config.model_dump(),
        "data": _data_reference(data, out),
        "train_counts": {c: int(counts.get(c, 0)) for c in gen.classes},
        "n_train_images": int(len(train)),
        "train_patients": int(train["patient_id"].nunique()),
        "train_patients_per_class": {str(c): int(n) for c, n in train.groupby("label")["patient_id"].nunique().items()},
        "weights_sha256": weight_checksums(out),  # checked by load_generator
    }
    write_json_atomic(out / "history.json", history)
    write_json_atomic(out / CONFIG_NAME, meta)  # last: a folder with config.json is a finished generator
    save_samples(gen, out / "samples.png")
    write_model_card(out)
    log.info(
        "trained %s on %d TRAIN images (%s): %d steps in %.0fs (%.1f img/s), final loss %.4f -> %s",
        gen.name,
        len(train),
        ", ".join(gen.classes),
        history["steps"],
        history["seconds"],
        history["images_per_s"],
        history["loss"][-1],
        out,
    )
    return meta


def _data_reference(data: str | Path, out: Path) -> str:
    """The manifest a generator learnt from, as its shareable config.json names it: relative to the generator folder
    when both sit in one folder (a run: `../data`), else by its folder's name; never this machine's absolute path."""
    data, gen = Path(data).resolve(), out.resolve()
    return os.path.relpath(data, gen) if data.is_relative_to(gen.parent) else data.name


def save_samples(gen: Generator, target: Path, seed: int = 0) -> Path:
    """A txt2img grid with one row per class, `samples_per_class` images each, at the method's default settings
    (with the eye condition, the columns alternate left and right)."""
    n = gen.config.samples_per_class
    labels = [c for c in gen.classes for _ in range(n)]
    eyes = [SIDES[i % 2] for _ in gen.classes for i in range(n)]
    seeds = [image_seed(seed, c, i) for i, c in enumerate(labels)]
    images = gen.pipeline()(labels, seeds, eyes=eyes)
    grid = make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), nrow=n, padding=2).permute(1, 2, 0).numpy()
    with atomic_path(target) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return target


def _derived_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def image_seed(run_seed: int, label: str, index: int) -> int:
    """A 63-bit seed from (run seed, class, index): stable across runs, batch sizes and processes."""
    return _derived_seed(f"retinaug:{run_seed}:{label}:{index}")


def assign_parents(paths: list[str], n: int, run_seed: int, label: str) -> list[str]:
    """Parents of images 0..n-1 of a class: a seeded permutation of its TRAIN images, repeated, so every image
    is the parent of floor(n / P) or ceil(n / P) of them; image i's parent does not depend on n."""
    order = np.random.default_rng(_derived_seed(f"retinaug:parents:{run_seed}:{label}")).permutation(len(paths))
    ordered = sorted(paths)
    return [ordered[order[i % len(paths)]] for i in range(n)]


def draw_strength(strength: float | list[float], seed: int) -> float:
    """An image's img2img strength: the fixed value, or uniform in [low, high] from the image's own seed."""
    if isinstance(strength, list):
        low, high = strength
        return float(low + (high - low) * np.random.default_rng(seed).random())
    return float(strength)


def plan_counts(train: pd.DataFrame, classes: list[str], per_class: int | None, ratio: float | None) -> dict[str, int]:
    if (per_class is None) == (ratio is None):
        raise RetinaugError("give exactly one of --per-class N or --ratio R (R x each class's real TRAIN count)")
    counts = train["label"].value_counts()
    return {c: int(per_class) if per_class is not None else int(round(ratio * counts.get(c, 0))) for c in classes}


def plan_images(
    train: pd.DataFrame, counts: dict[str, int], cfg: GenerateConfig, eye_condition: bool, out: Path
) -> list[dict]:
    """Every image to make: class, index, seed, path and, for img2img, parent and strength; the eye side it is
    asked for (the parent's, or alternating left/right) when the generator is conditioned on it."""
    img2img = cfg.mode == "img2img"
    items = []
    for c, n in counts.items():
        rows = train[train["label"] == c]
        if img2img and n and rows.empty:
            raise RetinaugError(f"img2img needs real TRAIN images of class {c} as parents; there are none")
        parents = assign_parents(list(rows["path"]), n, cfg.seed, c) if img2img else [None] * n
        eye_of = dict(zip(rows["path"], rows["eye"]))
        for i, parent in enumerate(parents):
            seed = image_seed(cfg.seed, c, i)
            eye = "unknown"
            if eye_condition:
                eye = eye_of[parent] if parent is not None and eye_of[parent] in SIDES else SIDES[i % 2]
            items.append(
                dict(
                    label=c,
                    index=i,
                    seed=seed,
                    parent=parent,
                    eye=eye,
                    path=out / c / f"{c}_{i:05d}.png",
                    strength=draw_strength(cfg.strength, seed) if img2img else None,
                )
            )
    return items


def generate(generator: str | Path, data: str | Path, config: GenerateConfig, out: str | Path) -> pd.DataFrame:
    """Write `out/<CLASS>/<CLASS>_<index>.png` and `out/manifest.parquet` (origin=synthetic, split=train).

    `config` (a GenerateConfig, or a config that extends it such as the pipeline's synthetic section: only
    GenerateConfig's fields are read) says what to sample and how, e.g. GenerateConfig(per_class=100,
    mode="img2img", strength=[0.3, 0.7]). Resumable: finished PNGs are skipped.
    Under `accelerate launch` / `torchrun` the processes split the images and the main one writes the manifest."""
    generator, out = Path(generator), Path(out)
    if not isinstance(config, GenerateConfig):
        raise RetinaugError(
            f"generate's config is a GenerateConfig (e.g. GenerateConfig(per_class=100)), not a {type(config).__name__}"
        )
    gen = load_generator(generator)
    train = train_rows(load_manifest(data))
    counts = plan_counts(train, _wanted_classes(config, gen, generator), config.per_class, config.ratio)
    items = plan_images(train, counts, config, gen.conditions.eyes, out)

    # cpu=True on GPU-less machines: otherwise accelerate ignores a torchrun/`accelerate launch` world on CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    gen.to(state.device)
    pipe = gen.pipeline()
    settings = sampling_settings(pipe, config, gen.name, state.device)
    record = {
        "generator": str(generator.resolve()),
        "generator_id": training_id(generator),
        "method": gen.name,
        "seed": config.seed,
        "sampling": {
            **settings,
            "mode": config.mode,
            **({"strength": config.strength} if config.mode == "img2img" else {}),
        },
    }
    previous = _check_and_clean(out, record) if state.is_main_process else {}
    todo = [it for it in items if not it["path"].exists()]
    state.wait_for_everyone()  # every process has listed the same finished images before any writes more

    seconds = _sample(state, pipe, todo, len(items), config, settings, gen.name)
    state.wait_for_everyone()
    if not state.is_main_process:
        return new_manifest()

    _check_finished(items, out)
    df = _manifest(items, pipe, settings, gen.name, generator)
    save_manifest(df, out)
    written = len(todo)
    # the speed of the last run that sampled: a re-run with nothing left to write keeps the previous record's
    speed = (
        {"seconds": seconds, "images_per_s": written / seconds if seconds > 0 else None}
        if written
        else {k: previous.get(k) for k in ("seconds", "images_per_s")}
    )
    write_json_atomic(out / RUN_RECORD, {**record, "counts": counts, "written_this_run": written, **speed})
    log.info("%d synthetic images (%s) -> %s", len(df), ", ".join(f"{c}={n}" for c, n in counts.items()), out)
    return load_manifest(out)


def _wanted_classes(cfg: GenerateConfig, gen: Generator, generator: Path) -> list[str]:
    """The classes to sample (`cfg.classes`, else every class the generator learnt); only classes it learnt."""
    wanted = cfg.classes or list(gen.classes)
    foreign = [c for c in wanted if c not in gen.classes]
    if foreign:
        raise RetinaugError(
            f"generator {generator} was not trained on class(es) {', '.join(foreign)}; it knows {', '.join(gen.classes)}"
        )
    return wanted


def _sample(
    state: PartialState, pipe, todo: list[dict], planned: int, cfg: GenerateConfig, settings: dict, method: str
) -> float:
    """Sample this process's share of `todo` in batches and write each PNG atomically; returns the seconds it took.
    Each image has its own seed, so the pixels do not depend on the batches or on how many processes share them."""
    start = time.perf_counter()
    with state.split_between_processes(todo) as mine:
        if state.num_processes > 1:
            log.info(
                "process %d/%d: %d of %d images", state.process_index + 1, state.num_processes, len(mine), len(todo)
            )
        if state.is_main_process and len(todo) < planned:
            log.info("resuming: %d of %d images already written, skipped", planned - len(todo), planned)
        with progress_bar(f"generating ({method})", len(mine), "img") as advance:
            for b in range(0, len(mine), cfg.batch_size):
                batch = mine[b : b + cfg.batch_size]
                images = pipe(
                    [it["label"] for it in batch],
                    [it["seed"] for it in batch],
                    parents=[it["parent"] for it in batch] if cfg.mode == "img2img" else None,
                    strengths=[it["strength"] for it in batch],
                    eyes=[it["eye"] for it in batch],
                    **settings,
                )
                for it, img in zip(batch, images):
                    with atomic_path(it["path"]) as tmp:
                        Image.fromarray(img).save(tmp, format="PNG")
                    faults.reached("image")
                advance(len(batch))
    return time.perf_counter() - start


def _check_finished(items: list[dict], out: Path) -> None:
    """Refuse to write a manifest while a planned image is missing (another process failed); mention PNGs that
    an earlier, larger run left and this manifest does not list."""
    missing = [str(it["path"]) for it in items if not it["path"].exists()]
    if missing:
        raise RetinaugError(
            f"{len(missing)} of {len(items)} planned images are missing in {out} (e.g. {missing[0]}); re-run to finish"
        )
    extra = {p.resolve() for p in out.glob("*/[!.]*.png")} - {it["path"].resolve() for it in items}
    if extra:
        log.info("%d PNG(s) in %s from an earlier, larger run are not in this manifest", len(extra), out)


def _manifest(items: list[dict], pipe, settings: dict, method: str, generator: Path) -> pd.DataFrame:
    """The synthetic images' manifest: every planned image with its provenance (seed, parent, prompt, generator)."""
    return new_manifest(
        dict(
            path=str(it["path"].resolve()),
            label=it["label"],
            patient_id=f"syn-{it['label']}-{it['index']}",
            eye=it["eye"],
            split="train",
            origin="synthetic",
            source=f"retinaug-{method}",
            parent=it["parent"],
            strength=it["strength"],
            seed=it["seed"],
            steps=settings["steps"],
            guidance=settings["guidance"],
            prompt=pipe.prompt(it["label"], it["eye"]),
            negative_prompt=settings.get("negative_prompt") or None,
            generator=method,
            generator_dir=str(generator.resolve()),
        )
        for it in items
    )


def sampling_settings(pipe, cfg: GenerateConfig, method: str, device) -> dict:
    """The pipeline call's settings: the method's defaults, what `cfg` sets, and the resolved precision."""
    defaults = sampling_defaults(pipe)
    asked = cfg.sampling()
    foreign = sorted(set(asked) - set(defaults))
    if foreign:
        raise RetinaugError(f"option(s) {', '.join(foreign)} do not apply to the {method} generator")
    return {**defaults, **asked, "precision": resolve_precision(cfg.precision, device)}


def _check_and_clean(out: Path, record: dict) -> dict:
    """Refuse to mix images from different generators/seeds in one folder; remove temp files of a killed run.
    Returns the folder's previous generation record ({} for a new folder)."""
    previous = out / RUN_RECORD
    old: dict = {}
    if previous.is_file():
        old = load_json(previous, "generation record", "delete it or use a new --out folder")
        # which training run made the images (not where it lies: a run folder may move); the folder's path for
        # records written before the training id existed
        same = "generator_id" if "generator_id" in old else "generator"
        changed = [k for k in (same, "method", "seed", "sampling") if old.get(k) != record[k]]
        if changed:
            raise RetinaugError(
                f"{out} holds images made with a different {', '.join(changed).replace('generator_id', 'generator training run')}; "
                "use a new --out folder or delete it"
            )
    out.mkdir(parents=True, exist_ok=True)
    stray = list(out.glob("*/.*.tmp.png"))
    for f in stray:
        f.unlink(missing_ok=True)
    if stray:
        log.info("removed %d unfinished temporary file(s) left by an interrupted run", len(stray))
    write_json_atomic(previous, {**old, **record})
    return old
