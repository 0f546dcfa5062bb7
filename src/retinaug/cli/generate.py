"""CLI verbs `finetune` and `generate`: thin wrappers over `retinaug.generate` (imported lazily: diffusers is slow to import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    data: Annotated[
        Path, typer.Option(help="Prepared data folder (RUN/data with manifest.parquet); only its TRAIN split is used.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output generator folder (RUN/generator).")],
    method: Annotated[
        str,
        typer.Option(
            help="Generator: 'ddpm' (pixels, from scratch), 'ldm' (autoencoder + latent diffusion, from scratch) or 'sd-lora' (LoRA on a local Stable Diffusion folder)."
        ),
    ] = "ddpm",
    config: Annotated[
        Path | None, typer.Option(help="YAML file with generator options (see docs/generators.md).")
    ] = None,
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="Override one option, key=value (repeatable), e.g. --set steps=2000 --set base_model=/models/sd15.",
        ),
    ] = [],  # noqa: B006  (read, never changed)
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Save the training state every N steps (0: never); re-running the same command after an interruption continues from it."
        ),
    ] = 500,
) -> None:
    """Train a diffusion generator on the TRAIN patients of a prepared dataset (every class, unless train_classes says otherwise).

    Writes config.json, safetensors weights, history.json (loss curve, images/s) and samples.png (a row per class);
    ldm also recon.png and the autoencoder's val PSNR/SSIM. While training, OUT/train_state.pt holds the latest
    checkpoint (deleted at the end). Sampling settings (steps, guidance, img2img) are options of `generate`.

    Example: retinaug finetune --data runs/demo/data --method ddpm --set size=32 --set steps=1000 --out runs/demo/generator
    """
    from ..generate import finetune as run_finetune
    from ..ownership import owned_output

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        run_finetune(data, method, read_config(config, set_), out, checkpoint_every=checkpoint_every)


@app.command()
def generate(
    generator: Annotated[Path, typer.Option(help="Trained generator folder (from `retinaug finetune`).")],
    data: Annotated[
        Path, typer.Option(help="Prepared data folder: real TRAIN counts for --ratio, parents for img2img.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: <CLASS>/<CLASS>_<index>.png + manifest.parquet.")
    ],
    per_class: Annotated[int | None, typer.Option(help="Images per class.")] = None,
    ratio: Annotated[
        float | None,
        typer.Option(help="Images per class = R x that class's real TRAIN count (0.5 ... 4 in the paper)."),
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Classes to generate, e.g. G,C,A,H,M (default: all the generator learned).")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(help="Run seed; image seeds (and img2img parents, strengths) derive from (seed, class, index)."),
    ] = 0,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Images per sampling batch (same images; CPU kernels may round a pixel by one grey level differently across batch sizes)."
        ),
    ] = 16,
    mode: Annotated[
        str | None,
        typer.Option(
            help="txt2img (from noise, the default) or img2img (from real TRAIN images of the class, each used about equally often)."
        ),
    ] = None,
    strength: Annotated[
        str | None,
        typer.Option(
            help="img2img strength in [0, 1] (0: the parent itself; default 0.5), or a range LOW,HIGH drawn per image."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Sampling steps (default: the method's, ddpm/ldm 25, sd-lora 30).")
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="Classifier-free guidance scale (default: the method's, ddpm/ldm 3, sd-lora 7.5)."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Sampler: dpm (DPM-Solver++, the default), ddim, euler or pndm.")
    ] = None,
    karras: Annotated[bool, typer.Option(help="Karras sigmas (dpm and euler).")] = False,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Sampling autocast: no (fp32, the default: exact), auto (bf16 on CPUs with bf16 units / bf16 GPUs), bf16, fp16."
        ),
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="sd-lora only: negative prompt.")] = None,
) -> None:
    """Sample synthetic TRAIN images per class with a trained generator (resumable: re-run to finish).
    When OUT lies in a pipeline run folder, its lock is held (refused while another process works there).

    Example: retinaug generate --generator runs/demo/generator --data runs/demo/data --out runs/demo/synthetic --ratio 1 --classes G,C,A
    """
    import contextlib
    import os

    from ..lock import run_folder_of, run_lock
    from ..ownership import owned_output

    run = run_folder_of(out)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun/accelerate only the first process locks
    with (
        run_lock(run, "generate") if run is not None and main_process else contextlib.nullcontext(),
        owned_output(out, "--out") if main_process else contextlib.nullcontext(),
    ):
        from ..generate import generate as run_generate

        # None: GenerateConfig's default
        options = dict(mode=mode, strength=strength, scheduler=scheduler, precision=precision)
        run_generate(
            generator,
            data,
            out,
            per_class=per_class,
            ratio=ratio,
            classes=classes,
            seed=seed,
            batch_size=batch_size,
            steps=steps,
            guidance=guidance,
            karras=karras,
            negative_prompt=negative_prompt,
            **{k: v for k, v in options.items() if v is not None},
        )
