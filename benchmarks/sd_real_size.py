"""Stable Diffusion 1.5 at its real size on the CPU: sd-lora training steps with and without gradient checkpointing and
txt2img / img2img sampling, each timed with its peak memory; the FLOPs of a training step and, from them, an estimate of
its time on one H100 at 512 px.

    python benchmarks/sd_real_size.py                           # SD 1.5's real shapes: a 6.5 GB model (fp32 + fp16 files) in a temp folder
    python benchmarks/sd_real_size.py --folder /data/sd-bench   # built there once and reused by later runs
    python benchmarks/sd_real_size.py --tiny                    # tiny widths, the same code paths: seconds

The model is random (tests/tiny_sd.py's `make_sd_release`, real_size=True: SD 1.5's UNet, VAE and CLIP text encoder
shapes, its 49,408-token tokenizer; nothing is downloaded): time and memory depend on the shapes, not on the weights.
Training and sampling go through retinaug's own generator (`fit`, `pipeline`) on phantom images, one process; peak RSS
is measured per part (Linux restarts the peak when /proc/self/clear_refs is written). FLOPs are counted with torch's
FlopCounterMode on the meta device (shapes only, no compute; attention as the math kernel), once at the run's size and
once at 512 px; the H100 figure divides the 512 px count by an assumed sustained rate, so it is an estimate of the
compute-bound time, not a measurement (at batch 1 kernel launches can make real steps slower). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_sd: the SD 1.5 folder builder
from tiny_sd import make_sd_release

from retinaug.generate import SDLoRAConfig, create_generator
from retinaug.generate.run import train_rows
from retinaug.manifest import load_manifest
from retinaug.phantom import PhantomConfig, make_phantom

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's H100 SXM datasheet, dense (no sparsity)
SUSTAINED = 0.4  # the share of it a UNet training step is assumed to sustain
CLASSES = ["N", "G"]
GIB = 2**30


def reset_peak_rss() -> None:
    """Restart the process's peak RSS from its current RSS (Linux >= 4.0); elsewhere the peak stays the lifetime one."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_gib() -> float:
    """Peak resident memory since `reset_peak_rss` (VmHWM), or of the whole process where /proc is missing."""
    status = Path("/proc/self/status")
    if status.is_file():
        kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return kib * 1024 / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / GIB  # bytes on macOS


def base_model(folder: Path, tiny: bool) -> Path:
    """The random SD 1.5 folder (real shapes or tiny widths), built unless `folder` already holds it."""
    base = folder / ("sd15-tiny" if tiny else "sd15")
    if not (base / "model_index.json").is_file():
        make_sd_release(base, real_size=not tiny)
    return base


def train_images(folder: Path, size: int):
    """TRAIN rows of a small phantom dataset at `size` px (made once in `folder`)."""
    data = folder / f"data-{size}"
    if not (data / "manifest.parquet").is_file():
        make_phantom(PhantomConfig(n=24, size=size, seed=0, proportions={c: 1 for c in CLASSES}), data)
    return train_rows(load_manifest(data), CLASSES)


def train(base: Path, rows, args, checkpointing: bool):
    """`args.steps` LoRA steps of one image through the generator's own loop: (seconds per step, peak RSS, generator)."""
    cfg = SDLoRAConfig(
        base_model=str(base),
        size=args.size,
        steps=args.steps,
        batch_size=1,
        grad_accum=1,
        warmup_steps=0,
        mixed_precision=args.precision,
        gradient_checkpointing=checkpointing,
        train_classes=CLASSES,
    )
    gen = create_generator("sd-lora", cfg)
    reset_peak_rss()
    history = gen.fit(rows, CLASSES, out=None)
    return history["seconds"] / history["steps"], peak_rss_gib(), gen


def sample(gen, rows, args) -> dict:
    """Seconds per image of one txt2img and one img2img batch of `args.images` (img2img runs int(steps x strength) steps)."""
    pipe = gen.pipeline()
    labels, seeds = [CLASSES[i % len(CLASSES)] for i in range(args.images)], list(range(args.images))
    reset_peak_rss()
    start = time.perf_counter()
    pipe(labels, seeds, steps=args.sample_steps, precision=args.precision)
    txt2img = (time.perf_counter() - start) / args.images
    start = time.perf_counter()
    pipe(
        labels,
        seeds,
        parents=list(rows["path"][: args.images]),
        strengths=args.strength,
        steps=args.sample_steps,
        precision=args.precision,
    )
    img2img = (time.perf_counter() - start) / args.images
    return {"txt2img_s_per_image": txt2img, "img2img_s_per_image": img2img, "sample_peak_rss_gib": peak_rss_gib()}


