"""Generator benchmark: train the ddpm generator, then time sampling; records images/s for both.

By default it renders the demo's phantom dataset (560 images, 32 px) into a temporary folder and trains
the ddpm with its defaults (the CPU demo size, 32 px) unless overridden with --set. Training images/s
counts images seen by the optimiser (steps x batch); sampling images/s is for `generate` at --batch-size
with the configured steps and guidance (guidance != 1 doubles the UNet batch).

Examples:
  python benchmarks/generators.py                                  # ddpm defaults, phantom 32 px
  python benchmarks/generators.py --set steps=200 --name quick
  retinaug prepare odir ../shared/data/odir5k-256 --out /tmp/odir/data
  python benchmarks/generators.py --data /tmp/odir/data --set size=64 --name odir-64px
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

from retinaug.errors import validated
from retinaug.generate import DDPMConfig, GenerateConfig, finetune, generate
from retinaug.io import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, default=None, help="prepared data folder (default: render 560 phantom images at 32 px)"
    )
    p.add_argument("--name", default="ddpm-demo", help="writes benchmarks/results/generators-NAME.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="ddpm config key=value (YAML value)")
    p.add_argument("--per-class", type=int, default=16, help="images per class to sample for the sampling timing")
    p.add_argument("--batch-size", type=int, default=64, help="sampling batch size")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gen-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # models and samples: only the JSON is kept
    data = args.data
    if data is None:
        from retinaug.phantom import PhantomConfig, make_phantom

        data = work / "data"
        make_phantom(PhantomConfig(n=560, size=32, seed=0, val=0.2, test=0.25), data)
    config: dict = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        config[key] = yaml.safe_load(value)

    load_before = os.getloadavg()
    cpu0 = time.process_time()
    meta = finetune(data, validated(DDPMConfig, config, "ddpm config"), work / "generator")
    train_cpu = time.process_time() - cpu0
    history = json.loads((work / "generator" / "history.json").read_text())
    t0, cpu0 = time.perf_counter(), time.process_time()
    sampling = GenerateConfig(per_class=args.per_class, batch_size=args.batch_size)
    df = generate(work / "generator", data, sampling, work / "synthetic")
    sample_s, sample_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    samples_png = RESULTS / f"generators-{args.name}-samples.png"
    shutil.copyfile(work / "generator" / "samples.png", samples_png)
    result = {
        "name": args.name,
        "data": str(data),
        "config": meta["config"],
        "classes": meta["classes"],
        "n_train_images": meta["n_train_images"],
        "train": {
            "steps": history["steps"],
            "seconds": round(history["seconds"], 1),
            "images_per_s": round(history["images_per_s"], 1),
            "final_loss": history["loss"][-1],
            "cpu_seconds": round(train_cpu, 1),
        },
        "sample": {
            "images": len(df),
            "batch_size": args.batch_size,
            "steps": int(df["steps"].iloc[0]),
            "guidance": float(df["guidance"].iloc[0]),
            "seconds": round(sample_s, 1),
            "images_per_s": round(len(df) / sample_s, 1),
            "cpu_seconds": round(sample_cpu, 1),
        },
        "samples_png": samples_png.name,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "platform": platform.platform(),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
        },
        "note": "wall timings on a shared machine are inflated when the load average exceeds the core count; "
        "cpu_seconds (this process's CPU time, all threads) is less sensitive to it",
    }
    out = write_json_atomic(RESULTS / f"generators-{args.name}.json", result)
    print(json.dumps(result, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
