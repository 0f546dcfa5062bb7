"""Real-ODIR scenario benchmark: read a `retinaug run` folder (preset odir-cpu) and write its tables.

The run does the work (and resumes after a crash); this script only reads what it wrote, so it also works on a
partly finished grid (the missing seed runs are listed). Output: benchmarks/results/odir-NAME.json (every number,
per seed too, and the test patient IDs) and odir-NAME.md (the tables pasted into BENCHMARKS.md).

  retinaug run --preset odir-cpu --out runs/odir-cpu        # hours on 2 CPU cores; resumable
  python benchmarks/odir.py runs/odir-cpu                   # -> benchmarks/results/odir-odir-cpu.{json,md}

Tables: macro precision / recall / F1 / accuracy per scenario (mean and 95% t-interval over seeds), the paired
difference of each against its real-only baseline (same seeds, same test patients), per-class recall, the
training-set composition, the synthetic images the labeler accepted, and stage wall times.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from retinaug.config import PipelineConfig
from retinaug.experiments import accepted_synthetic, asked_vs_labelled, seed_metrics, summarize
from retinaug.io import read_json, read_yaml, sha256_text, write_json_atomic, write_text_atomic
from retinaug.manifest import load_manifest, manifest_file
from retinaug.pipeline import stage_names
from retinaug.stages import read_record

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("precision", "recall", "f1", "accuracy")


def _json(path: Path) -> dict:
    return read_json(path) or {}


def _ci(mean: float, lo: float, hi: float, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if lo is None or math.isnan(lo):
        return fmt.format(mean)
    return f"{fmt.format(mean)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _md(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def test_set(data: pd.DataFrame, seed: int) -> dict:
    """The test patients (fixed by the data split seed, shared by every scenario and training seed)."""
    test = data[data["split"] == "test"]
    ids = sorted(test["patient_id"].astype(str).unique())
    return {
        "split_seed": seed,
        "patients": len(ids),
        "images": int(len(test)),
        "images_per_class": {str(k): int(v) for k, v in test["label"].value_counts().items()},
        "patient_ids_sha256": sha256_text("\n".join(ids)),
        "patient_ids": ids,
    }


def composition(root: Path, scenarios, seeds: list[int]) -> pd.DataFrame:
    """Per scenario: training images by origin, from the first finished seed's recipe.json."""
    rows = []
    for sc in scenarios:
        for seed in seeds:
            counts = _json(root / sc.name / f"seed{seed}" / "recipe.json").get("counts")
            if counts:
                c = pd.DataFrame(counts)
                rows.append(
                    {
                        "scenario": sc.name,
                        "real": int(c["selected"].sum()),
                        "synthetic": int(c["synthetic"].sum()),
                        "traditional": int(c["traditional"].sum()),
                        "total": int(c["train_total"].sum()),
                    }
                )
                break
    return pd.DataFrame(rows, columns=["scenario", "real", "synthetic", "traditional", "total"])


def quality_table(audit: dict) -> pd.DataFrame:
    """Per class and overall: FID synthetic-vs-train next to FID test-vs-train, and memorization flags."""
    mem = audit.get("memorization") or {}
    rows = []
    for cls, q in [*(audit.get("per_class") or {}).items(), ("all", audit.get("overall") or {})]:
        m = mem.get(cls, {}) if cls != "all" else mem
        rows.append(
            {
                "class": cls,
                "FID syn-train": round(q.get("fid", float("nan")), 1),
                "FID test-train": round(q.get("fid_test_vs_train", float("nan")), 1),
                "memorization flags": f"{m.get('n_flagged', '?')} ({100 * m.get('rate', float('nan')):.1f}%; "
                f"real test {100 * m.get('test_rate', float('nan')):.1f}%)",
            }
        )
    return pd.DataFrame(rows)


