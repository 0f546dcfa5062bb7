"""The two stage functions: `finetune` (train a generator on TRAIN patients) and `generate` (resumable sampling).

`generate` plans every image up front as (class, index) with its own seed derived from (run seed, class,
index), so the pixels do not depend on batch size or on how many processes share the work. Each PNG is
written atomically; a re-run skips the PNGs already there and rebuilds the manifest from the files present.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import torch
from accelerate import PartialState
from PIL import Image
from pydantic import BaseModel
from torchvision.utils import make_grid

from ..classes import CLASSES, parse_classes
from ..errors import RetinaugError
from ..io import atomic_path, sha256_text, write_json_atomic
from ..manifest import load_manifest, new_manifest, save_manifest
from ..progress import console, progress_bar
from .base import SAMPLING_FIELDS, Generator
from .registry import CONFIG_NAME, create_generator, load_generator

RUN_RECORD = "generate.json"


def train_rows(df: pd.DataFrame, classes: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """Real TRAIN-split images (never val/test patients, never synthetic rows), optionally of some classes."""
    rows = df[(df["split"] == "train") & (df["origin"] == "real")]
    if classes is not None:
        rows = rows[rows["label"].isin(list(classes))]
    return rows


def finetune(
    data: str | Path, method: str, config: dict | BaseModel | None = None, out: str | Path = "generator", checkpoint_every: int = 500
) -> dict:
    """Train generator `method` ('ddpm' or 'sd-lora') on the TRAIN split of the manifest in `data`.

    Writes `out/config.json`, the weights (safetensors), `out/history.json` and `out/samples.png`
    (a row per class); returns the config.json content. Every `checkpoint_every` steps the training state is
    saved in `out`, so running the same call again after an interruption continues from the last checkpoint."""
    out = Path(out)
    gen = create_generator(method, config)
    gen.check()
    df = load_manifest(data)
    train = train_rows(df)
    present = [c for c in CLASSES if c in set(train["label"])]
    classes = gen.config.classes or present
    missing = [c for c in classes if c not in present]
    if missing:
        raise RetinaugError(f"no TRAIN images of class(es) {', '.join(missing)} in {data}; classes with train images: {', '.join(present)}")
    train = train_rows(df, classes)
    gen.classes = list(classes)
    history = gen.fit(train, out, checkpoint_every=checkpoint_every)
    if not history.pop("is_main_process"):
        return {}
    out.mkdir(parents=True, exist_ok=True)
    gen.save_weights(out)
    counts = train["label"].value_counts()
    meta = {
        "method": gen.name,
        "classes": gen.classes,
        "config": gen.config.model_dump(),
        "data": str(Path(data).resolve()),
        "train_counts": {c: int(counts.get(c, 0)) for c in gen.classes},
        "n_train_images": int(len(train)),
        "train_patients": int(train["patient_id"].nunique()),
    }
    write_json_atomic(out / "history.json", history)
    write_json_atomic(out / CONFIG_NAME, meta)  # last: a folder with config.json is a finished generator
    save_samples(gen, out / "samples.png", train)
    console.print(
        f"[green]trained {gen.name}[/] on {len(train)} TRAIN images ({', '.join(gen.classes)}): "
        f"{history['steps']} steps in {history['seconds']:.0f}s ({history['images_per_s']:.1f} img/s), "
        f"final loss {history['loss'][-1]:.4f} -> {out}"
    )
    return meta


def save_samples(gen: Generator, target: Path, train: pd.DataFrame, seed: int = 0) -> Path:
    """A grid with one row per class, `samples_per_class` images each (img2img starts from TRAIN images)."""
    n = gen.config.samples_per_class
    labels = [c for c in gen.classes for _ in range(n)]
    seeds = [image_seed(seed, c, i) for i, c in enumerate(labels)]
    parents = None
    if gen.needs_parent:
        paths = {c: sorted(train.loc[train["label"] == c, "path"]) for c in gen.classes}
        parents = [paths[c][s % len(paths[c])] for c, s in zip(labels, seeds)]
    images = torch.from_numpy(gen.sample(labels, seeds, parents)).permute(0, 3, 1, 2)
    grid = make_grid(images, nrow=n, padding=2).permute(1, 2, 0).numpy()
    with atomic_path(target) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return target


def image_seed(run_seed: int, label: str, index: int) -> int:
    """A 63-bit seed from (run seed, class, index): stable across runs, batch sizes and processes."""
    digest = hashlib.sha256(f"retinaug:{run_seed}:{label}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def plan_counts(train: pd.DataFrame, classes: list[str], per_class: int | None, ratio: float | None) -> dict[str, int]:
    if (per_class is None) == (ratio is None):
        raise RetinaugError("give exactly one of --per-class N or --ratio R (R x each class's real TRAIN count)")
    counts = train["label"].value_counts()
    return {c: int(per_class) if per_class is not None else int(round(ratio * counts.get(c, 0))) for c in classes}


def generate(
    generator: str | Path,
    data: str | Path,
    out: str | Path,
    per_class: int | None = None,
    ratio: float | None = None,
    classes: tuple[str, ...] | list[str] | str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    mode: str | None = None,
    strength: float | None = None,
) -> pd.DataFrame:
    """Write `out/<CLASS>/<CLASS>_<index>.png` and `out/manifest.parquet` (origin=synthetic, split=train).

    Resumable: finished PNGs are skipped. Under `accelerate launch` processes split the images by index and
    the main process writes the manifest."""
    generator, out = Path(generator), Path(out)
    gen = load_generator(generator)
    gen.set_sampling(steps=steps, guidance=guidance, scheduler=scheduler, mode=mode, strength=strength)
    train = train_rows(load_manifest(data))
    if classes:
        wanted = list(parse_classes(classes if isinstance(classes, str) else ",".join(classes)))
    else:
        wanted = list(gen.classes)
    foreign = [c for c in wanted if c not in gen.classes]
    if foreign:
        raise RetinaugError(f"generator {generator} was not trained on class(es) {', '.join(foreign)}; it knows {', '.join(gen.classes)}")
    counts = plan_counts(train, wanted, per_class, ratio)
    plan = [(c, i) for c in wanted for i in range(counts[c])]
    parents_of = {c: sorted(train.loc[train["label"] == c, "path"]) for c in wanted}
    if gen.needs_parent and (empty := [c for c in wanted if counts[c] and not parents_of[c]]):
        raise RetinaugError(f"img2img needs real TRAIN images of class(es) {', '.join(empty)} in {data}")

    # cpu=True on GPU-less machines: otherwise accelerate ignores a torchrun/`accelerate launch` world on CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    gen.to(state.device)
    settings = gen.config.model_dump()
    sampling = {f: settings[f] for f in SAMPLING_FIELDS.values() if f in settings}
    record = {"generator": str(generator.resolve()), "generator_id": _training_id(generator), "method": gen.name,
              "seed": seed, "sampling": sampling}
    if state.is_main_process:
        _check_and_clean(out, record)
    state.wait_for_everyone()

    def item(c: str, i: int) -> dict:
        s = image_seed(seed, c, i)
        parent = parents_of[c][s % len(parents_of[c])] if gen.needs_parent else None
        return dict(label=c, index=i, seed=s, parent=parent, path=out / c / f"{c}_{i:05d}.png")

    mine = [item(c, i) for k, (c, i) in enumerate(plan) if k % state.num_processes == state.process_index]
    todo = [it for it in mine if not it["path"].exists()]
    if state.num_processes > 1:
        console.print(f"process {state.process_index + 1}/{state.num_processes}: {len(mine)} of {len(plan)} images")
    if state.is_main_process and len(mine) > len(todo):
        console.print(f"resuming: {len(mine) - len(todo)} of {len(mine)} images already written, skipped")
    start = time.perf_counter()
    with progress_bar(f"generating ({gen.name})", len(todo), "img") as advance:
        for b in range(0, len(todo), batch_size):
            batch = todo[b : b + batch_size]
            images = gen.sample([it["label"] for it in batch], [it["seed"] for it in batch], [it["parent"] for it in batch])
            for it, img in zip(batch, images):
                with atomic_path(it["path"]) as tmp:
                    Image.fromarray(img).save(tmp, format="PNG")
            advance(len(batch))
    seconds = time.perf_counter() - start
    state.wait_for_everyone()
    if not state.is_main_process:
        return new_manifest()

    items = [item(c, i) for c, i in plan]
    missing = [str(it["path"]) for it in items if not it["path"].exists()]
    if missing:
        raise RetinaugError(f"{len(missing)} of {len(plan)} planned images are missing in {out} (e.g. {missing[0]}); re-run to finish")
    extra = {p.resolve() for p in out.glob("*/[!.]*.png")} - {it["path"].resolve() for it in items}
    if extra:
        console.print(f"{len(extra)} PNG(s) in {out} from an earlier, larger run are not in this manifest")
    df = new_manifest(
        dict(
            path=str(it["path"].resolve()),
            label=it["label"],
            patient_id=f"syn-{it['label']}-{it['index']}",
            eye="unknown",
            split="train",
            origin="synthetic",
            source=f"retinaug-{gen.name}",
            parent=it["parent"],
            seed=it["seed"],
            generator=gen.name,
            generator_dir=str(generator.resolve()),
            **gen.provenance(it["label"]),
        )
        for it in items
    )
    save_manifest(df, out)
    write_json_atomic(
        out / RUN_RECORD,
        {**record, "counts": counts, "written_this_run": len(todo), "seconds": seconds,
         "images_per_s": len(todo) / seconds if todo and seconds > 0 else None},
    )
    console.print(f"[green]{len(df)} synthetic images[/] ({', '.join(f'{c}={n}' for c, n in counts.items())}) -> {out}")
    return load_manifest(out)


def _training_id(generator: Path) -> str:
    """Identifies one training run of a generator folder: its config.json and history.json (loss curve, timings)."""
    files = [generator / name for name in (CONFIG_NAME, "history.json")]
    return sha256_text("\n".join(f.read_text() for f in files if f.is_file()))[:16]


def _check_and_clean(out: Path, record: dict) -> None:
    """Refuse to mix images from different generators/seeds in one folder; remove temp files of a killed run."""
    previous = out / RUN_RECORD
    if previous.is_file():
        old = json.loads(previous.read_text())
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
        console.print(f"removed {len(stray)} unfinished temporary file(s) left by an interrupted run")
    write_json_atomic(previous, {**json.loads(previous.read_text()), **record} if previous.is_file() else record)
