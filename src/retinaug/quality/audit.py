"""Synthetic-data audit: memorization (nearest training neighbour vs a real-vs-real baseline), fidelity and
diversity (FID, KID, k-NN precision/recall: metrics.py), all in one chosen feature space.

Memorization rule: a real TEST image is, by construction, not a copy of any training image, so the
distribution of "cosine similarity of a test image to its nearest training image of the same class" says
how close an unrelated real image gets. A synthetic image closer to a training image than the
`quantile` (default 99th percentile) of that distribution is flagged as a likely memorized copy. A class
with fewer than `min_test` test images (default 10) uses the pooled test distribution of all audited classes.

An img2img image (non-null `parent`: the real train image it was made from) is near its parent by design. Its
similarity to the parent is reported on its own (`parent_cosine`) and flagged as a copy of its parent
(`parent_copy`) by the same threshold, while `nn_cosine`/`flagged` look at every *other* training image: a
strength too low to change the parent shows as parent copies, not as memorization of the training set.

Class fidelity and CAS (fidelity.py) measure whether the images carry their class; the audit runs them too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import CODES
from ..classify.config import TrainConfig
from ..errors import RetinaugError
from ..features import get_extractor, l2_normalise
from ..io import atomic_path, write_json_atomic
from ..manifest import accepted_mask, manifest_rows, real_rows
from .config import AuditConfig
from .fidelity import asked_class, cas, class_fidelity
from .match import match_features, topk_cosine, unit_images
from .metrics import distribution_metrics
from .plots import contact_sheet, similarity_hist

# audit.json records the audit's own settings; the CAS recipe is recorded with its fits (cas/*/model.json)
REPORTED = set(AuditConfig.model_fields) - {"cas_recipe"}

SHEET_SIZE = 64  # px of each tile of class_samples.png
SHEET_PER_GROUP = 4  # real / recognised / not recognised images shown per class


def _nearest(
    query: np.ndarray, reference: np.ndarray, exclude: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity to, and index of, the nearest reference row (features already unit-norm), skipping
    pairs with equal `exclude` keys (an img2img image and its parent); NaN and -1 when nothing is left."""
    if len(query) == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores, idx = topk_cosine(query, reference, 1, exclude=exclude)
    return np.where(idx[:, 0] >= 0, scores[:, 0], np.nan).astype(np.float32), idx[:, 0]


