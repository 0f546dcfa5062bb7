"""Performance figures: throughput of every heavy step, on CPU (default) or on a GPU (`--device cuda`).

Sections (each times the library's own code, on phantom images rendered into a temporary folder):
  phantom     `make_phantom` rendering (always run when a section needs the images), images/s
  cache       image cache build (decode + resize), images/s
  classifier  `fit` for a fixed number of steps (the last of 2 epochs is timed) and `predict`, images/s,
              for the demo's backbone and resnet18 at 64, 96 and 128 px
  ddpm        `finetune` at the demo preset's ddpm config (training images/s) and `generate` images/s per
              DPM-Solver step count
  tsne        `retinaug.select.tsne_map` (PCA + sklearn t-SNE) on 2k clustered 512-d points, seconds
  matcher     benchmarks/matcher.py (subprocess): ours vs the seed's per-pair matcher, speedup
  sd-tiny     sd-lora training steps/s and txt2img images/s with the tiny SD of tests/tiny_sd.py
  sd-real     the same with a random SD 1.5-size model (UNet2DConditionModel defaults, 512 px, 25 steps)
              plus diffusers' plain StableDiffusionPipeline defaults (fp32, batch 1) on that model: ratio
  demo        (--demo) wall time and peak RSS of `retinaug demo` as a subprocess

CPU runs do cache, classifier, ddpm, tsne, matcher; `--device cuda` adds sd-tiny and sd-real (skipped with a
note when no GPU is present). Writes benchmarks/results/perf-TAG.json and prints a Markdown table.

Examples:
  python benchmarks/perf.py                                   # CPU, full size (takes a while on 2 cores)
  python benchmarks/perf.py --demo                            # + the whole demo's wall time and peak memory
  python benchmarks/perf.py --device cuda --precision bf16    # GPU
  python benchmarks/perf.py --quick                           # smoke test: tiny sizes, well under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CPU_SECTIONS = ("cache", "classifier", "ddpm", "tsne", "matcher")
GPU_SECTIONS = CPU_SECTIONS + ("sd-tiny", "sd-real")
ALL_SECTIONS = GPU_SECTIONS + ("demo",)

# full: what the lead runs on an idle machine; quick: a smoke test of every code path in seconds
SETTINGS = {
    "full": dict(
        phantom_n=1000,
        phantom_size=128,
        cache_size=64,
        clf_sizes=[64, 96, 128],
        clf_steps=8,
        clf_batch=32,
        infer_n=512,
        ddpm_steps=50,
        sample_steps=[10, 20, 50],
        sample_per_class=8,
        tsne_n=2000,
        matcher=["--n", "300", "--seed-pairs", "200", "--size", "128"],
        sd_steps=20,
        sd_images=8,
        sd_batch=4,
        sd_sample_steps=25,
        plain_images=3,
    ),
    "quick": dict(
        phantom_n=96,
        phantom_size=64,
        cache_size=32,
        clf_sizes=[32],
        clf_steps=2,
        clf_batch=8,
        infer_n=32,
        ddpm_steps=3,
        sample_steps=[2, 4],
        sample_per_class=1,
        tsne_n=200,
        matcher=["--n", "24", "--seed-pairs", "6", "--size", "32", "--top-k", "3"],
        sd_steps=2,
        sd_images=2,
        sd_batch=2,
        sd_sample_steps=2,
        plain_images=1,
    ),
}


class Bench:
    """Collects result rows {section, what, value, unit} plus each section's raw details."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.details: dict[str, dict] = {}

    def add(self, section: str, what: str, value: float | None, unit: str) -> None:
        self.rows.append(
            {"section": section, "what": what, "value": None if value is None else round(value, 3), "unit": unit}
        )

    def table(self) -> str:
        lines = ["| section | measurement | value | unit |", "|---|---|---:|---|"]
        for r in self.rows:
            value = "-" if r["value"] is None else f"{r['value']:g}"
            lines.append(f"| {r['section']} | {r['what']} | {value} | {r['unit']} |")
        return "\n".join(lines)


def machine_facts(device: str) -> dict:
    import torch

    from retinaug.hardware import cpu_model

    facts = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": device,
    }
    if device == "cuda":
        facts.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return facts


