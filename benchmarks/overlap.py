"""`check-overlap` at scale: N x N images (default 10,000 x 10,000) with a warm image cache, and how the cost grows.

B is N phantom images (seed 0); A is N images of which `--copies` (10%) are planted near-copies of random B images
(resized to 0.9-1.8x, re-encoded as JPEG, renamed) and the rest are other phantom patients (seed 1). Both are
rendered into a temporary folder (not timed). Timed, with the library's own functions:

- cold: `retinaug.quality.overlap.check_overlap(A, B)` on an empty image cache (decoding 2N images at 16 and 64 px
  included), once at the largest N;
- warm: the same at each N of `--sizes` (the first N rows of A and of B), plus its candidate search alone
  (features from the cache + blocked top-k cosine: the N x N part) — the rest is SSIM on N x top-k pairs and the
  CSV/PNG/JSON writing, linear in N.

Recall is measured on the planted copies whose original is among B's first N rows; a false pair is a flagged pair
that is not a planted copy with its original. The growth exponent is the slope of log(seconds) over log(N).

Examples:
  python benchmarks/overlap.py                          # 10,000 x 10,000 (rendering takes a few minutes)
  python benchmarks/overlap.py --n 1000 --sizes 250,500,1000 --name small
"""

from __future__ import annotations

import argparse
import atexit
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"


