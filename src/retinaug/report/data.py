"""Report sections on the data: class counts per split, training sets per scenario, real vs synthetic samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..classes import CLASSES
from ..io import read_json
from ..manifest import class_counts, load_manifest, manifest_file, real_rows
from . import figures
from .html import h3, img, join, p, table


def section_data(run: Path) -> Markup | None:
    if not manifest_file(run / "data").is_file():
        return None
    df = load_manifest(run / "data")
    parts = [
        p(f"{len(df)} images, {df['patient_id'].nunique()} patients; splits are by patient."),
        h3("Class counts per split"),
        table(class_counts(df).reset_index()),
    ]
    summary = read_json(run / "data" / "summary.json") or {}
    skips = summary.get("rejected")
    if isinstance(skips, dict) and skips:
        parts += [
            h3("Skipped images by reason"),
            table(pd.Series(skips, name="images").rename_axis("reason").reset_index()),
        ]
    comp_path = run / "experiments" / "composition.csv"
    if comp_path.is_file():
        comp = pd.read_csv(comp_path)
        parts.append(h3("Training set per scenario (before/after augmentation)"))
        stack = comp.groupby("scenario", sort=False)[["selected", "synthetic", "traditional"]].sum()
        stack.columns = ["real (after selection)", "synthetic", "traditional"]
        parts.append(img(figures.stacked_bars(stack, "training images", "training images per scenario"), "composition"))
        wide = comp.pivot_table(index="scenario", columns="class", values="train_total", aggfunc="sum", sort=False)
        real = comp.pivot_table(index="scenario", columns="class", values="real", aggfunc="sum", sort=False)
        cells = real.fillna(0).astype(int).astype(str) + " → " + wide.fillna(0).astype(int).astype(str)
        parts += [p("Per class: real training images → training images in the scenario."), table(cells.reset_index())]
        short = comp[(comp["synthetic_shortfall"] > 0) | (comp["traditional_shortfall"] > 0)]
        if len(short):
            parts += [
                Markup(
                    '<p class="warn">Not enough accepted synthetic / traditional images for some classes; the shortfall was used as-is:</p>'
                ),
                table(
                    short[
                        [
                            "scenario",
                            "class",
                            "synthetic_requested",
                            "synthetic",
                            "traditional_requested",
                            "traditional",
                        ]
                    ]
                ),
            ]
    return join(parts)


def section_samples(run: Path) -> Markup | None:
    labelled = manifest_file(run / "label").is_file()
    if not manifest_file(run / "data").is_file() or not (labelled or manifest_file(run / "synthetic").is_file()):
        return None
    real = load_manifest(run / "data")
    syn = load_manifest(run / ("label" if labelled else "synthetic"))
    if "accepted" in syn:
        syn = syn.sort_values("accepted", ascending=False, na_position="last", kind="stable")
    groups = {}
    for code in [c for c in CLASSES if c in set(syn["label"])]:
        groups[code] = [real_rows(real, "train", [code]).head(4), syn[syn["label"] == code].head(4)]
    parts = [
        p("Left: real training images; right: synthetic images (accepted ones first)."),
        img(figures.sample_grid(groups, ["real", "synthetic"]), "real vs synthetic"),
    ]
    if (run / "generator" / "samples.png").is_file():
        parts += [
            h3("Generator samples after training (a row per class)"),
            img(figures.file_uri(run / "generator" / "samples.png"), "samples", "60%"),
        ]
    return join(parts)
