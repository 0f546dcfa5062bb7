"""GPU readiness check: does the library run at the speed of the plain diffusers / torch code on the same model?

Each section times the library's own public functions and, on the same model, the plain code a user would
write instead, and records the ratio (ours / plain; 1.0 = no overhead):

  sd-lora     `finetune(SDLoRAConfig)` steps/s with a random Stable Diffusion 1.5-size model (UNet2DConditionModel
              defaults, 768-wide text context, SD VAE, CLIP ViT-L-size text encoder) at 512 px, vs a plain
              diffusers LoRA loop (frozen bf16 base, fp32 LoRA via peft, VAE + text encoder each step);
              `generate` txt2img images/s vs `StableDiffusionPipeline` (same model, dtype, batch, steps)
  ddpm, ldm   `finetune` training images/s (ldm: its latent-UNet phase) vs a plain torch loop on the saved UNet (random
              inputs of its sample shape: no data loading, no EMA); a generator not registered is skipped with a note
  classifier  `fit` training images/s (the last of 2 epochs) and `predict` images/s vs a plain bf16 loop on the
              same `create_model` network

On a GPU it runs the real sizes in bf16 (under 10 minutes on one H100/H200); `--tiny` shrinks every model and
image so it runs on a CPU in about a minute (tests/test_gpu_check.py runs it that way). Writes JSON
(default benchmarks/results/gpu-check-TAG.json) and prints a Markdown table.

  python benchmarks/gpu_check.py                 # needs a CUDA GPU; without one it says so and exits 0
  python benchmarks/gpu_check.py --tiny          # any machine: a smoke test of every code path
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # perf.py's helpers; tiny_sd (the tokenizer)

from perf import Bench, build_sd, machine_facts, run_sections, task_subset, timer  # noqa: E402

SIZES = {
    # real: SD 1.5 shapes at 512 px, the paper's VGG19 at 224 px, a 128 px pixel UNet, a 256 px latent one
    "real": dict(
        sd_size=512,
        sd_steps=20,
        sd_batch=4,
        sd_sample_steps=25,
        sd_images=8,
        sd_gen_batch=4,
        unet_steps=100,
        unet_batch=32,
        ddpm=dict(size=128, block_out_channels=[64, 128, 256, 256], attention_levels=[3]),
        ldm=dict(size=256, block_out_channels=[64, 128, 256, 256], attention_levels=[3], vae_steps=100),
        clf_backbone="vgg19",
        clf_size=224,
        clf_batch=32,
        clf_images=512,
        phantom_n=96,
        phantom_size=256,
    ),
    "tiny": dict(
        sd_size=64,
        sd_steps=2,
        sd_batch=2,
        sd_sample_steps=2,
        sd_images=2,
        sd_gen_batch=2,
        unet_steps=3,
        unet_batch=4,
        ddpm=dict(size=16, block_out_channels=[16, 32], attention_levels=[1]),
        ldm=dict(
            size=32,
            block_out_channels=[16, 32],
            attention_levels=[],
            vae_block_out_channels=[16, 16],
            vae_steps=2,
            vae_batch_size=4,
            recon_images=4,
        ),
        clf_backbone="resnet10t",
        clf_size=32,
        clf_batch=8,
        clf_images=16,
        phantom_n=96,
        phantom_size=64,
    ),
}


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def plain_sd_lora_steps(base: Path, size: int, batch: int, steps: int, rank: int, alpha: float, device, dtype) -> float:
    """diffusers' LoRA text-to-image recipe on `base`: frozen UNet/VAE/text encoder in `dtype`, LoRA (peft) in fp32,
    autocast, AdamW. Steps/s over `steps` steps."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").to(device, dtype)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device, dtype)
    text = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device, dtype)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    noise_schedule = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    for m in (unet, vae, text):
        m.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]
        )
    )
    cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = tokenizer(
        ["a fundus photograph"] * batch,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    pixels = torch.rand(batch, 3, size, size, device=device) * 2 - 1

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype):
            with torch.no_grad():
                latents = vae.encode(pixels.to(dtype)).latent_dist.sample() * vae.config.scaling_factor
            context = text(ids)[0]
            noise = torch.randn_like(latents)
            t = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch,), device=device)
            loss = F.mse_loss(
                unet(noise_schedule.add_noise(latents, noise, t), t, context).sample.float(), noise.float()
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with timer({}) as t:  # from the first step, as `finetune`'s own timing
        for _ in range(steps):
            step()
    return rate(steps, t["s"])


def plain_pipeline_images(
    base: Path, prompt: str, size: int, steps: int, batch: int, images: int, device, dtype
) -> float:
    """`StableDiffusionPipeline.from_pretrained` on `base` in `dtype`, `batch` images per call, images/s after a warm-up."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe([prompt] * batch, height=size, width=size, num_inference_steps=steps)  # warm-up
    calls = max(1, images // batch)
    with timer({}) as t:
        for _ in range(calls):
            pipe([prompt] * batch, height=size, width=size, num_inference_steps=steps)
    return rate(calls * batch, t["s"])


def plain_unet_images(unet_dir: Path, batch: int, steps: int, device, dtype) -> float:
    """A plain diffusion training loop on the saved UNet2DModel: random inputs of its sample shape, random classes
    when it is class-conditional, MSE to the noise, AdamW, autocast. Images/s over `steps` steps."""
    import torch
    import torch.nn.functional as F
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(unet_dir).to(device).train()
    c, s, classes = unet.config.in_channels, unet.config.sample_size, unet.config.num_class_embeds
    size = s if isinstance(s, int) else s[0]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(batch, c, size, size, device=device)

    def step() -> None:
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (batch,), device=device)
        y = torch.randint(0, classes, (batch,), device=device) if classes else None
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = F.mse_loss(unet(x + noise, t, class_labels=y).sample.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with timer({}) as t:  # from the first step, as `finetune`'s own timing
        for _ in range(steps):
            step()
    return rate(steps * batch, t["s"])


def plain_classifier_images(
    backbone: str, size: int, batch: int, images: int, n_classes: int, device, dtype
) -> tuple[float, float]:
    """The same `create_model` network in a plain loop (random uint8 batches, ImageNet normalisation, channels_last,
    CE, AdamW, autocast): training and inference images/s after a warm-up batch."""
    import torch
    import torch.nn.functional as F

    from retinaug.classify import TrainConfig
    from retinaug.classify.models import create_model

    model = create_model(TrainConfig(backbone=backbone, size=size), n_classes).to(
        device, memory_format=torch.channels_last
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, n_classes, (batch,), device=device)

    def forward() -> torch.Tensor:
        x = ((pixels.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return model(x)

    def train_step() -> None:
        F.cross_entropy(forward().float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batches = max(1, images // batch)
    model.train()
    train_step()
    with timer({}) as t:
        for _ in range(batches):
            train_step()
    model.eval()
    with torch.inference_mode():
        forward()
        with timer({}) as p:
            for _ in range(batches):
                forward()
    return rate(batches * batch, t["s"]), rate(batches * batch, p["s"])


def check_sd(b: Bench, s: dict, data: Path, work: Path, precision: str, device, dtype) -> None:
    from retinaug.generate import GenerateConfig, SDLoRAConfig, finetune, generate

    base = build_sd(work / "sd15-random", full=s["sd_size"] >= 512)
    cfg = dict(
        base_model=str(base),
        size=s["sd_size"],
        steps=s["sd_steps"],
        batch_size=s["sd_batch"],
        grad_accum=1,
        warmup_steps=0,
        train_classes=["N", "D"],
        mixed_precision=precision,
        rank=8,
        alpha=8.0,
    )
    gen = work / "sd-lora"
    finetune(data, SDLoRAConfig(**cfg), gen)
    hist = json.loads((gen / "history.json").read_text())
    ours_train = rate(hist["steps"], hist["seconds"])
    plain_train = plain_sd_lora_steps(base, s["sd_size"], s["sd_batch"], s["sd_steps"], 8, 8.0, device, dtype)
    what = f"{s['sd_size']}px, batch {s['sd_batch']}, LoRA rank 8, {precision}"
    b.add("sd-lora", f"train steps/s, ours ({what})", ours_train, "steps/s")
    b.add("sd-lora", "train steps/s, plain diffusers LoRA loop", plain_train, "steps/s")
    b.add("sd-lora", "train ratio ours / plain", ours_train / plain_train, "x")

    steps, batch = s["sd_sample_steps"], s["sd_gen_batch"]
    warmup = GenerateConfig(per_class=1, classes=["N"], batch_size=1, steps=steps, precision=precision)
    generate(gen, data, warmup, work / "sd-warmup")
    out = work / "sd-samples"
    sampling = GenerateConfig(
        per_class=s["sd_images"], classes=["N"], batch_size=batch, steps=steps, precision=precision
    )
    generate(gen, data, sampling, out)
    ours = json.loads((out / "generate.json").read_text())["images_per_s"]
    prompt = json.loads((gen / "config.json").read_text())["config"].get("prompts", {}).get("N", "a fundus photograph")
    plain = plain_pipeline_images(base, prompt, s["sd_size"], steps, batch, s["sd_images"], device, dtype)
    b.add("sd-lora", f"txt2img images/s, ours `generate` ({steps} steps, batch {batch}, {precision})", ours, "images/s")
    b.add(
        "sd-lora",
        "txt2img images/s, plain StableDiffusionPipeline (same model, dtype, batch, steps)",
        plain,
        "images/s",
    )
    b.add("sd-lora", "txt2img ratio ours / plain", ours / plain, "x")
    b.details["sd-lora"] = {
        "config": cfg,
        "train": {k: hist[k] for k in ("steps", "seconds", "images_per_s", "precision")},
    }


def check_unet_generator(b: Bench, s: dict, data: Path, work: Path, method: str, precision: str, device, dtype) -> None:
    from retinaug.generate import finetune, list_generators
    from retinaug.generate.registry import generator_class

    if method not in list_generators():
        b.details[method] = {"skipped": f"generator {method!r} is not registered in this version"}
        print(f"[gpu-check] {method}: not registered, skipped", file=sys.stderr)
        return
    cfg = dict(
        s[method],
        steps=s["unet_steps"],
        batch_size=s["unet_batch"],
        warmup_steps=0,
        mixed_precision=precision,
        norm_num_groups=8,
        samples_per_class=1,
    )
    gen = work / method
    finetune(data, generator_class(method).config_class(**cfg), gen)
    hist = json.loads(
        (gen / "history.json").read_text()
    )  # ldm: the latent UNet's phase (the autoencoder's under "vae")
    what = f"{cfg['size']}px{' (latent UNet)' if method == 'ldm' else ''}, batch {s['unet_batch']}, {precision}"
    b.add(method, f"train images/s, ours ({what})", hist["images_per_s"], "images/s")
    detail = {"config": cfg, "train": {k: hist[k] for k in ("steps", "seconds", "images_per_s", "precision")}}
    if "vae" in hist:
        detail["vae_train"] = {
            k: hist["vae"].get(k) for k in ("steps", "seconds", "images_per_s", "recon_psnr", "recon_ssim")
        }
    if (gen / "unet" / "config.json").is_file():
        plain = plain_unet_images(gen / "unet", s["unet_batch"], s["unet_steps"], device, dtype)
        b.add(method, "train images/s, plain torch loop on the saved UNet", plain, "images/s")
        b.add(method, "train ratio ours / plain", hist["images_per_s"] / plain, "x")
    else:
        detail["plain"] = "no diffusers UNet folder (unet/) in the generator folder: no plain baseline"
    b.details[method] = detail


def check_classifier(b: Bench, s: dict, data: Path, work: Path, precision: str, device, dtype) -> None:
    import pandas as pd

    from retinaug.classes import CODES
    from retinaug.classify import TrainConfig, fit, load_classifier, predict
    from retinaug.manifest import load_manifest

    df = load_manifest(data)
    train = df[df["split"] == "train"]
    train = task_subset(pd.concat([train] * (s["clf_images"] // len(train) + 1), ignore_index=True), s["clf_images"])
    classes = [c for c in CODES if (train["label"] == c).any()]
    val = df[df["split"] == "val"].head(s["clf_batch"])
    cfg = TrainConfig(
        backbone=s["clf_backbone"],
        size=s["clf_size"],
        task=",".join(classes),
        epochs=2,
        patience=2,
        batch_size=s["clf_batch"],
        augment=False,
        mixed_precision=precision,
        cpu=device.type == "cpu",
    )
    meta = fit(train, val, cfg, work / "classifier")
    ours_train = rate(len(train), meta["history"][-1]["seconds"])  # epoch 2: warm; includes validating `val`
    clf = load_classifier(work / "classifier", device)
    predict(clf, train.head(s["clf_batch"]))
    with timer({}) as t:
        predict(clf, train, batch_size=s["clf_batch"])
    ours_predict = rate(len(train), t["s"])
    plain_train, plain_predict = plain_classifier_images(
        s["clf_backbone"], s["clf_size"], s["clf_batch"], s["clf_images"], len(classes), device, dtype
    )
    what = f"{s['clf_backbone']} {s['clf_size']}px, batch {s['clf_batch']}, {precision}"
    b.add("classifier", f"train images/s, ours `fit` ({what})", ours_train, "images/s")
    b.add("classifier", "train images/s, plain torch loop", plain_train, "images/s")
    b.add("classifier", "train ratio ours / plain", ours_train / plain_train, "x")
    b.add("classifier", "predict images/s, ours `predict`", ours_predict, "images/s")
    b.add("classifier", "predict images/s, plain forward", plain_predict, "images/s")
    b.add("classifier", "predict ratio ours / plain", ours_predict / plain_predict, "x")
    b.details["classifier"] = {
        "config": cfg.model_dump(mode="json"),
        "train_images": len(train),
        "timings": meta["timings"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny models and images: runs on a CPU (the test's smoke run)")
    p.add_argument(
        "--precision", choices=["bf16", "fp16", "no"], default=None, help="default: bf16 on a GPU, no (fp32) on a CPU"
    )
    p.add_argument(
        "--sections",
        default="sd-lora,ddpm,ldm,classifier",
        help="comma-separated subset of sd-lora,ddpm,ldm,classifier",
    )
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/gpu-check-TAG.json)")
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary work folder (the random SD 1.5 model alone is 4 GB)"
    )
    args = p.parse_args(argv)
    sections = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(sections) - {"sd-lora", "ddpm", "ldm", "classifier"})
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}")
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("skipped: no CUDA GPU here; `--tiny` runs the same code paths at tiny sizes on the CPU")
        return 0
    device = torch.device("cuda" if cuda else "cpu")
    precision = args.precision or ("bf16" if cuda else "no")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[precision]
    if not cuda:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("RETINAUG_QUIET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = SIZES["tiny" if args.tiny else "real"]
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.environ["RETINAUG_CACHE_DIR"] = str(work / "cache")
    facts = machine_facts("cuda" if cuda else "cpu")
    tag = "tiny-" + facts.get("gpu", "cpu") if args.tiny else facts.get("gpu", "cpu")
    tag = "".join(ch if ch.isalnum() else "-" for ch in tag.lower()).strip("-")
    out = args.out or HERE / "results" / f"gpu-check-{tag}.json"
    b = Bench()
    start = time.perf_counter()
    try:
        from retinaug.phantom import PhantomConfig, make_phantom

        data = work / "data"
        run = {
            "phantom": lambda: make_phantom(PhantomConfig(n=s["phantom_n"], size=s["phantom_size"], seed=0), data),
            "sd-lora": lambda: check_sd(b, s, data, work, precision, device, dtype),
            "ddpm": lambda: check_unet_generator(b, s, data, work, "ddpm", precision, device, dtype),
            "ldm": lambda: check_unet_generator(b, s, data, work, "ldm", precision, device, dtype),
            "classifier": lambda: check_classifier(b, s, data, work, precision, device, dtype),
        }
        seconds = run_sections(run, ["phantom", *sections], "gpu-check")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "tiny": args.tiny,
        "precision": precision,
        "machine": facts,
        "sizes": s,
        "sections": sections,
        "section_seconds": seconds,
        "total_seconds": round(time.perf_counter() - start, 1),
        "rows": b.rows,
        "details": b.details,
        "note": "ratio = ours / plain on the same model (1.0: no overhead); wall-clock, CUDA synchronised",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(b.table())
    print(f"\n{result['total_seconds']:.0f} s; `{result['command']}` -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
