"""fp32 vs bf16 autocast, side by side in one process: classifier metrics over seeds, and speed per stage.

Answers the question behind `mixed_precision: auto`: on a CPU with bf16 units, is bf16 faster, and are the
results within seed noise of fp32? For each seed, the same classifier recipe is fitted once per precision
(alternating which goes first) and scored on the test split; the paired difference over seeds is reported
with its 95% t-interval. A short DDPM training run per precision gives the generator's training speed.

Examples (prepare the data first; pin to cores to keep other jobs out of the timings):
  retinaug prepare odir ../shared/data/odir5k-256 --out runs/bench/data
  taskset -c 0 python benchmarks/precision.py --data runs/bench/data --seeds 5 --threads 1 --name odir-1thread
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from retinaug.classify import EvaluateConfig, TrainConfig, evaluate, fit
from retinaug.generate import DDPMConfig, finetune
from retinaug.hardware import environment
from retinaug.io import write_json_atomic
from retinaug.manifest import load_manifest

RESULTS = Path(__file__).resolve().parent / "results"
PRECISIONS = ("no", "bf16")
METRICS = ("macro_f1", "macro_precision", "macro_recall", "accuracy")


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of b - a, its 95% t-interval and the paired t-test p (NaN below 2 pairs)."""
    d = np.asarray(b) - np.asarray(a)
    if len(d) < 2:
        return {"mean": float(d.mean()), "ci": [float("nan")] * 2, "p": float("nan")}
    lo, hi = (
        stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d)) if d.std() > 0 else (d.mean(), d.mean())
    )
    p = float(stats.ttest_rel(b, a).pvalue) if d.std() > 0 else float("nan")
    return {"mean": float(d.mean()), "ci": [float(lo), float(hi)], "p": p}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared data folder (train/val/test splits)")
    p.add_argument("--name", default="cpu", help="writes benchmarks/results/precision-NAME.json")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--task", default="5-class")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--backbone", default="resnet18", help="classifier backbone (the demo: resnet10t)")
    p.add_argument("--ddpm-steps", type=int, default=60, help="DDPM training steps per precision")
    p.add_argument("--ddpm-size", type=int, default=64, help="DDPM resolution (odir-cpu 64, the demo 32)")
    p.add_argument(
        "--ddpm-channels", default="32,64,128", help="UNet block_out_channels (odir-cpu 32,64,128; the demo 16,32,64)"
    )
    p.add_argument("--ddpm-batch", type=int, default=16, help="DDPM batch size (odir-cpu 16, the demo 32)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sections", default="classifier,ddpm", help="comma-separated: classifier, ddpm")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="precision-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    df = load_manifest(args.data)
    train, val, test = (df[(df["split"] == s) & (df["origin"] == "real")] for s in ("train", "val", "test"))

    runs: dict[str, list[dict]] = {pr: [] for pr in PRECISIONS}
    for seed in range(args.seeds if "classifier" in sections else 0):
        order = PRECISIONS if seed % 2 == 0 else PRECISIONS[::-1]
        for pr in order:
            cfg = TrainConfig(
                task=args.task,
                backbone=args.backbone,
                size=args.size,
                epochs=args.epochs,
                patience=args.epochs,
                batch_size=32,
                seed=seed,
                mixed_precision=pr,
            )
            t0 = time.perf_counter()
            meta = fit(train, val, cfg, work / f"{pr}-{seed}")
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            m = evaluate(
                work / f"{pr}-{seed}", test, EvaluateConfig(split="all", n_boot=0), work / f"{pr}-{seed}" / "eval"
            )
            runs[pr].append(
                {
                    "seed": seed,
                    "fit_s": round(fit_s, 1),
                    "train_s": meta["timings"]["train_s"],
                    "evaluate_s": round(time.perf_counter() - t0, 2),
                    "precision_used": meta["timings"]["precision"],
                    **{k: m[k] for k in METRICS},
                }
            )
            print(pr, runs[pr][-1], flush=True)

    ddpm = {}
    ddpm_cfg = dict(
        size=args.ddpm_size,
        steps=args.ddpm_steps,
        batch_size=args.ddpm_batch,
        lr=1e-3,
        norm_num_groups=8,
        block_out_channels=[int(c) for c in args.ddpm_channels.split(",")],
        attention_levels=[],
        warmup_steps=0,
        samples_per_class=1,
        train_classes=["G", "C", "A", "H", "M"],
    )
    for pr in PRECISIONS if "ddpm" in sections else ():
        finetune(args.data, DDPMConfig(**ddpm_cfg, mixed_precision=pr), work / f"ddpm-{pr}", checkpoint_every=0)
        history = json.loads((work / f"ddpm-{pr}" / "history.json").read_text())
        ddpm[pr] = {"images_per_s": round(history["images_per_s"], 2), "final_loss": history["loss"][-1]}
        print("ddpm", pr, ddpm[pr], flush=True)

    summary = (
        {k: paired([r[k] for r in runs["no"]], [r[k] for r in runs["bf16"]]) for k in METRICS} if runs["no"] else {}
    )
    speed = {}
    if runs["no"]:
        speed["classifier_train"] = float(
            np.mean([a["train_s"] / b["train_s"] for a, b in zip(runs["no"], runs["bf16"])])
        )
        speed["classifier_evaluate"] = float(
            np.mean([a["evaluate_s"] / b["evaluate_s"] for a, b in zip(runs["no"], runs["bf16"])])
        )
    if ddpm:
        speed["ddpm_train"] = ddpm["bf16"]["images_per_s"] / ddpm["no"]["images_per_s"]
    result = {
        "name": args.name,
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": environment(),
        "runs": runs,
        "ddpm": ddpm,
        "bf16_minus_fp32": summary,
        "speedup_bf16_over_fp32": speed,
    }
    path = write_json_atomic(RESULTS / f"precision-{args.name}.json", result)
    for k, v in summary.items():
        print(f"{k}: bf16 - fp32 = {v['mean']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] p={v['p']:.2g}")
    print("speed-up bf16/fp32:", {k: round(v, 2) for k, v in speed.items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