def default_tag(device: str, quick: bool) -> str:
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else f"{os.cpu_count()}cpu"
    return re.sub(r"[^a-z0-9]+", "-", f"{device}-{name}".lower()).strip("-") + ("-quick" if quick else "")


@contextlib.contextmanager
def timer(out: dict):
    """Wall seconds of the block in out['s'] (CUDA work is synchronised first) and the 1-minute load average."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    yield out
    sync()
    out["s"] = time.perf_counter() - t0
    out["load_1min"] = round(os.getloadavg()[0], 2)


def run_sections(run: dict, names: list[str], label: str) -> dict[str, float]:
    """Call `run[name]()` for each name, stage logs on stderr (stdout stays the table); seconds per section."""
    seconds = {}
    with contextlib.redirect_stdout(sys.stderr):
        for name in names:
            with timer({}) as t:
                run[name]()
            seconds[name] = round(t["s"], 1)
            print(f"[{label}] {name}: {t['s']:.1f}s", file=sys.stderr)
    return seconds


def task_subset(df, n: int):
    """`n` rows with every class present (fit refuses a task class with no image)."""
    import pandas as pd

    first = df.groupby("label").head(1)
    rest = df.drop(first.index).sample(frac=1.0, random_state=0)
    return pd.concat([first, rest]).head(max(n, len(first)))


def bench_cache(b: Bench, s: dict, data: Path, work: Path) -> None:
    from retinaug.cache import image_cache
    from retinaug.manifest import load_manifest

    df = load_manifest(data)
    with timer({}) as t:
        image_cache(df, s["cache_size"], cache_dir=work / "cache-bench")
    b.add("cache", f"build {len(df)} images {s['phantom_size']}->{s['cache_size']} px", len(df) / t["s"], "images/s")
    b.details["cache"] = {"images": len(df), **t}


def bench_classifier(b: Bench, s: dict, data: Path, work: Path, device: str, precision: str) -> None:
    import pandas as pd

    from retinaug.classify import TrainConfig, fit, load_classifier, predict
    from retinaug.config import load_config
    from retinaug.manifest import load_manifest

    df = load_manifest(data)
    n_train = s["clf_steps"] * s["clf_batch"]
    train = task_subset(df[df["split"] == "train"], n_train)
    val = df[df["split"] == "val"].head(s["clf_batch"])
    infer = pd.concat([df] * (s["infer_n"] // len(df) + 1)).head(s["infer_n"])
    demo_backbone = load_config(None, "demo").labeler.train.backbone
    details = []
    for backbone in dict.fromkeys([demo_backbone, "resnet18"]):
        for size in s["clf_sizes"]:
            cfg = TrainConfig(
                backbone=backbone,
                size=size,
                task="8-class",
                epochs=2,
                batch_size=s["clf_batch"],
                patience=2,
                mixed_precision=precision,
                cpu=device == "cpu",
            )
            out = work / f"clf-{backbone}-{size}"
            meta = fit(train, val, cfg, out)
            last = meta["history"][-1]  # epoch 2: warm (allocator, oneDNN/cuDNN kernels chosen)
            clf = load_classifier(out, device)
            predict(clf, infer.head(s["clf_batch"]))  # warm-up
            with timer({}) as t:
                predict(clf, infer)
            what = f"{backbone} {size}px train (batch {s['clf_batch']}, {len(train)} img/epoch)"
            b.add("classifier", what, len(train) / last["seconds"], "images/s")
            b.add("classifier", f"{backbone} {size}px predict (batch 64)", len(infer) / t["s"], "images/s")
            details.append(
                {
                    "backbone": backbone,
                    "size": size,
                    "train_images": len(train),
                    "epoch_s": last["seconds"],
                    "val_images": len(val),
                    "predict_images": len(infer),
                    "predict": t,
                    "timings": meta["timings"],
                }
            )
    b.details["classifier"] = {"runs": details, "note": "train epoch time includes validating on val_images images"}


def bench_ddpm(b: Bench, s: dict, data: Path, work: Path, precision: str) -> None:
    from retinaug.config import load_config
    from retinaug.generate import DDPMConfig, GenerateConfig, finetune, generate

    cfg = load_config(None, "demo").generator.ddpm.model_dump()
    cfg.update(
        steps=s["ddpm_steps"],
        samples_per_class=1,
        warmup_steps=min(cfg["warmup_steps"], s["ddpm_steps"]),
        mixed_precision=precision,
    )
    finetune(data, DDPMConfig(**cfg), work / "ddpm")
    history = json.loads((work / "ddpm" / "history.json").read_text())
    what = f"train {cfg['size']}px demo UNet, batch {cfg['batch_size']}, {history['steps']} steps"
    b.add("ddpm", what, history["images_per_s"], "images/s")
    sampling = {}
    generate(work / "ddpm", data, GenerateConfig(per_class=1, steps=2, precision=precision), work / "ddpm-warmup")
    for steps in s["sample_steps"]:
        out = work / f"ddpm-sample-{steps}"
        sampling = GenerateConfig(per_class=s["sample_per_class"], steps=steps, batch_size=64, precision=precision)
        generate(work / "ddpm", data, sampling, out)
        record = json.loads((out / "generate.json").read_text())
        sampling[steps] = record
        what = f"sample {steps} {record['sampling']['scheduler']} steps, guidance {record['sampling']['guidance']}, batch 64"
        b.add("ddpm", what, record["images_per_s"], "images/s")
    b.details["ddpm"] = {"config": cfg, "train_seconds": history["seconds"], "sampling": sampling}


def bench_tsne(b: Bench, s: dict) -> None:
    import numpy as np

    from retinaug.select import SelectConfig, tsne_map

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (8, 512))
    x = centres[rng.integers(0, 8, s["tsne_n"])] + rng.normal(0, 1, (s["tsne_n"], 512))
    with timer({}) as t:
        tsne_map(x.astype(np.float32), SelectConfig())
    b.add("tsne", f"PCA-50 + t-SNE of {s['tsne_n']} x 512 features", t["s"], "s")
    b.details["tsne"] = {"points": s["tsne_n"], **t}


def bench_matcher(b: Bench, s: dict, data: Path, tag: str) -> None:
    name = f"perf-{tag}"
    cmd = [sys.executable, str(HERE / "matcher.py"), "--data", str(data), *s["matcher"], "--name", name]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    result = json.loads((RESULTS / f"matcher-{name}.json").read_text())
    n = result["n_query"]
    b.add("matcher", f"ours, {n} x {n} images, warm cache", result["ours"]["seconds_warm_cache"], "s")
    b.add(
        "matcher",
        f"seed per-pair approach, {n} x {n} (extrapolated)",
        result["seed_approach"]["extrapolated_seconds_all_pairs"],
        "s",
    )
    b.add("matcher", "speedup ours vs per-pair (warm cache)", result["speedup_warm"], "x")
    b.details["matcher"] = {"json": str(RESULTS / f"matcher-{name}.json"), **result}


def build_sd(folder: Path, full: bool) -> Path:
    """A random Stable Diffusion 1.5-shaped model (diffusers layout): UNet2DConditionModel defaults with SD 1.5's
    768-wide text context and 64x64 latents, SD's VAE and a CLIP ViT-L-sized text encoder. `full=False` keeps the
    layout but divides the widths (a smoke test of this code path)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tiny_sd import write_tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tiny_tokenizer(folder.parent / f".{folder.name}-tokenizer"))
    ctx = 768 if full else 64
    unet = (
        UNet2DConditionModel(sample_size=64, cross_attention_dim=ctx)
        if full
        else UNet2DConditionModel(
            sample_size=8, cross_attention_dim=ctx, block_out_channels=(32, 64, 64, 64), attention_head_dim=4
        )
    )
    vae_widths = (128, 256, 512, 512) if full else (32, 32, 32, 32)
    vae = AutoencoderKL(
        block_out_channels=vae_widths,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512 if full else 64,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=ctx,
            intermediate_size=4 * ctx,
            num_attention_heads=12 if full else 4,
            num_hidden_layers=12 if full else 2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)
    return folder


