"""CLI verbs `finetune` and `generate`: thin wrappers over `retinaug.generate` (imported lazily: diffusers is slow to import)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..generate.config import DDPMConfig, GenerateConfig, LDMConfig, SDLoRAConfig
from .app import app
from .settings import field_lines, help_listing, settings

# the settings of each method, listed in `finetune --help` (the configs are light: no torch)
METHOD_CONFIGS = {"ddpm": DDPMConfig, "ldm": LDMConfig, "sd-lora": SDLoRAConfig}
# the options `retinaug generate` names (every GenerateConfig field; --config FILE and --set work too)
GENERATE_OPTIONS = (
    "per_class", "ratio", "classes", "seed", "batch_size", "mode", "strength", "steps", "guidance", "scheduler",
    "karras", "precision", "negative_prompt",
)  # fmt: skip


def method_settings(verb: Callable[..., Any]) -> Callable[..., Any]:
    """Append every method's settings (name, description, default), generated from its config, to the verb's help."""
    sections = [
        help_listing(f"{method} settings, {model.__name__}", field_lines(model))
        for method, model in METHOD_CONFIGS.items()
    ]
    verb.__doc__ = inspect.cleandoc(verb.__doc__ or "") + "".join(sections)
    return verb


@app.command()
@method_settings
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
        Path | None,
        typer.Option(help="YAML file of the method's settings (flat: the keys listed below; see docs/generators.md)."),
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
    from ..config import load_model
    from ..generate import finetune as run_finetune
    from ..generate.registry import generator_class
    from ..ownership import owned_output

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        cfg = load_model(generator_class(method).config_class, config, overrides=set_)
        run_finetune(data, cfg, out, checkpoint_every=checkpoint_every)


@app.command()
@settings(GenerateConfig, GENERATE_OPTIONS, example="scheduler=ddim")
def generate(
    generator: Annotated[Path, typer.Option(help="Trained generator folder (from `retinaug finetune`).")],
    data: Annotated[
        Path, typer.Option(help="Prepared data folder: real TRAIN counts for --ratio, parents for img2img.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: <CLASS>/<CLASS>_<index>.png + manifest.parquet.")
    ],
    config: GenerateConfig = None,  # type: ignore[assignment]  (built by @settings)
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

        run_generate(generator, data, config, out)