def _rate(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def _median(values: np.ndarray | pd.Series) -> float | None:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else None


def _parent_rows(syn: pd.DataFrame, reference: pd.DataFrame, train_idx: np.ndarray) -> tuple[np.ndarray, int]:
    """Per synthetic row, the reference row of its img2img parent (-1: no parent), and how many parents are not
    among the training images (left unmatched: only images of the data manifest are read, never a path taken from
    the synthetic manifest)."""
    if "parent" not in syn.columns:
        return np.full(len(syn), -1), 0
    where = {os.path.normpath(p): k for k, p in zip(train_idx, reference["path"].to_numpy()[train_idx])}
    parents = syn["parent"].astype(object).where(syn["parent"].notna(), None)
    pos = np.array([-1 if not p else where.get(os.path.normpath(p), -2) for p in parents], dtype=np.int64)
    unmatched = int((pos == -2).sum())
    pos[pos == -2] = -1
    return pos, unmatched


def _paths(paths: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.where(idx >= 0, paths[np.clip(idx, 0, None)], None) if len(paths) else np.full(len(idx), None)


def _skip(parents: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`topk_cosine`'s exclude keys: each query's parent row against the pool's reference rows (-1: no parent)."""
    return (parents, pool) if (parents >= 0).any() else None


def _neighbour_table(
    syn: pd.DataFrame,
    reference: pd.DataFrame,
    syn_f: np.ndarray,
    ref_f: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    classes: list[str],
    parent_pos: np.ndarray,
) -> pd.DataFrame:
    """One row per synthetic and per real test image: its nearest training image of the same class and of
    any class, with their cosine similarities (features unit-norm). For an img2img image the parent is left out of
    those searches and its similarity to the parent is given on its own (`parent_cosine`)."""
    labels_ref = reference["label"].to_numpy()
    paths_ref = reference["path"].to_numpy()
    rows = []  # one per audited image (synthetic and real test), nearest training neighbours
    for name, frame, feats, labels, positions, own in (
        ("synthetic", syn, syn_f, syn["label"].to_numpy(), np.arange(len(syn)), parent_pos),
        ("test", reference, ref_f, labels_ref, test_idx, np.full(len(test_idx), -1)),
    ):
        any_s, any_i = _nearest(feats[positions], ref_f[train_idx], _skip(own, train_idx))
        same_s = np.full(len(positions), np.nan, np.float32)
        same_p = np.full(len(positions), None, dtype=object)
        for c in classes:
            sel = labels[positions] == c
            pool = train_idx[labels_ref[train_idx] == c]
            s, i = _nearest(feats[positions[sel]], ref_f[pool], _skip(own[sel], pool))
            same_s[sel], same_p[sel] = s, _paths(paths_ref[pool], i)
        has = own >= 0
        parent_cos = np.full(len(positions), np.nan, np.float32)
        parent_cos[has] = (feats[positions[has]] * ref_f[own[has]]).sum(1)
        rows.append(
            pd.DataFrame(
                {
                    "set": name,
                    "path": frame["path"].to_numpy()[positions],
                    "label": labels[positions],
                    "nn_cosine": same_s,
                    "nn_match": same_p,
                    "nn_cosine_any": any_s,
                    "nn_match_any": _paths(paths_ref[train_idx], any_i),
                    "parent": _paths(paths_ref, own),
                    "parent_cosine": parent_cos,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _by_strength(table: pd.DataFrame, strength: pd.Series) -> dict:
    """img2img images grouped by strength: how close they stay to their parent, and how many are parent copies."""
    rows = table.assign(strength=strength.to_numpy(dtype=float)).dropna(subset=["parent_cosine", "strength"])
    return {
        f"{s:.3g}": {
            "n": int(len(g)),
            "median_parent_cosine": _median(g["parent_cosine"]),
            "n_parent_copies": int(g["parent_copy"].sum()),
            "n_flagged": int(g["flagged"].sum()),
        }
        for s, g in rows.groupby(rows["strength"].round(3), sort=True)
    }


def _class_sheet(
    real_train: pd.DataFrame,
    syn: pd.DataFrame,
    per_image: pd.DataFrame | None,
    classes: list[str],
    path: Path,
    seed: int,
) -> Path:
    """Per class: real train images, then synthetic images the labeler recognises as the class, then those it
    assigns elsewhere (captioned with the class it chose); without predictions, real | synthetic."""
    asked = asked_class(syn)
    pred = (
        per_image["pred_label"].astype(str) if per_image is not None and per_image["pred_label"].notna().all() else None
    )
    tiles: list[tuple[str, str]] = []  # (image path, caption)

    def take(frame: pd.DataFrame, captions: pd.Series | str) -> list[int]:
        chosen = frame.sample(n=min(SHEET_PER_GROUP, len(frame)), random_state=seed)
        start = len(tiles)
        tiles.extend(
            zip(chosen["path"], [captions] * len(chosen) if isinstance(captions, str) else captions.loc[chosen.index])
        )
        return list(range(start, len(tiles)))

    rows = []
    for c in classes:
        row = take(real_train[real_train["label"] == c], f"{c} real train")
        mine = asked == c
        if pred is None:
            row += take(syn[mine], f"{c} synthetic")
        else:
            captions = f"{c} syn, labeler " + pred
            row += take(syn[mine & (pred == c)], captions) + take(syn[mine & (pred != c)], captions)
        if row:
            rows.append(row)
    images = unit_images(pd.DataFrame({"path": [p for p, _ in tiles]}), SHEET_SIZE, np.arange(len(tiles)))
    sheet = [(images[r[0]], tiles[r[0]][1], [(images[k], tiles[k][1]) for k in r[1:]]) for r in rows]
    title = "real train | synthetic the labeler recognises as the class | synthetic it assigns elsewhere"
    return contact_sheet(sheet, path, title if pred is not None else "real train | synthetic (no labeler predictions)")


def _audited_rows(synthetic_df: pd.DataFrame, accepted_only: bool) -> pd.DataFrame:
    """The synthetic rows whose memorization and distribution are audited: all of them, or the accepted ones."""
    syn = synthetic_df
    if accepted_only:
        if "accepted" not in syn.columns:
            raise RetinaugError(
                "accepted_only needs a labelled synthetic manifest: run `retinaug label` and give its output (RUN/label)"
            )
        syn = syn[accepted_mask(syn)]
    syn = syn.reset_index(drop=True)
    if syn.empty:
        raise RetinaugError("the synthetic manifest has no rows to audit")
    return syn


def _reference_rows(data_df: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The real train rows, and those followed by the real test rows of the audited classes in one frame (one
    embedding pass); an error when a class has no training image or the memorization baseline has no test image."""
    train, test = real_rows(data_df, "train"), real_rows(data_df, "test", classes)
    missing = [c for c in classes if not (train["label"] == c).any()]
    if missing:
        raise RetinaugError(
            f"no real training images of class(es) {', '.join(missing)} in the data manifest: nothing to compare with"
        )
    if test.empty:
        raise RetinaugError(
            "no real test images of the audited classes: the memorization baseline needs the test split"
        )
    return train, pd.concat([train, test]).reset_index(drop=True)


def _judge(table: pd.DataFrame, classes: list[str], cfg: AuditConfig) -> pd.DataFrame:
    """The neighbour table with each row's threshold (the `quantile` of its class's real test rows, or of all test
    rows when the class has fewer than `min_test`) and whether it is flagged as a training or parent copy."""
    is_test = (table["set"] == "test").to_numpy()
    pooled = float(np.quantile(table.loc[is_test, "nn_cosine"].to_numpy(), cfg.quantile))
    threshold = np.full(len(table), np.nan)
    for c in classes:
        mine = (table["label"] == c).to_numpy()
        test_c = table.loc[is_test & mine, "nn_cosine"].to_numpy()
        threshold[mine] = float(np.quantile(test_c, cfg.quantile)) if len(test_c) >= cfg.min_test else pooled
    return table.assign(
        threshold=threshold,
        flagged=table["nn_cosine"] > threshold,  # NaN (no other training image of the class): not flagged
        parent_copy=table["parent_cosine"] > threshold,
    )


def _distribution(
    syn_raw: np.ndarray,
    labels_syn: np.ndarray,
    ref_raw: np.ndarray,
    labels_ref: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    classes: list[str],
    cfg: AuditConfig,
) -> dict:
    """`per_class` and `overall` fidelity/diversity: synthetic vs the training images of the same classes."""
    per_class = {}
    for c in classes:
        pool, test_c, syn_c = (
            train_idx[labels_ref[train_idx] == c],
            test_idx[labels_ref[test_idx] == c],
            syn_raw[labels_syn == c],
        )
        per_class[c] = {
            "n_synthetic": int(len(syn_c)),
            "n_train": int(len(pool)),
            "n_test": int(len(test_c)),
            **distribution_metrics(ref_raw[pool], syn_c, ref_raw[test_c], cfg),
        }
    syn_pool = train_idx[np.isin(labels_ref[train_idx], classes)]
    return {"per_class": per_class, "overall": distribution_metrics(ref_raw[syn_pool], syn_raw, ref_raw[test_idx], cfg)}


def _parent_copies(children: pd.DataFrame) -> dict:
    """How many img2img images are copies of their parent, and how close they stay to it."""
    return {
        "n_parent_copies": int(children["parent_copy"].sum()),
        "parent_copy_rate": _rate(children["parent_copy"].to_numpy()),
        "median_parent_cosine": _median(children["parent_cosine"]),
    }


def _memorization(table: pd.DataFrame, syn: pd.DataFrame, classes: list[str], cfg: AuditConfig, unmatched: int) -> dict:
    """audit.json's `memorization`: the rule, per class and overall flag rates of the judged neighbour table."""
    is_syn = (table["set"] == "synthetic").to_numpy()
    summary: dict = {
        "rule": f"flag a synthetic image whose cosine similarity to its nearest same-class training image exceeds the "
        f"{cfg.quantile:.3g} quantile of the same statistic for real test images of that class (pooled over classes "
        f"when a class has fewer than {cfg.min_test} test images); for an img2img image the parent is left out of that "
        f"search, and its similarity to the parent is flagged as a parent copy by the same threshold",
        "quantile": cfg.quantile,
    }
    for c in classes:
        mine = (table["label"] == c).to_numpy()
        syn_c, test_c = table[is_syn & mine], table[~is_syn & mine]
        children = syn_c[syn_c["parent_cosine"].notna()]
        summary[c] = {
            "threshold": float(table.loc[mine, "threshold"].iloc[0]),
            "threshold_source": "class" if len(test_c) >= cfg.min_test else "pooled",
            "n_synthetic": int(len(syn_c)),
            "n_flagged": int(syn_c["flagged"].sum()),
            "rate": _rate(syn_c["flagged"].to_numpy()),
            "test_rate": _rate(test_c["flagged"].to_numpy()),  # the rule's false-positive rate on real images
            "median_nn_cosine": _median(syn_c["nn_cosine"]),
            "n_img2img": int(len(children)),
            **_parent_copies(children),
        }
    syn_rows = table[is_syn]
    children = syn_rows[syn_rows["parent_cosine"].notna()]
    threshold_any = float(np.quantile(table.loc[~is_syn, "nn_cosine_any"], cfg.quantile))
    return {
        **summary,
        "n_flagged": int(syn_rows["flagged"].sum()),
        "rate": _rate(syn_rows["flagged"].to_numpy()),
        "test_rate": _rate(table.loc[~is_syn, "flagged"].to_numpy()),
        "threshold_any_class": threshold_any,  # nearest training image of any class, pooled test baseline
        "rate_any_class": _rate(syn_rows["nn_cosine_any"].to_numpy() > threshold_any),
        "img2img": {
            "n": int(len(children)),
            **_parent_copies(children),
            "parents_not_in_train": unmatched,
            **(
                {"by_strength": _by_strength(children, syn.loc[children.index, "strength"])}
                if "strength" in syn.columns
                else {}
            ),
        },
    }


def _generator_checks(
    everything: pd.DataFrame,
    data_df: pd.DataFrame,
    labeler: str | Path | None,
    cfg: AuditConfig,
    out: Path,
) -> tuple[dict, pd.DataFrame | None]:
    """Class fidelity (written to `out/class_fidelity.csv`) and CAS (trained into `out/cas/`) of every generated
    image, each unless switched off: audit.json's `class_fidelity` and `cas`, and the labeler's per-image verdicts."""
    per_image = None
    if cfg.class_fidelity:
        fidelity, per_image = class_fidelity(everything, data_df, labeler)
        with atomic_path(out / "class_fidelity.csv") as tmp:
            per_image.to_csv(tmp, index=False)
    else:
        fidelity = {"reason": "switched off (class_fidelity: false)"}
    scores = (
        cas(everything, data_df, cfg.cas_recipe or TrainConfig(), out / "cas", cfg.cas_n_boot)
        if cfg.cas
        else {"reason": "switched off (cas: false)"}
    )
    return {"class_fidelity": fidelity, "cas": scores}, per_image


def _write_memorization(table: pd.DataFrame, memorization: dict, classes: list[str], extractor: str, out: Path) -> None:
    """`out/memorization.csv` (the judged neighbour table) and its per-class histogram `out/similarity_hist.png`."""
    with atomic_path(out / "memorization.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    is_syn = table["set"] == "synthetic"
    groups = {
        c: (
            table.loc[is_syn & (table["label"] == c), "nn_cosine"].dropna().to_numpy(),
            table.loc[~is_syn & (table["label"] == c), "nn_cosine"].dropna().to_numpy(),
            memorization[c]["threshold"],
        )
        for c in classes
    }
    similarity_hist(groups, out / "similarity_hist.png", f"cosine to nearest same-class training image ({extractor})")


def audit(
    synthetic: str | Path | pd.DataFrame,
    data: str | Path | pd.DataFrame,
    config: AuditConfig,
    out: str | Path,
    labeler: str | Path | None = None,
) -> dict:
    """Audit synthetic images (a manifest folder or its rows) against the generator's training images (the real train
    rows of `data`).

    Writes `out/audit.json`, `out/memorization.csv`, `out/similarity_hist.png`, the synthetic -> training top-k
    table `out/match.csv` + `out/match.png`, `out/class_samples.png`, and with the labeler `out/class_fidelity.csv`;
    CAS (`config.cas`) trains `config.cas_recipe` (default: TrainConfig()) into `out/cas/`. Returns the audit.json
    dict."""
    cfg, out = config, Path(out)
    synthetic_df, data_df = manifest_rows(synthetic), manifest_rows(data)
    everything = synthetic_df.reset_index(drop=True)  # class fidelity and CAS measure the generator: no filter
    syn = _audited_rows(synthetic_df, cfg.accepted_only)
    classes = [c for c in CODES if c in set(syn["label"])]
    train, reference = _reference_rows(data_df, classes)
    is_train = (reference["split"] == "train").to_numpy()
    train_idx, test_idx = np.flatnonzero(is_train), np.flatnonzero(~is_train)

    ext = get_extractor(cfg.extractor, labeler, cfg.pixel_size)
    syn_raw, ref_raw = ext(syn), ext(reference)
    parent_pos, unmatched = _parent_rows(syn, reference, train_idx)
    table = _neighbour_table(
        syn, reference, l2_normalise(syn_raw), l2_normalise(ref_raw), train_idx, test_idx, classes, parent_pos
    )
    table = _judge(table, classes, cfg)
    report: dict = {
        "extractor": ext.name,
        "config": cfg.model_dump(include=REPORTED),
        "classes": classes,
        "n_synthetic": int(len(syn)),
        "n_train": int(len(train_idx)),
        "n_test": int(len(test_idx)),
        **_distribution(
            syn_raw, syn["label"].to_numpy(), ref_raw, reference["label"].to_numpy(), train_idx, test_idx, classes, cfg
        ),
        "memorization": _memorization(table, syn, classes, cfg, unmatched),
    }

    out.mkdir(parents=True, exist_ok=True)
    generator, per_image = _generator_checks(everything, data_df, labeler, cfg, out)
    report.update(generator)
    _write_memorization(table, report["memorization"], classes, ext.name, out)
    match_features(
        syn,
        reference.iloc[train_idx].reset_index(drop=True),
        syn_raw,
        ref_raw[train_idx],
        cfg.top_k,
        out,
        cfg.ssim_size,
    )
    _class_sheet(
        train,
        everything,
        per_image,
        [c for c in CODES if c in set(asked_class(everything))],
        out / "class_samples.png",
        cfg.seed,
    )
    write_json_atomic(out / "audit.json", report)
    return report
