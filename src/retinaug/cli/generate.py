"""CLI verbs `finetune` and `generate`: thin wrappers over `retinaug.generate` (imported lazily: diffusers is slow to import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from ..errors import RetinaugError
from ..io import read_yaml
from .app import app


def read_config(config: Path | None, overrides: list[str]) -> dict:
    """A YAML file (flat generator config) plus `key=value` overrides (values parsed as YAML: 64, [32,64], true)."""
    from ..config import apply_set

    data = read_yaml(config) if config is not None else {}
    for item in overrides:
        data = apply_set(data, item)
    return data


@app.command()
def finetune(
    data: Annotated[Path, typer.Option(help="Prepared data folder (RUN/data with manifest.parquet); only its TRAIN split is used.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output generator folder (RUN/generator).")],
    method: Annotated[str, typer.Option(help="Generator: 'ddpm' (from scratch, no weights needed) or 'sd-lora' (LoRA on a local Stable Diffusion folder).")] = "ddpm",
    config: Annotated[Path | None, typer.Option(help="YAML file with generator options (see docs/generators.md).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override one option, key=value (repeatable), e.g. --set steps=2000 --set base_model=/models/sd15.")] = [],
    checkpoint_every: Annotated[int, typer.Option(help="Save the training state every N steps (0: never); re-running the same command after an interruption continues from it.")] = 500,
) -> None:
    """Train a diffusion generator on the TRAIN patients of a prepared dataset.

    Writes config.json, safetensors weights, history.json (loss curve, images/s) and samples.png (a row per class).
    While training, OUT/train_state.pt holds the latest checkpoint (deleted at the end).

    Example: retinaug finetune --data runs/demo/data --method ddpm --set size=32 --set steps=1000 --out runs/demo/generator
    """
    from ..generate import finetune as run_finetune

    run_finetune(data, method, read_config(config, set_), out, checkpoint_every=checkpoint_every)


@app.command()
def generate(
    generator: Annotated[Path, typer.Option(help="Trained generator folder (from `retinaug finetune`).")],
    data: Annotated[Path, typer.Option(help="Prepared data folder: real TRAIN counts for --ratio, parents for img2img.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: <CLASS>/<CLASS>_<index>.png + manifest.parquet.")],
    per_class: Annotated[int | None, typer.Option(help="Images per class.")] = None,
    ratio: Annotated[float | None, typer.Option(help="Images per class = R x that class's real TRAIN count (0.5 ... 4 in the paper).")] = None,
    classes: Annotated[str | None, typer.Option(help="Classes to generate, e.g. G,C,A,H,M (default: all the generator knows).")] = None,
    seed: Annotated[int, typer.Option(help="Run seed; image seeds derive from (seed, class, index).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per sampling batch (does not change the images).")] = 16,
    steps: Annotated[int | None, typer.Option(help="Sampling steps (default: the generator's config).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale (default: the generator's config).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Sampler: dpm, ddim, euler or pndm (default: the generator's config).")] = None,
    mode: Annotated[str | None, typer.Option(help="sd-lora only: txt2img or img2img (from real TRAIN images).")] = None,
    strength: Annotated[float | None, typer.Option(help="sd-lora img2img strength in (0, 1].")] = None,
) -> None:
    """Sample synthetic TRAIN images per class with a trained generator (resumable: re-run to finish).

    Example: retinaug generate --generator runs/demo/generator --data runs/demo/data --out runs/demo/synthetic --ratio 1
    """
    from ..generate import GenerateConfig
    from ..generate import generate as run_generate

    try:
        opts = GenerateConfig(per_class=per_class, ratio=ratio, classes=classes, seed=seed, batch_size=batch_size,
                              steps=steps, guidance=guidance, scheduler=scheduler, mode=mode, strength=strength)
    except ValidationError as exc:
        problems = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise RetinaugError(f"invalid option(s): {problems}") from None
    run_generate(generator, data, out, **opts.model_dump())
