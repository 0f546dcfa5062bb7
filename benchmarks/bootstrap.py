"""The patient bootstrap's cost: scoring each replicate with sklearn (`compute_metrics` on the resampled rows, as
the bootstrap did before) against scoring blocks of replicates as weightings (`patient_bootstrap` today).

Every fit of the experiments stage runs `experiments.n_boot` replicates (demo 100, odir-cpu and paper 1,000), so
this is per-fit overhead. Sizes follow the presets' test splits; synthetic predictions, since the cost depends
on the sizes, not on what was predicted. The sklearn path is timed on a subset of replicates and scaled.

  python benchmarks/bootstrap.py --name cpu-2core
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from retinaug.classify.evaluate import patient_bootstrap
from retinaug.classify.metrics import compute_metrics
from retinaug.hardware import environment
from retinaug.io import write_json_atomic

SIZES = {  # name: (test images, patients, classes)
    "demo 5-class": (56, 28, 5),
    "demo 7-class": (300, 150, 7),
    "odir-cpu 5-class": (126, 82, 5),  # split seed 0 of the shared copy
    "odir-cpu 7-class": (640, 388, 7),  # its 738 test images less class O, about
}


def per_replicate_sklearn(y, probs, patients, classes, reps: int, seed: int) -> float:
    """Seconds per replicate of the old loop: draw patients, gather their rows, compute_metrics."""
    rng = np.random.default_rng(seed)
    codes, inverse = np.unique(patients, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(codes))]
    t = time.perf_counter()
    for _ in range(reps):
        idx = np.concatenate([rows_of[i] for i in rng.integers(0, len(codes), len(codes))])
        compute_metrics(y[idx], probs[idx], classes)
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-boot", type=int, default=1000, help="replicates of the weighted path (the presets' 1,000)")
    ap.add_argument("--sklearn-reps", type=int, default=50, help="replicates timed on the sklearn path, then scaled")
    ap.add_argument("--name", default="cpu", help="results file benchmarks/results/bootstrap-NAME.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for label, (n, n_patients, k) in SIZES.items():
        classes = tuple("GCAHMDN"[:k])
        y = rng.integers(0, k, n)
        probs = rng.dirichlet(np.ones(k), n)
        patients = rng.integers(0, n_patients, n)
        old = per_replicate_sklearn(y, probs, patients, classes, args.sklearn_reps, 0) * args.n_boot
        t = time.perf_counter()
        patient_bootstrap(y, probs, patients, classes, args.n_boot, 0)
        new = time.perf_counter() - t
        rows.append(
            {
                "size": label,
                "images": n,
                "classes": k,
                "n_boot": args.n_boot,
                "sklearn_s": round(old, 3),
                "weighted_s": round(new, 3),
                "speedup": round(old / new, 1),
            }
        )
        print(f"{label:18s} {n:4d} images  sklearn {old:7.2f} s  weighted {new:6.3f} s  {old / new:6.1f}x")
    out = Path(__file__).parent / "results" / f"bootstrap-{args.name}.json"
    write_json_atomic(out, {"environment": environment(), "rows": rows})
    print(f"-> {out}")


if __name__ == "__main__":
    main()
