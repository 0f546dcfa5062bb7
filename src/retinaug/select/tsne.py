"""t-SNE reduction of the dominant classes (the seed's step 4), on the training split only.

Train images of the dominant classes (default D and N) and of the context classes are embedded with a
feature extractor, reduced by PCA then t-SNE to one 2-D map, and each dominant class keeps a target
number of its images, chosen on that map (so the plot shows exactly what was chosen and why):

- ``coverage``: k-means with as many clusters as images to keep; the member nearest each centroid is kept
  (the kept set spreads over the class's whole region of the map);
- ``core``: images whose nearest map neighbours are mostly of other classes are dropped first
  (ambiguous, border-line images go; ties: nearest the class centre stays);
- ``random``: a uniform sample, the control for the two above.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import CODES
from ..errors import RetinaugError
from ..io import atomic_path, write_json_atomic
from ..manifest import half_up, manifest_rows, real_rows, save_manifest
from .config import SelectConfig


def tsne_map(features: np.ndarray, cfg: SelectConfig) -> tuple[np.ndarray, float]:
    """PCA (to denoise and speed up) then 2-D t-SNE; returns the map and the perplexity used."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 4:
        raise RetinaugError(f"t-SNE needs at least 4 training images in the map, found {n}")
    x = features.astype(np.float64)
    dims = min(cfg.pca_dims, n, x.shape[1])
    if dims < x.shape[1]:
        x = PCA(n_components=dims, random_state=cfg.seed).fit_transform(x)
    perplexity = min(cfg.perplexity, (n - 1) / 3)  # sklearn needs perplexity < n; 3 x perplexity neighbours fit
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=cfg.seed)
    return tsne.fit_transform(x), perplexity


def keep_count(n: int, keep: float) -> int:
    """Images to keep from n: a fraction (<= 1, at least one image) or a count (capped at n)."""
    return min(n, int(keep)) if keep > 1 else max(1, min(n, half_up(keep * n)))


def _coverage(xy: np.ndarray, target: int, seed: int) -> np.ndarray:
    """Member nearest each k-means centroid; if duplicates collapse clusters, fill farthest-first."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # "fewer distinct clusters than n_clusters" is handled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=target, n_init=3, random_state=seed).fit(xy)
    dist = np.linalg.norm(xy - km.cluster_centers_[km.labels_], axis=1)
    chosen = [
        int(members[np.argmin(dist[members])]) for j in range(target) if len(members := np.flatnonzero(km.labels_ == j))
    ]
    while len(chosen) < target:  # farthest point from the kept set
        gap = np.min(np.linalg.norm(xy[:, None] - xy[chosen][None], axis=2), axis=1)
        gap[chosen] = -1
        chosen.append(int(np.argmax(gap)))
    return np.array(sorted(chosen))


def _core(xy: np.ndarray, labels: np.ndarray, members: np.ndarray, target: int, k: int) -> np.ndarray:
    """Keep the `target` members with the fewest other-class neighbours on the map (ties: nearest centre)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(xy) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy[members])
    neighbours = np.array([[j for j in row if j != m][:k] for row, m in zip(idx, members)])
    other = (labels[neighbours] != labels[members][:, None]).mean(axis=1)
    centre = np.linalg.norm(xy[members] - xy[members].mean(axis=0), axis=1)
    order = np.lexsort((centre, other))  # primary: other-class share, then distance to the class centre
    return np.sort(order[:target])


def _select_on_map(features: np.ndarray, labels: np.ndarray, cfg: SelectConfig):
    """t-SNE map, then the strategy per dominant class: (map, perplexity, per-class counts, selected mask)."""
    xy, perplexity = tsne_map(features, cfg)
    selected = np.zeros(len(labels), dtype=bool)
    per_class = {}
    for code in cfg.classes:
        members = np.flatnonzero(labels == code)
        target = keep_count(len(members), cfg.keep)
        if cfg.strategy == "coverage":
            picked = members[_coverage(xy[members], target, cfg.seed)]
        elif cfg.strategy == "core":
            picked = members[_core(xy, labels, members, target, cfg.neighbours)]
        else:
            picked = np.sort(
                np.random.default_rng([cfg.seed, CODES.index(code)]).choice(members, target, replace=False)
            )
        selected[picked] = True
        capped = cfg.keep > len(members)
        per_class[code] = {"train": len(members), "kept": target, "dropped": len(members) - target, "capped": capped}
    return xy, perplexity, per_class, selected


def select(
    data: str | Path | pd.DataFrame,
    config: SelectConfig | None = None,
    out: str | Path | None = None,
    labeler: str | Path | None = None,
) -> pd.DataFrame:
    """Reduce each dominant class's real TRAIN images of `data` (a prepared folder or its rows) to a target number
    chosen on a t-SNE map; `labeler`'s features where the extractor is auto.

    Returns the selected rows (the dominant classes only). With `out`: `manifest.parquet` (those rows),
    `tsne.csv` (path, label, x, y, selected, candidate), `tsne.png`, `summary.json`."""
    from threadpoolctl import threadpool_limits

    from ..features import get_extractor
    from ..quality.plots import tsne_plot

    cfg = config or SelectConfig()
    started = time.perf_counter()
    train = real_rows(manifest_rows(data))
    present = [c for c in CODES if c in set(train["label"])]
    absent = [c for c in cfg.classes if c not in present]
    if absent:
        raise RetinaugError(
            f"no real training images of class(es) {', '.join(absent)} to select from; present: {','.join(present)}"
        )
    context = [c for c in CODES if c in set(cfg.context_classes or present) | set(cfg.classes) and c in present]
    pool = train[train["label"].isin(context)].sort_values(["label", "path"], kind="stable").reset_index(drop=True)

    extractor = get_extractor(cfg.extractor, labeler, cfg.pixel_size)
    features = extractor(pool)
    with threadpool_limits(cfg.threads if cfg.threads > 0 else None):
        xy, perplexity, per_class, selected = _select_on_map(features, pool["label"].to_numpy(), cfg)
    chosen = pool[selected].reset_index(drop=True)
    if out is None:
        return chosen

    out = Path(out)
    labels = pool["label"].to_numpy()
    points = pd.DataFrame(
        {
            "path": pool["path"],
            "label": labels,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "selected": selected,
            "candidate": np.isin(labels, cfg.classes),
        }
    )
    with atomic_path(out / "tsne.csv") as tmp:
        points.to_csv(tmp, index=False, float_format="%.4f")
    tsne_plot(
        points,
        out / "tsne.png",
        f"t-SNE of train images ({extractor.name}); strategy {cfg.strategy}, keep {cfg.keep:g}",
    )
    save_manifest(chosen, out)
    write_json_atomic(
        out / "summary.json",
        {
            "strategy": cfg.strategy,
            "extractor": extractor.name,
            "keep": cfg.keep,
            "classes": per_class,
            "context_classes": context,
            "n_map": len(pool),
            "perplexity": perplexity,
            "seconds": round(time.perf_counter() - started, 2),
            "config": cfg.model_dump(include=set(SelectConfig.model_fields)),  # a section passed whole: its own fields
        },
    )
    return chosen