class MetaImages:
    """Stands in for the generator's TrainSet: a batch of `size` px images and their conditions, as shapes only."""

    def __init__(self, size: int):
        self.size = size

    def pixels(self, idx, flip, device) -> torch.Tensor:
        return torch.empty(len(idx), 3, self.size, self.size, device="meta")

    def condition(self, idx, flip, device) -> torch.Tensor:
        return torch.zeros(len(idx), dtype=torch.long, device="meta")


def count_step(gen, size: int) -> tuple[float, float]:
    """TFLOP of one training step of one image (the generator's own loss: VAE encode, text encoder, UNet forward and
    backward through the LoRA) and GiB the backward pass keeps (fp32; the UNet's, the rest runs without gradients), at
    `size` px. Runs on the meta device, so the networks' weights are gone afterwards."""
    gen.data = MetaImages(size)
    saved = [0]

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with (
        sdpa_kernel(SDPBackend.MATH),
        FlopCounterMode(display=False) as flops,
        torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t),
    ):
        gen._loss(gen.trainable(), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.bool)).backward()
    return flops.get_total_flops() / 1e12, saved[0] / GIB


def flop_counts(gen, size: int) -> dict:
    """The step's FLOPs at the run's size and at 512 px, and the UNet activations kept at 512 px with and without
    gradient checkpointing, on the meta device (the generator is unusable afterwards)."""
    for name in ("unet", "vae", "text_encoder"):
        getattr(gen, name).to("meta")
    gen.device, gen.prompt_ids = torch.device("meta"), gen.prompt_ids.to("meta")
    gen.unet.disable_gradient_checkpointing()
    step, _ = count_step(gen, size)
    step_512, saved_512 = count_step(gen, 512)
    gen.unet.enable_gradient_checkpointing()
    _, saved_checkpointed_512 = count_step(gen, 512)
    return {
        "step_tflop": step,
        "step_tflop_512": step_512,
        "unet_saved_gib_512": saved_512,
        "unet_saved_checkpointed_gib_512": saved_checkpointed_512,
    }


def run(folder: Path, args) -> dict:
    base, rows = base_model(folder, args.tiny), train_images(folder, args.size)
    plain_s, plain_rss, gen = train(base, rows, args, checkpointing=False)
    del gen
    gc.collect()
    checkpointed_s, checkpointed_rss, gen = train(base, rows, args, checkpointing=True)
    result = {
        "widths": "tiny" if args.tiny else "real",
        "size": args.size,
        "steps": args.steps,
        "sample_steps": args.sample_steps,
        "images": args.images,
        "strength": args.strength,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg()[0],
        "unet_parameters": sum(p.numel() for p in gen.unet.parameters()),
        "lora_parameters": sum(p.numel() for p in gen.unet.parameters() if p.requires_grad),
        "train_s_per_step": plain_s,
        "train_peak_rss_gib": plain_rss,
        "train_checkpointed_s_per_step": checkpointed_s,
        "train_checkpointed_peak_rss_gib": checkpointed_rss,
        **sample(gen, rows, args),
        **flop_counts(gen, args.size),
    }
    rate = args.h100_tflops or SUSTAINED * H100_BF16_DENSE_TFLOPS
    return {
        **result,
        "cpu_gflops": result["step_tflop"] * 1e3 / plain_s,
        "h100_tflops_assumed": rate,
        "h100_s_per_step_512_estimate": result["step_tflop_512"] / rate,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tiny", action="store_true", help="tiny widths (tests/tiny_sd.py's SD 1.5 layout): a smoke test in seconds"
    )
    p.add_argument(
        "--folder",
        type=Path,
        help="build the model and data here and keep them (reused when present); default: a temporary folder",
    )
    p.add_argument("--size", type=int, default=256, help="training and sampling size in px (default 256)")
    p.add_argument(
        "--steps", type=int, default=3, help="LoRA training steps of one image, per configuration (default 3)"
    )
    p.add_argument("--sample-steps", type=int, default=10, help="sampling steps (default 10)")
    p.add_argument("--images", type=int, default=2, help="images per sampling batch, txt2img and img2img (default 2)")
    p.add_argument("--strength", type=float, default=0.5, help="img2img strength (default 0.5)")
    p.add_argument(
        "--precision", default="no", choices=["no", "bf16"], help="training and sampling autocast (default no: fp32)"
    )
    p.add_argument(
        "--h100-tflops",
        type=float,
        help=f"sustained H100 TFLOP/s assumed (default {SUSTAINED * 100:g}%% of the bf16 dense peak, {H100_BF16_DENSE_TFLOPS:g})",
    )
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sd-real-size-") as tmp:
        folder = args.folder or Path(tmp)
        os.environ.setdefault("RETINAUG_CACHE_DIR", str(folder / "cache"))  # decoded images stay in the work folder
        result = run(folder, args)
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")
    return result


if __name__ == "__main__":
    main()
