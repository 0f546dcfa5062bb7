"""Report section "Class fidelity and CAS": does each synthetic class carry its class (quality/audit.json)?"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..classify.config import describe
from ..io import read_json
from . import figures
from .html import h3, img, join, p, table


def _fmt_ci(block: dict, key: str) -> str:
    value, ci = block.get(key), block.get(f"{key}_ci")
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fidelity_table(audit: dict) -> pd.DataFrame:
    """One row per synthetic class: class fidelity, CAS vs real-trained recall, FID/KID against the real floor, k-NN P/R."""
    fidelity = (audit.get("class_fidelity") or {}).get("per_class") or {}
    cas = (audit.get("cas") or {}).get("per_class") or {}
    dist = audit.get("per_class") or {}
    rows = []
    for code in dict.fromkeys([*fidelity, *dist]):
        f, c, d = fidelity.get(code, {}), cas.get(code, {}), dist.get(code, {})
        rows.append(
            {
                "class": code,
                "synthetic": f.get("n_synthetic", d.get("n_synthetic")),
                "labeler → asked": f.get("share"),
                "labeler recall (real test)": f.get("test_recall"),
                "class fidelity": f.get("fidelity"),
                "CAS recall": c.get("cas_recall"),
                "real-trained recall": c.get("real_recall"),
                "CAS train images": c.get("synthetic_used"),
                "FID": d.get("fid"),
                "FID floor (test vs train)": d.get("fid_test_vs_train"),
                "FID / floor": _ratio(d.get("fid"), d.get("fid_test_vs_train")),
                "KID": d.get("kid_mean"),
                "k-NN precision": d.get("precision"),
                "k-NN recall": d.get("recall"),
            }
        )
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    """Counts as integers, shares and recalls with 3 decimals, distances with 4 significant digits, blanks for None."""
    counts, distances = {"synthetic", "CAS train images"}, {"FID", "FID floor (test vs train)", "FID / floor", "KID"}
    out = table.copy()
    for col in out.columns.drop("class"):
        fmt = "{:.0f}" if col in counts else "{:.4g}" if col in distances else "{:.3f}"
        out[col] = [fmt.format(v) if pd.notna(v) else "" for v in pd.to_numeric(out[col], errors="coerce")]
    return out


def section_fidelity(run: Path) -> Markup | None:
    q = run / "quality"
    audit = read_json(q / "audit.json")
    if not isinstance(audit, dict):
        return None
    parts = [
        p(
            "Class fidelity: the share of synthetic images (all, before the labeler's filter) that the labeler assigns to "
            "the class they were asked to show, divided by its recall of that class on real test images (1.0 = as "
            "recognisable as real images). CAS (Classification Accuracy Score): the experiments' classifier recipe trained "
            "on synthetic images only (as many per class as real train images) and scored on the real test patients, beside "
            "the same recipe trained on the real train images. FID / floor: FID against the real train images divided by "
            "real test vs train FID in the same features (1.0 = as close as unseen real images)."
        )
    ]
    rows = fidelity_table(audit)
    if len(rows):
        parts.append(table(_cells(rows)))
    fidelity, cas = audit.get("class_fidelity") or {}, audit.get("cas") or {}
    lines = []
    if fidelity.get("per_class"):
        macro = fidelity.get("macro_fidelity")
        lines.append(
            f"Macro class fidelity {'–' if macro is None else f'{macro:.3f}'} over {fidelity.get('n_classes_scored', 0)} "
            f"class(es); predictions: {fidelity.get('predictions')}."
        )
        lines += [
            f"{c}: fidelity not computed ({r['reason']})." for c, r in fidelity["per_class"].items() if r.get("reason")
        ]
    elif fidelity.get("reason"):
        lines.append(f"Class fidelity not computed: {fidelity['reason']}.")
    if "synthetic" in cas:
        ratio = cas.get("f1_ratio")
        lines.append(
            f"CAS macro-F1 {_fmt_ci(cas['synthetic'], 'macro_f1')} vs real-trained {_fmt_ci(cas['real'], 'macro_f1')} "
            f"(ratio {'–' if ratio is None else f'{ratio:.3f}'}), task {','.join(cas['classes'])}, "
            f"{cas['n_test']} real test images of {cas['n_test_patients']} patients; recipe: {describe(cas['recipe'])}, "
            f"seed {cas['recipe']['seed']}."
        )
        short = {c: r["shortfall"] for c, r in cas["per_class"].items() if r.get("shortfall")}
        if short:
            lines.append(
                "CAS had fewer synthetic images than real train images for: "
                + ", ".join(f"{c} (−{n})" for c, n in short.items())
                + "."
            )
        lines += [f"CAS left out {c}: {why}." for c, why in (cas.get("skipped_classes") or {}).items()]
    elif cas.get("reason"):
        lines.append(f"CAS not computed: {cas['reason']}.")
    parts += [p(line) for line in lines]
    if (q / "class_samples.png").is_file():
        parts += [
            h3("Per class: real train images beside synthetic ones"),
            img(figures.file_uri(q / "class_samples.png"), "class samples", "90%"),
        ]
    return join(parts)