def tables(summary: pd.DataFrame, scenarios, comp: pd.DataFrame) -> dict[str, pd.DataFrame]:
    macro = summary[summary["cls"] == "macro"]
    head, diff, recall = [], [], {}
    for sc in scenarios:
        m = macro[macro["scenario"] == sc.name].set_index("metric")
        if m.empty:
            continue
        c = comp.set_index("scenario").loc[sc.name] if sc.name in set(comp["scenario"]) else None
        head.append(
            {
                "scenario": sc.name,
                "task": sc.task,
                "seeds": int(m["n_seeds"].max()),
                "train (real+syn+trad)": f"{c['real']}+{c['synthetic']}+{c['traditional']}" if c is not None else "",
                **{k: _ci(m.loc[k, "mean"], m.loc[k, "ci_low"], m.loc[k, "ci_high"]) for k in METRICS if k in m.index},
            }
        )
        base = m["baseline"].iloc[0]
        if base and "f1" in m.index and not math.isnan(m.loc["f1", "diff_mean"]):
            diff.append(
                {
                    "scenario": sc.name,
                    "vs": base,
                    **{
                        f"Δ{k}": _ci(
                            m.loc[k, "diff_mean"], m.loc[k, "diff_ci_low"], m.loc[k, "diff_ci_high"], signed=True
                        )
                        for k in METRICS
                        if k in m.index
                    },
                    **{
                        f"{col} ({k})": m.loc[metric, f"{col}_value"]
                        for k, metric in (("F1", "f1"), ("recall", "recall"))
                        for col in ("p", "q")
                    },
                }
            )
        r = summary[(summary["scenario"] == sc.name) & (summary["metric"] == "recall") & (summary["cls"] != "macro")]
        row = {"scenario": sc.name}
        for x in r.itertuples():
            half = (x.ci_high - x.ci_low) / 2
            row[x.cls] = f"{x.mean:.2f} ±{half:.2f}" if not math.isnan(half) else f"{x.mean:.2f}"
        recall.setdefault(sc.task, []).append(row)
    paired = pd.DataFrame(diff)
    for col in [
        c for c in paired.columns if c[:3] in ("p (", "q (")
    ]:  # q: Benjamini-Hochberg over the grid (results.q_values)
        paired[col] = paired[col].astype(float).map(lambda v: f"{v:.2g}")
    out = {"headline": pd.DataFrame(head), "paired": paired}
    for task, rows in recall.items():
        out[f"recall-{task}"] = pd.DataFrame(rows)
    return out