def bench_sd(
    b: Bench, s: dict, data: Path, work: Path, precision: str, name: str, base: Path, size: int, steps: int, plain: bool
) -> None:
    """sd-lora training steps/s and our txt2img images/s; with `plain`, diffusers' default pipeline on the same model."""
    import torch
    from diffusers import StableDiffusionPipeline

    from retinaug.generate import GenerateConfig, SDLoRAConfig, finetune, generate

    cfg = SDLoRAConfig(
        base_model=str(base),
        size=size,
        steps=s["sd_steps"],
        batch_size=1,
        grad_accum=1,
        warmup_steps=0,
        train_classes=["N", "D"],
        samples_per_class=1,
        mixed_precision=precision,
    )
    gen = work / f"{name}-lora"
    finetune(data, cfg, gen)
    history = json.loads((gen / "history.json").read_text())
    b.add(
        name,
        f"sd-lora train {size}px, batch 1, {history['steps']} steps",
        history["steps"] / history["seconds"],
        "steps/s",
    )
    warmup = GenerateConfig(per_class=1, classes=["N"], batch_size=1, steps=steps, precision=precision)
    generate(gen, data, warmup, work / f"{name}-warmup")
    out = work / f"{name}-samples"
    sampling = GenerateConfig(
        per_class=s["sd_images"], classes=["N"], batch_size=s["sd_batch"], steps=steps, precision=precision
    )
    generate(gen, data, sampling, out)
    ours = json.loads((out / "generate.json").read_text())
    dtype = precision if precision != "no" else "fp32"
    b.add(
        name, f"ours txt2img {size}px, {steps} steps, batch {s['sd_batch']}, {dtype}", ours["images_per_s"], "images/s"
    )
    detail = {"config": cfg.model_dump(mode="json"), "train": history, "ours": ours}
    if plain:
        pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True).to(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        pipe.set_progress_bar_config(disable=True)
        prompt = cfg.prompt("N")
        pipe(prompt, num_inference_steps=steps)  # warm-up
        with timer({}) as t:
            for _ in range(s["plain_images"]):
                pipe(prompt, num_inference_steps=steps)
        plain_rate = s["plain_images"] / t["s"]
        b.add(
            name,
            f"diffusers plain pipeline {size}px, {steps} steps (fp32, batch 1, default scheduler)",
            plain_rate,
            "images/s",
        )
        b.add(name, "speedup ours vs plain pipeline", ours["images_per_s"] / plain_rate, "x")
        detail["plain"] = {"images": s["plain_images"], **t}
        detail["note"] = (
            "ours: `generate` with the LoRA loaded (DPM-Solver++, guidance 7.5, batch sd_batch, the --precision "
            "dtype); plain: StableDiffusionPipeline.from_pretrained defaults (fp32, the folder's PNDM, guidance 7.5, "
            "batch 1); same steps and size"
        )
    b.details[name] = detail


def bench_demo(b: Bench, work: Path, overrides: list[str]) -> None:
    """Wall time and peak RSS of the whole `retinaug demo` (the largest child process's maxrss: run it first)."""
    cmd = [str(Path(sys.executable).with_name("retinaug")), "demo", "--out", str(work / "demo")]
    for item in overrides:
        cmd += ["--set", item]
    with timer({}) as t:
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    b.add("demo", "`retinaug demo` wall time" + (" (with --set overrides)" if overrides else ""), t["s"] / 60, "min")
    b.add("demo", "`retinaug demo` peak RSS", peak_mb, "MiB")
    b.details["demo"] = {"command": shlex.join(cmd), "peak_rss_mib": peak_mb, **t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (hides any GPU) or cuda")
    p.add_argument(
        "--precision", choices=["no", "bf16", "fp16"], default="no", help="mixed precision for training/sampling"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps: a smoke test of every code path")
    p.add_argument("--demo", action="store_true", help="also time the whole `retinaug demo` (minutes)")
    p.add_argument(
        "--demo-set", action="append", default=[], help="`--set KEY=VALUE` passed to the demo (e.g. to shrink it)"
    )
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(ALL_SECTIONS)}")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch (and subprocess OpenMP) threads (default: torch's choice; 1 with --quick)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (data, models, samples)")
    p.add_argument(
        "--tag", default=None, help="machine tag: writes benchmarks/results/perf-TAG.json (default from the device)"
    )
    args = p.parse_args()
    sections = (
        args.sections.split(",") if args.sections else list(CPU_SECTIONS if args.device == "cpu" else GPU_SECTIONS)
    )
    if args.demo and "demo" not in sections:
        sections.append("demo")
    unknown = sorted(set(sections) - set(ALL_SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(ALL_SECTIONS)}")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # every stage (and subprocess) then runs on the CPU
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: --device cuda but no CUDA device is available; nothing written")
        return
    if args.quick and args.threads is None:
        args.threads = 1  # tiny models: one thread is as fast, and spares a busy machine OpenMP stalls
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the matcher and demo subprocesses too
    os.environ.setdefault("RETINAUG_QUIET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="perf-bench-"))
    os.environ["RETINAUG_CACHE_DIR"] = str(work / "cache")  # cold, private image cache
    sys.path.insert(0, str(HERE.parent / "tests"))  # tiny_sd
    tag = args.tag or default_tag(args.device, args.quick)
    result = {
        "tag": tag,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "quick": args.quick,
        "precision": args.precision,
    }
    s = SETTINGS["quick" if args.quick else "full"]
    result.update(machine=machine_facts(args.device), sections=sections, settings=s, load_before=os.getloadavg())

    b = Bench()
    data, sd_data = work / "data", work / "sd-data"
    from tiny_sd import make_tiny_sd

    from retinaug.phantom import PhantomConfig, make_phantom

    def phantom() -> None:
        with timer({}) as t:
            make_phantom(PhantomConfig(n=s["phantom_n"], size=s["phantom_size"], seed=0), data)
        b.add(
            "phantom", f"render {s['phantom_n']} images at {s['phantom_size']} px", s["phantom_n"] / t["s"], "images/s"
        )
        if {"sd-tiny", "sd-real"} & set(sections):
            make_phantom(PhantomConfig(n=96, size=64, seed=0), sd_data)

    run = {
        "demo": lambda: bench_demo(b, work, args.demo_set),
        "phantom": phantom,
        "cache": lambda: bench_cache(b, s, data, work),
        "classifier": lambda: bench_classifier(b, s, data, work, args.device, args.precision),
        "ddpm": lambda: bench_ddpm(b, s, data, work, args.precision),
        "tsne": lambda: bench_tsne(b, s),
        "matcher": lambda: bench_matcher(b, s, data, tag),
        "sd-tiny": lambda: bench_sd(
            b,
            s,
            sd_data,
            work,
            args.precision,
            "sd-tiny",
            make_tiny_sd(work / "tiny-sd"),
            32,
            s["sd_sample_steps"],
            plain=False,
        ),
        "sd-real": lambda: bench_sd(
            b,
            s,
            sd_data,
            work,
            args.precision,
            "sd-real",
            build_sd(work / "sd15-random", not args.quick),
            64 if args.quick else 512,
            s["sd_sample_steps"],
            plain=True,
        ),
    }
    try:
        needs_data = set(sections) - {"demo", "tsne"}
        section_s = run_sections(
            run, [n for n in run if n in sections or (n == "phantom" and needs_data)], "perf"
        )  # demo first: see bench_demo
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # the random SD 1.5 model alone is 4 GB

    result.update(
        work=str(work) if args.keep else None,
        load_after=os.getloadavg(),
        section_seconds=section_s,
        rows=b.rows,
        details=b.details,
        note="wall-clock timings; on a shared machine (load above the core count) they are inflated",
    )
    from retinaug.io import write_json_atomic

    path = write_json_atomic(RESULTS / f"perf-{tag}.json", result)
    print(
        f"**{tag}** ({result['machine']['cpu_model']}, {result['machine']['cpu_count']} cores, torch "
        f"{result['machine']['torch']}, {result['machine']['torch_threads']} threads, {result['date']})\n"
    )
    print(b.table())
    print(f"\n`{result['command']}` -> {path}")


if __name__ == "__main__":
    main()
