"""Classifier benchmark: fit on a prepared dataset's train split, evaluate on its test split, record time + metrics.

Examples (prepare the data first):
  retinaug prepare odir ../shared/data/odir5k-256 --out /tmp/odir/data
  python benchmarks/classifier.py --data /tmp/odir/data --name odir-5class-96px-resnet18 --task 5-class --size 96 \
      --backbone resnet18 --epochs 20 --imbalance class-weights
  retinaug prepare phantom --out /tmp/ph/data --n 1000 --size 64 --proportions uniform
  python benchmarks/classifier.py --data /tmp/ph/data --name phantom-8class-64px-resnet10t --task 8-class --backbone resnet10t
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

from retinaug.classify import EvaluateConfig, TrainConfig, evaluate, train
from retinaug.io import write_json_atomic
from retinaug.manifest import load_manifest

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared data folder (train/val/test splits)")
    p.add_argument("--name", required=True, help="result name: writes benchmarks/results/classifier-NAME.json")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: a temporary folder)")
    p.add_argument("--n-boot", type=int, default=1000)
    for field in ("backbone", "size", "task", "epochs", "batch_size", "lr", "imbalance", "patience", "seed"):
        p.add_argument("--" + field.replace("_", "-"), dest=field, type=type(TrainConfig.model_fields[field].default))
    args = p.parse_args()
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in TrainConfig.model_fields and v is not None})
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="clf-bench-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
    t0 = time.perf_counter()
    meta = train(args.data, config, out)
    fit_s = time.perf_counter() - t0
    df = load_manifest(args.data)
    metrics = evaluate(out, df, EvaluateConfig(n_boot=args.n_boot), out / "eval")
    keys = (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_f1",
        "kappa",
        "macro_auc",
        "odir_score",
    )
    result = {
        "name": args.name,
        "data": str(args.data),
        "config": config.model_dump(mode="json"),
        "fit_wall_s": round(fit_s, 1),
        "fit_cpu_s": meta["timings"]["cpu_s"],
        "epochs_run": len(meta["history"]),
        "best_epoch": meta["best_epoch"],
        "n_train": meta["n_train"],
        "n_test": metrics["n_images"],
        "test": {k: metrics[k] for k in keys},
        "test_ci95": {k: metrics["ci"][k] for k in keys},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "note": "wall time on a shared machine is inflated by other jobs; fit_cpu_s is the fit's own CPU time",
    }
    path = write_json_atomic(RESULTS / f"classifier-{args.name}.json", result)
    print(json.dumps(result["test"], indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
