"""Similarity-matcher benchmark: the seed's per-pair approach vs `retinaug.quality.match`, same images and model.

The seed's photo_similarity_matcher notebook looped over every (synthetic, real) pair and, inside the loop,
decoded both images and ran CLIP on both (2 forward passes per pair, N x M pairs). Ours embeds each image
once in batches and takes the top-k by blocked matrix products, then SSIM on the top pairs only.

Both sides use the same feature model: a small randomly initialised CLIP (vision tower at --size px) saved to a
local folder, because no pretrained weights can be downloaded; the cost structure (forward passes per pair vs
per image) is what is measured. The seed approach is timed on --seed-pairs pairs and extrapolated to all
N x M pairs (said so in the JSON); its cosines are checked against ours for those pairs.

Examples:
  python benchmarks/matcher.py                                  # 300 x 300 phantom images at 128 px
  retinaug prepare odir ../shared/data/odir5k-256 --out /tmp/odir/data
  python benchmarks/matcher.py --data /tmp/odir/data --name odir
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from retinaug.cache import load_image
from retinaug.features import CLIPExtractor, l2_normalise
from retinaug.io import write_json_atomic
from retinaug.manifest import load_manifest
from retinaug.quality import match
from retinaug.quality.config import MatchConfig

RESULTS = Path(__file__).resolve().parent / "results"


def tiny_clip(folder: Path, size: int) -> Path:
    """A small random CLIP (ViT vision tower, patch 16) in Hugging Face layout."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4
        ),
        vision_config=dict(
            image_size=size,
            patch_size=16,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
        ),
        projection_dim=64,
    )
    CLIPModel(config).save_pretrained(folder)
    return folder


def seed_approach(
    ext: CLIPExtractor, query: list[str], reference: list[str], pairs: list[tuple[int, int]]
) -> list[float]:
    """The seed's loop: for each pair, decode both images from disk and run the model on each, one at a time."""
    sims = []
    for i, j in pairs:
        a = ext.embed_images(load_image(query[i], ext.size)[None])
        b = ext.embed_images(load_image(reference[j], ext.size)[None])
        sims.append(float((a @ b.T).item() / (np.linalg.norm(a) * np.linalg.norm(b))))
    return sims


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, default=None, help="prepared data folder (default: a phantom set made in a temp folder)"
    )
    p.add_argument("--n", type=int, default=300, help="query images and reference images (N x N pairs)")
    p.add_argument("--size", type=int, default=128, help="model input size in px")
    p.add_argument("--seed-pairs", type=int, default=200, help="pairs timed for the seed approach (then extrapolated)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--name", default="phantom", help="writes benchmarks/results/matcher-NAME.json")
    args = p.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="matcher-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # models and samples: only the JSON is kept
    if args.data is None:
        from retinaug.phantom import PhantomConfig, make_phantom

        make_phantom(PhantomConfig(n=2 * args.n, size=args.size, seed=0), work / "data")
        args.data = work / "data"
    df = load_manifest(args.data)
    if len(df) < 2 * args.n:
        raise SystemExit(f"{args.data} has {len(df)} images; need {2 * args.n}")
    query, reference = df.iloc[: args.n].reset_index(drop=True), df.iloc[args.n : 2 * args.n].reset_index(drop=True)
    ext = CLIPExtractor(tiny_clip(work / "clip", args.size))

    rng = np.random.default_rng(0)
    pairs = [
        (int(i), int(j))
        for i, j in zip(rng.integers(0, args.n, args.seed_pairs), rng.integers(0, args.n, args.seed_pairs))
    ]
    t0 = time.perf_counter()
    seed_sims = seed_approach(ext, query["path"].tolist(), reference["path"].tolist(), pairs)
    seed_per_pair = (time.perf_counter() - t0) / len(pairs)
    seed_total = seed_per_pair * args.n * args.n

    timings = {}
    for run in ("cold", "warm"):  # cold: decodes the images into the cache first; warm: cache already built
        t0 = time.perf_counter()
        table = match(
            query, reference, MatchConfig(top_k=args.top_k, extractor=str(work / "clip")), work / f"match-{run}"
        )
        timings[run] = time.perf_counter() - t0
    q, r = l2_normalise(ext(query)), l2_normalise(ext(reference))
    ours_sims = [float(q[i] @ r[j]) for i, j in pairs]
    result = {
        "name": args.name,
        "data": str(args.data),
        "n_query": args.n,
        "n_reference": args.n,
        "size_px": args.size,
        "model": "random CLIP ViT (4 layers, width 128, patch 16, projection 64), built locally",
        "seed_approach": {
            "pairs_timed": len(pairs),
            "seconds_per_pair": round(seed_per_pair, 5),
            "extrapolated_seconds_all_pairs": round(seed_total, 1),
            "note": f"timed on {len(pairs)} random pairs and extrapolated linearly to {args.n} x {args.n} pairs",
        },
        "ours": {
            "seconds_cold_cache": round(timings["cold"], 2),
            "seconds_warm_cache": round(timings["warm"], 2),
            "top_k": args.top_k,
            "rows": len(table),
            "includes": "embedding all images once, blocked top-k, SSIM on the top-k pairs, match.csv + match.png",
        },
        "speedup_cold": round(seed_total / timings["cold"], 1),
        "speedup_warm": round(seed_total / timings["warm"], 1),
        "max_abs_cosine_difference_on_timed_pairs": float(np.max(np.abs(np.array(seed_sims) - np.array(ours_sims)))),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "note": "wall times on a shared machine (see load_average) are inflated by other jobs, for both approaches alike",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"matcher-{args.name}.json"
    write_json_atomic(target, result)
    print(
        f"seed per-pair: {seed_per_pair * 1e3:.1f} ms/pair -> {seed_total:.0f} s for {args.n}x{args.n}; "
        f"ours: {timings['cold']:.1f} s cold, {timings['warm']:.1f} s warm; speedup {result['speedup_cold']}x cold, "
        f"{result['speedup_warm']}x warm; wrote {target}"
    )


if __name__ == "__main__":
    main()