def collect(run: Path) -> tuple[dict, str]:
    """Everything the benchmark reports, as (JSON-able dict, Markdown)."""
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        sys.exit(
            f"{run} is not a retinaug run folder (no config.yaml); run `retinaug run --preset odir-cpu --out {run}` first"
        )
    cfg = PipelineConfig.model_validate(read_yaml(cfg_file))
    scenarios, seeds = cfg.experiments.resolve(), cfg.experiments.seed_list
    data = load_manifest(run / "data")
    root = run / "experiments"
    summary = summarize(root, scenarios, seeds)
    per_seed = seed_metrics(root, scenarios, seeds)
    missing = [f"{sc.name}/seed{s}" for sc in scenarios for s in seeds if s not in per_seed.get(sc.name, {})]
    comp = composition(root, scenarios, seeds)
    tabs = tables(summary, scenarios, comp)
    stages = {
        s: {k: read_record(run / s).get(k) for k in ("status", "seconds", "cpu_seconds")}
        for s in stage_names()
        if read_record(run / s)
    }
    labels = _json(run / "label" / "summary.json")
    syn = accepted_synthetic(load_manifest(run / "label")) if manifest_file(run / "label").is_file() else pd.DataFrame()
    labeler = _json(run / "labeler" / "eval" / "metrics.json")
    gen = _json(run / "generator" / "history.json")
    quality = _json(run / "quality" / "audit.json")
    test = test_set(data, cfg.data.seed)
    result = {
        "run": str(run.resolve()),
        "config": cfg.model_dump(mode="json"),
        "data": {
            "images": int(len(data)),
            "patients": int(data["patient_id"].nunique()),
            "per_split_class": data.groupby(["split", "label"]).size().unstack(fill_value=0).to_dict(),
        },
        "test_set": test,
        "stages": stages,
        "generator": {k: gen.get(k) for k in ("seconds", "images_per_s") if k in gen},
        "labeling": labels,
        "labeler_test": {
            k: labeler.get(k)
            for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "kappa")
            if k in labeler
        },
        "quality": {k: quality.get(k) for k in ("extractor", "overall", "per_class", "memorization") if k in quality},
        "missing_seed_runs": missing,
        "composition": comp.to_dict(orient="records"),
        "per_seed": {
            sc: {
                str(s): {f"{m}/{c}": v for (m, c), v in vals.items() if c == "macro" or m == "recall"}
                for s, vals in runs.items()
            }
            for sc, runs in per_seed.items()
        },
        "summary": json.loads(summary.to_json(orient="records")),
    }
    lines = [
        f"Run `{run}`: {len(data)} images, {data['patient_id'].nunique()} patients. "
        f"Test set fixed by the split seed {test['split_seed']}: {test['patients']} patients, {test['images']} images "
        f"(per class {', '.join(f'{k} {v}' for k, v in sorted(test['images_per_class'].items()))}); "
        f"sha256 of the sorted patient IDs {test['patient_ids_sha256'][:16]}… (full list in the JSON). "
        f"Every scenario and training seed is scored on these same patients."
    ]
    if missing:
        lines.append(
            f"\n**Unfinished: {len(missing)} seed runs missing** ({', '.join(missing[:8])}{' …' if len(missing) > 8 else ''})."
        )
    for name, title in (
        ("headline", "Macro metrics, mean [95% CI over seeds]"),
        (
            "paired",
            "Paired difference vs real-only (same seeds), mean [95% CI]; p: paired t-test, q: Benjamini-Hochberg over the table's comparisons",
        ),
        ("recall-5-class", "Per-class recall, 5-class (mean ±95% CI half-width)"),
        ("recall-7-class", "Per-class recall, 7-class (mean ±95% CI half-width)"),
    ):
        if name in tabs and not tabs[name].empty:
            lines += [f"\n**{title}**\n", _md(tabs[name])]
    if isinstance(labels.get("per_class"), dict):
        lab = pd.DataFrame(labels["per_class"]).T.reset_index(names="class")
        lab = lab.assign(
            **{c: lab[c].astype(int) for c in ("generated", "accepted") if c in lab},
            **{c: lab[c].astype(float).round(2) for c in ("rate", "mean_conf") if c in lab},
        )
        lines += [
            f"\n**Synthetic images accepted by the labeler** (policy {labels.get('policy')}, threshold {labels.get('threshold')})\n",
            _md(lab),
        ]
    if "intended_label" in syn.columns:
        ct = asked_vs_labelled(syn)
        lines += [
            "\n**Accepted synthetic images: class asked of the generator vs class the labeler gave**\n",
            _md(ct.reset_index().rename(columns={"asked": "asked for ↓ / labelled →"})),
        ]
        result["synthetic_intended_vs_label"] = ct.to_dict()
    if quality:
        lines += [
            f"\n**Synthetic vs real ({quality['extractor']} features; FID test-vs-train is the real-vs-real floor)**\n",
            _md(quality_table(quality)),
        ]
    if labeler:
        lines.append(
            "\nLabeler on the real test patients: "
            + ", ".join(f"{k} {v:.3f}" for k, v in result["labeler_test"].items())
        )
    if stages:
        st = pd.DataFrame(
            [
                {"stage": k, "status": v["status"], "wall s": v["seconds"], "CPU s": v["cpu_seconds"]}
                for k, v in stages.items()
            ]
        )
        lines += ["\n**Stage wall times**\n", _md(st)]
    return result, "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "run", type=Path, nargs="?", default=Path("runs/odir-cpu"), help="run folder (default runs/odir-cpu)"
    )
    p.add_argument(
        "--name", default=None, help="results name: writes results/odir-NAME.{json,md} (default: the run folder's name)"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    args = p.parse_args()
    result, md = collect(args.run)
    name = args.name or args.run.resolve().name
    args.results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.results / f"odir-{name}.json", result)
    write_text_atomic(args.results / f"odir-{name}.md", md)
    print(md)
    print(f"-> {args.results / f'odir-{name}.json'}, {args.results / f'odir-{name}.md'}")


if __name__ == "__main__":
    main()