def plant(
    b: pd.DataFrame, others: pd.DataFrame, n_copies: int, folder: Path, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A = copies of `n_copies` random rows of B + rows of `others`, shuffled; returns (A, copy path -> original)."""
    rng = np.random.default_rng(seed)
    truth = {}
    rows = []
    for k, i in enumerate(rng.choice(len(b), n_copies, replace=False)):
        src = b.iloc[int(i)]
        target = folder / src["label"] / f"ext{k:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src["path"]) as im:
            side = int(round(im.width * rng.uniform(0.9, 1.8)))
            im.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(
                target, quality=int(rng.integers(80, 95))
            )
        truth[str(target)] = src["path"]
        rows.append({**src.to_dict(), "path": str(target), "patient_id": f"ext{k}", "source": "copy"})
    a = pd.concat([pd.DataFrame(rows), others], ignore_index=True)
    return a.sample(frac=1.0, random_state=seed).reset_index(drop=True), truth


def score(table: pd.DataFrame, truth: dict[str, str], b_paths: set[str]) -> dict:
    findable = {c: o for c, o in truth.items() if o in b_paths and c in set(table["a_path"])}
    flagged = table[table["duplicate"]]
    right = sum(truth.get(a) == b for a, b in zip(flagged["a_path"], flagged["b_path"]))
    return {
        "copies_findable": len(findable),
        "found": right,
        "recall": round(right / len(findable), 4) if findable else None,
        "false_pairs": int(len(flagged) - right),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="images in A and in B (even)")
    p.add_argument("--sizes", default="1000,2500,5000,10000", help="N at which the warm cost is measured (<= --n)")
    p.add_argument("--size", type=int, default=128, help="phantom image side in px")
    p.add_argument("--copies", type=float, default=0.1, help="fraction of A that are planted copies of B images")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--keep", type=Path, default=None, help="render into (and keep) this folder instead of a temporary one"
    )
    p.add_argument("--name", default="phantom", help="writes benchmarks/results/overlap-NAME.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.keep or Path(tempfile.mkdtemp(prefix="overlap-bench-"))
    if args.keep is None:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    os.environ["RETINAUG_CACHE_DIR"] = str(work / "cache")  # cold means cold: a private cache
    os.environ.setdefault("RETINAUG_QUIET", "1")

    from retinaug.features import get_extractor, l2_normalise
    from retinaug.fields import OVERLAP_THRESHOLD
    from retinaug.hardware import environment
    from retinaug.io import write_json_atomic
    from retinaug.phantom import PhantomConfig, make_phantom
    from retinaug.quality.config import OverlapConfig
    from retinaug.quality.match import topk_cosine
    from retinaug.quality.overlap import check_overlap

    sizes = sorted({int(s) for s in args.sizes.split(",") if int(s) <= args.n} | {args.n})
    n_copies = int(round(args.copies * args.n))
    t0 = time.perf_counter()
    b = make_phantom(PhantomConfig(n=args.n, size=args.size, seed=0, val=0.1, test=0.1), work / "b")
    b = b.sample(frac=1.0, random_state=1).reset_index(drop=True)
    n_others = args.n - n_copies + (args.n - n_copies) % 2
    others = make_phantom(PhantomConfig(n=n_others, size=args.size, seed=1, val=0.1, test=0.1), work / "others")
    a, truth = plant(b, others, n_copies, work / "ext")
    a = a.iloc[: args.n]
    render_s = time.perf_counter() - t0

    load = [os.getloadavg()]
    t0 = time.perf_counter()
    table, _ = check_overlap(a, b, OverlapConfig(top_k=args.top_k), work / "out-cold")
    cold = {"n": args.n, "seconds": round(time.perf_counter() - t0, 2), **score(table, truth, set(b["path"]))}
    rows = []
    for n in sizes:
        a_n, b_n = a.iloc[:n], b.iloc[:n]
        t0 = time.perf_counter()
        ext = get_extractor("pixels")
        topk_cosine(l2_normalise(ext(a_n)), l2_normalise(ext(b_n)), args.top_k)
        search = time.perf_counter() - t0
        t0 = time.perf_counter()
        table, summary = check_overlap(a_n, b_n, OverlapConfig(top_k=args.top_k), work / f"out-{n}")
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "n": n,
                "seconds_warm": round(seconds, 2),
                "seconds_search": round(search, 2),
                "seconds_ssim_and_writing": round(seconds - search, 2),
                "pairs_ssim": n * args.top_k,
                **score(table, truth, set(b_n["path"])),
                "load_average": os.getloadavg(),
            }
        )
        print(
            f"N={n}: {seconds:.1f} s warm (search {search:.1f} s), recall {rows[-1]['recall']}, false pairs {rows[-1]['false_pairs']}",
            flush=True,
        )
    load.append(os.getloadavg())
    ns, secs = np.array([r["n"] for r in rows], float), np.array([r["seconds_warm"] for r in rows], float)
    slopes = np.diff(np.log(secs)) / np.diff(np.log(ns)) if len(rows) > 1 else np.array([])
    quad, lin = np.linalg.lstsq(np.stack([ns**2, ns], 1), secs, rcond=None)[0] if len(rows) > 1 else (None, None)
    result = {
        "name": args.name,
        "command": shlex.join(["python", "benchmarks/overlap.py", *sys.argv[1:]]),
        "n": args.n,
        "image_px": args.size,
        "copies": n_copies,
        "top_k": args.top_k,
        "threshold": OVERLAP_THRESHOLD,
        "render_seconds": round(render_s, 1),
        "cold": cold,
        "warm": rows,
        "growth_exponent_between_sizes": [round(float(s), 2) for s in slopes],
        "fit_seconds": None
        if quad is None
        else {
            "per_n_squared": float(quad),
            "per_n": float(lin),
            "formula": "seconds ~ a * N^2 + b * N (least squares over the warm rows)",
        },
        "goal": "10,000 x 10,000 <= 60 s on 2 cores with a warm cache",
        "machine": {**environment(), "torch_threads": torch.get_num_threads()},
        "load_average": {"before": load[0], "after": load[1]},
        "note": "wall times on a shared machine (see load_average) are inflated by other jobs",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"overlap-{args.name}.json"
    write_json_atomic(target, result)
    print("| N x N | warm s | search s | SSIM + writing s | recall | false pairs |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['seconds_warm']} | {r['seconds_search']} | {r['seconds_ssim_and_writing']} | {r['recall']} | {r['false_pairs']} |"
        )
    print(
        f"cold at N={args.n}: {cold['seconds']} s; growth exponents {result['growth_exponent_between_sizes']}; wrote {target}"
    )


if __name__ == "__main__":
    main()
