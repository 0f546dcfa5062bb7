"""`retinaug export RUN --out DIR`: what a run made, as a Hugging Face `imagefolder` dataset with a dataset card.

    DIR/README.md                   dataset card: YAML header, how the images were made, counts, the run's audit figures
    DIR/metadata.csv                every image: file_name (relative to DIR), label, split, origin and provenance columns
    DIR/<split>/<label>/<file>      split = train, validation, test (the run's patient-level split)
    DIR/<split>/metadata.parquet    the same rows per split (file_name relative to the split), typed: what datasets reads

`datasets.load_dataset("imagefolder", data_dir=DIR)` then gives one split per folder with the image, its label and every
provenance column. The typed per-split tables are what datasets reads because it infers a CSV column's type per file
(and per 10,000 rows) with pandas: a column empty in one split (the prompt of real test images) turns into floats there,
so the splits no longer load together, and 63-bit image seeds lose digits as floats. The CSV is the same table for people
and spreadsheets. Image files are hard-linked when DIR is on the same file system (else copied); every target path is
checked to stay inside DIR, and paths of this machine are not published (`parent` and `source_file` are relative to
the real dataset's folder). An image that is a symlink to a file outside the run and the trusted image folders is
skipped, counted and named (printed, and counted in the card), never copied or linked; an export holds no symlink.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .. import __version__
from ..cards import CARD, WARNING, front_matter, quality_section, run_audit, shown_path, table
from ..classes import CLASSES, CODES
from ..errors import RetinaugError
from ..folds import fold_count, fold_name, is_pooled
from ..io import json_dict, safe_join, write_text_atomic
from ..lock import run_lock
from ..manifest import accepted_mask, load_manifest, manifest_file
from ..progress import console
from .config import ExportConfig

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
MARK = "<!-- retinaug export: this folder is rewritten by `retinaug export` -->"
LOCAL_PATHS = (
    "path",
    "parent",
    "generator_dir",
)  # columns holding this machine's paths; published relative or not at all
LINK_OUT = "a symlink to a file outside the run and the trusted image folders"


def export_run(run: str | Path, config: ExportConfig, out: str | Path) -> Path:
    """Write the images of RUN (`config.what`: synthetic, real or both) as an imagefolder dataset in `out`; returns
    `out`.

    `accepted_only` keeps only the synthetic images the labeler accepted. `out` must be empty, absent or an earlier
    export (which is replaced whole, so no stale image survives); it is built beside and moved into place at the end."""
    run, out = Path(run), Path(out)
    what, accepted_only, copy = config.what, config.accepted_only, config.copy_images
    if not run.is_dir():
        raise RetinaugError(f"run folder {run} not found")
    if is_pooled(run):
        raise RetinaugError(
            f"{run} is a {fold_count(run)}-fold run: each fold has its own generator and synthetic images; "
            f"export one fold (retinaug export {run}/{fold_name(0)} --out ...)"
        )
    if accepted_only and what == "real":
        raise RetinaugError(
            "--accepted-only filters synthetic images; with --what real there are none (use --what synthetic or both)"
        )
    _check_target(out, run)
    with run_lock(run, "export"):  # no stage rewrites the images while they are exported
        rows, root, labelled, skipped = _rows(run, what, accepted_only)
        table_ = _metadata(rows, root)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.export"
        staging.mkdir()  # mode 0777 & ~umask, as the export is meant to be shared (mkdtemp's would be 0700)
        try:
            linked = _place(rows["path"].tolist(), table_["file_name"].tolist(), staging, copy)
            _write_metadata(table_, staging)
            write_text_atomic(staging / CARD, dataset_card(run, table_, what, accepted_only, labelled, len(skipped)))
            _swap(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    how = (
        "hard-linked"
        if linked == len(rows)
        else f"{linked} hard-linked, {len(rows) - linked} copied"
        if linked
        else "copied"
    )
    console.print(
        f"exported {len(rows)} images ({how}) to {out}; load with datasets.load_dataset('imagefolder', data_dir='{out}')"
    )
    if skipped:
        console.print(
            f"skipped {len(skipped)} image(s) of the run: {LINK_OUT}, not exported: "
            + "; ".join(f"{p} -> {real}" for p, real in sorted(skipped.items()))
        )
    return out


# ---------------------------------------------------------------- which images


def _rows(run: Path, what: str, accepted_only: bool) -> tuple[pd.DataFrame, Path, dict, dict[str, str]]:
    """(manifest rows to export, the real dataset's folder, the labeler's summary when it labelled the synthetic images,
    the images skipped as links out: path -> the file it leads to)."""
    if not manifest_file(run / "data").is_file():
        raise RetinaugError(f"not a run folder: no data/manifest.parquet in {run}")
    data = load_manifest(run / "data", links_out="skip")
    real = data[data["origin"] == "real"]
    root = Path(os.path.commonpath([os.path.dirname(p) for p in real["path"]])) if len(real) else run
    parts, labelled, skipped = [], {}, {}
    if what in ("real", "both"):
        parts.append(real)
        skipped |= data.attrs["links_out"]
    if what in ("synthetic", "both"):
        syn, labelled, links_out = _synthetic(run, accepted_only)
        parts.append(syn)
        skipped |= links_out
    rows = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    if rows.empty:
        raise RetinaugError(f"nothing to export: {run} has no {'accepted synthetic' if accepted_only else what} images")
    order = {s: i for i, s in enumerate(HF_SPLITS)}
    rows = rows.assign(_s=rows["split"].map(order), _o=rows["origin"] != "real").sort_values(
        ["_s", "_o", "label", "path"], kind="stable"
    )
    return rows.drop(columns=["_s", "_o"]).reset_index(drop=True), root, labelled, skipped


def _synthetic(run: Path, accepted_only: bool) -> tuple[pd.DataFrame, dict, dict[str, str]]:
    """The synthetic rows with the labeler's verdicts when the label stage ran (RUN/label, or in place in RUN/synthetic),
    the labeler's summary, and the images skipped as links out."""
    if not manifest_file(run / "synthetic").is_file():
        raise RetinaugError(
            f"no synthetic images in this run (no synthetic/manifest.parquet in {run}): run the generator and "
            "synthetic stages, or export --what real"
        )
    syn = load_manifest(run / "synthetic", links_out="skip")
    links_out = syn.attrs["links_out"]
    summary_files = [run / "label" / "summary.json", run / "synthetic" / "label_summary.json"]
    if manifest_file(run / "label").is_file():
        verdicts = load_manifest(run / "label", links_out="skip")
        if set(verdicts["path"]) != set(syn["path"]):
            raise RetinaugError(
                f"{run / 'label'} labels other images than {run / 'synthetic'} holds (the label stage is out of date): re-run the pipeline"
            )
        syn = verdicts
    labelled = next((s for s in map(json_dict, summary_files) if s), {}) if "accepted" in syn.columns else {}
    if accepted_only:
        if "accepted" not in syn.columns:
            raise RetinaugError("--accepted-only needs the labeler's verdicts: run the labeler and label stages first")
        syn = syn[accepted_mask(syn)]
    return syn, labelled, links_out


# ---------------------------------------------------------------- the table and the files


def _relative(path: object, root: Path) -> object:
    if path is None or pd.isna(path):
        return pd.NA
    rel = os.path.relpath(str(path), root)
    return Path(str(path)).name if rel.startswith("..") else Path(rel).as_posix()


def _metadata(rows: pd.DataFrame, root: Path) -> pd.DataFrame:
    """file_name (split/label/name, unique), label, then every manifest column but this machine's paths."""
    names, taken = [], set()
    for split, label, path in zip(rows["split"], rows["label"], rows["path"]):
        stem, suffix = os.path.splitext(os.path.basename(str(path)).lstrip(".") or "image")
        name, k = f"{HF_SPLITS[split]}/{label}/{stem}{suffix.lower()}", 1
        while name.lower() in taken:  # two sources with one name (or names differing in case only)
            name, k = f"{HF_SPLITS[split]}/{label}/{stem}-{k}{suffix.lower()}", k + 1
        taken.add(name.lower())
        names.append(name)
    meta = rows.drop(columns=[c for c in LOCAL_PATHS if c in rows.columns])
    meta.attrs = {}  # pyarrow would publish them in every metadata.parquet (the run's folders, links skipped)
    meta.insert(0, "file_name", names)
    meta.insert(1, "label", meta.pop("label"))
    is_real = rows["origin"] == "real"
    meta["source_file"] = pd.array(
        [_relative(p, root) if r else pd.NA for p, r in zip(rows["path"], is_real)], dtype="string"
    )
    if "parent" in rows.columns:
        meta["parent"] = pd.array([_relative(p, root) for p in rows["parent"]], dtype="string")
    return meta


def _place(sources: list[str], names: list[str], root: Path, copy: bool) -> int:
    """Hard-link (or copy) each source image to ROOT/name; returns how many were linked. What is placed is the file a
    link in the run leads to (load_manifest checked that it lies in the run or a trusted folder), never a symlink."""
    linked = 0
    for src, name in zip(sources, names):
        target = safe_join(root, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(src)
        if not os.path.isfile(real):
            raise RetinaugError(f"image {src} of the run is missing; re-run the stage that made it")
        if not copy:
            try:
                os.link(real, target)
                linked += 1
                continue
            except OSError:  # another file system, or links not allowed there
                pass
        shutil.copyfile(real, target)
    return linked


def _write_metadata(meta: pd.DataFrame, root: Path) -> None:
    meta.to_csv(root / "metadata.csv", index=False)
    schema = pa.Schema.from_pandas(meta, preserve_index=False)  # one schema for every split
    for split, part in meta.groupby(meta["file_name"].str.split("/").str[0], sort=False):
        part = part.assign(file_name=part["file_name"].str.split("/", n=1).str[1])
        pq.write_table(
            pa.Table.from_pandas(part, schema=schema, preserve_index=False), root / split / "metadata.parquet"
        )


def _check_target(out: Path, run: Path) -> None:
    """Refuse to write where something else lives: a file, a folder of other files, or the run folder itself."""
    if run.resolve().is_relative_to(out.resolve()):
        raise RetinaugError(f"--out {out} would contain the run folder {run}; choose a folder beside or inside it")
    if out.exists() and not out.is_dir():
        raise RetinaugError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and MARK not in _card_text(out):
        raise RetinaugError(f"--out {out} is not empty and holds no earlier export; choose an empty or new folder")


def _card_text(folder: Path) -> str:
    try:
        return (folder / CARD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _swap(staging: Path, out: Path) -> None:
    """Move the finished export into place; an earlier export there is removed only after the move succeeded."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- the dataset card


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_card(
    run: Path, meta: pd.DataFrame, what: str, accepted_only: bool, labelled: dict, skipped: int = 0
) -> str:
    """The README.md of an export, from the run's own records: data, split, generator, sampling, prompts, counts,
    labeler filter, audit figures; and how many images were skipped as links out of the run."""
    cfg = _read_yaml(run / "config.yaml")
    splits = [HF_SPLITS[s] for s in HF_SPLITS if (meta["split"] == s).any()]
    has_syn = (meta["origin"] == "synthetic").any()
    lines = _intro_section(run, cfg, meta, what, accepted_only, skipped) + _contents_section(meta)
    lines += _data_section(cfg.get("data") or {}, json_dict(run / "data" / "summary.json"))
    if has_syn:
        lines += _generation_section(run, meta, labelled, accepted_only)
        lines += quality_section(*run_audit(run))
    lines += _files_section(splits) + _loading_section(splits) + _limitations_section()
    return front_matter(_dataset_header(run, cfg, meta, what, has_syn)) + "\n" + "\n".join(lines)


def _dataset_header(run: Path, cfg: dict, meta: pd.DataFrame, what: str, has_syn: bool) -> dict:
    return {
        "license": "unknown",
        "task_categories": ["image-classification"],
        "size_categories": [_size_category(len(meta))],
        "tags": ["retinaug", "fundus", "ophthalmology", "medical-imaging"] + (["synthetic"] if has_syn else []),
        "pretty_name": f"{cfg.get('name', run.name)} ({what} fundus images, retinaug)",
    }


def _intro_section(run: Path, cfg: dict, meta: pd.DataFrame, what: str, accepted_only: bool, skipped: int) -> list[str]:
    """The export mark (`retinaug export` replaces only a folder that holds it), title, what was exported, warnings."""
    kind = {"synthetic": "synthetic", "real": "real", "both": "real and synthetic"}[what]
    return [
        MARK,
        "",
        f"# {cfg.get('name', run.name)}: {kind} fundus photographs",
        "",
        f"Exported with retinaug {__version__} on {time.strftime('%Y-%m-%d')} from the run `{run.name}`: "
        f"{len(meta)} images of {meta['label'].nunique()} classes"
        + (", only those the labeler accepted" if accepted_only else "")
        + ".",
        "",
        *([f"**Skipped: {skipped} image(s)** of the run, each {LINK_OUT} (not exported).", ""] if skipped else []),
        WARNING,
        "",
        "**License: not set.** Set `license:` in the header above before publishing; real images keep the license "
        "of the dataset they come from, and synthetic images derive from it.",
        "",
    ]


def _contents_section(meta: pd.DataFrame) -> list[str]:
    """Images per class, in one column per split and origin that has any, and in all."""
    columns = [
        (s, o) for s in HF_SPLITS for o in ("real", "synthetic") if ((meta["split"] == s) & (meta["origin"] == o)).any()
    ]
    rows = [
        [
            c,
            CLASSES[c],
            *(int(((meta["label"] == c) & (meta["split"] == s) & (meta["origin"] == o)).sum()) for s, o in columns),
            int((meta["label"] == c).sum()),
        ]
        for c in CODES
        if (meta["label"] == c).any()
    ]
    rows.append(
        ["all", "", *(int(((meta["split"] == s) & (meta["origin"] == o)).sum()) for s, o in columns), len(meta)]
    )
    header = ["class", "name", *(f"{HF_SPLITS[s]} {o}" for s, o in columns), "total"]
    return ["## Contents", "", *table(header, rows), ""]


def _files_section(splits: list[str]) -> list[str]:
    return [
        "## Files and columns",
        "",
        "- `<split>/<class>/<file>`: the images; "
        + ", ".join(f"`{s}`" for s in splits)
        + " are the run's patient-level "
        "splits (no patient in two of them; synthetic images belong to `train`).",
        "- `<split>/metadata.parquet`: one row per image of the split (what `datasets` reads); `metadata.csv`: all rows, "
        "`file_name` relative to this folder.",
        "- `label`: the class code the image trains as (" + ", ".join(f"{c} {CLASSES[c]}" for c in CODES) + ").",
        "- `split`, `origin` (real / synthetic), `patient_id` (`syn-*` for synthetic images), `eye`, `source`.",
        "- real images: `source_file` (path in the source dataset), `sha256` and what the ingest kept (e.g. `findings`, `keywords`).",
        "- synthetic images: `generator`, `seed` (the image's own seed), `steps`, `guidance`, `prompt`, `negative_prompt`, "
        "img2img `parent` (its real training image, as in `source_file`) and `strength`; when labelled, `pred_label`, "
        "`pred_conf`, `accepted`, `intended_label` (the class asked of the generator).",
        "",
    ]


def _loading_section(splits: list[str]) -> list[str]:
    return [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("imagefolder", data_dir="PATH/TO/THIS/FOLDER")',
        f"ds[{splits[0]!r}][0]  # image, label and the columns above",
        "```",
        "",
    ]


def _limitations_section() -> list[str]:
    return [
        "## Intended use and limitations",
        "",
        "Research on augmenting fundus-photo classifiers and on judging synthetic medical images (train on `train`, select "
        "on `validation`, report on the untouched real `test` patients). Synthetic images can carry the training images' "
        "biases and artefacts, and a few can be near-copies of them (see the memorization figures); check the real images' "
        "license before redistributing.",
        "",
        WARNING,
        "",
    ]


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _data_section(data_cfg: dict, summary: dict) -> list[str]:
    source = data_cfg.get("source", "?")
    where = {
        "phantom": "retinaug's procedural phantom fundus images (no patient data)",
        "odir": f"ODIR-5K (`{shown_path(data_cfg.get('path'))}`, {summary.get('layout', '?')} layout), labels from "
        + (
            "the per-eye diagnostic keywords"
            if data_cfg.get("labels") == "keywords"
            else "Kaggle's patient-level labels"
        ),
        "folder": f"class folders (`{shown_path(data_cfg.get('path'))}`)",
    }.get(source, source)
    per_split = summary.get("patients_per_split") or {}
    lines = [
        "## How it was made",
        "",
        f"**Data.** {where}: {summary.get('rows', '?')} images of {summary.get('patients', '?')} "
        f"patients after the ingest checks ({summary.get('rejected_total', 0)} files rejected, see the run's `data/rejected.csv`). "
        f"Split by patient (seed {data_cfg.get('seed', '?')}): "
        + ", ".join(f"{HF_SPLITS[s]} {per_split.get(s, '?')} patients" for s in HF_SPLITS)
        + f" (validation {data_cfg.get('val', '?')}, test {data_cfg.get('test', '?')} of the patients).",
        "",
    ]
    return lines


def _generation_section(run: Path, meta: pd.DataFrame, labelled: dict, accepted_only: bool) -> list[str]:
    gen = json_dict(run / "generator" / "config.json")
    gcfg = gen.get("config") or {}
    record = json_dict(run / "synthetic" / "generate.json")
    base = gcfg.get("base_model")
    start = f"LoRA fine-tuning of `{shown_path(base)}`" if gen.get("method") == "sd-lora" else "trained from scratch"
    lines = [
        f"**Generator.** `{gen.get('method', '?')}` ({start}) at {gcfg.get('size', '?')} px, trained on the "
        f"{gen.get('n_train_images', '?')} real TRAIN images of {gen.get('train_patients', '?')} patients "
        f"(classes {', '.join(gen.get('classes') or [])}; {gcfg.get('steps', '?')} steps, seed {gcfg.get('seed', '?')}). "
        "Its model card is the generator folder's README.md.",
        "",
    ]
    sampling = record.get("sampling") or {}
    if sampling:
        lines += [
            "**Sampling.** "
            + ", ".join(f"{k} {v}" for k, v in sampling.items() if v is not None)
            + f"; run seed {record.get('seed', '?')}, each image's seed derived from (run seed, class, index).",
            "",
        ]
    syn = meta[meta["origin"] == "synthetic"]
    asked = syn["intended_label"] if "intended_label" in syn.columns else syn["label"]
    prompts = []
    for c in [c for c in CODES if (asked == c).any()]:
        texts = syn.loc[asked == c, "prompt"].dropna().unique() if "prompt" in syn.columns else []
        prompts.append(
            [
                c,
                "; ".join(f"`{t}`" for t in sorted(texts)[:2]) + (" ..." if len(texts) > 2 else "")
                if len(texts)
                else "(class embedding, no text)",
            ]
        )
    lines += ["**Prompts** (the condition each class was sampled with):", "", *table(["class", "prompt"], prompts), ""]
    if labelled:
        per = labelled.get("per_class") or {}
        lines += [
            f"**Labeler filter.** A classifier trained on the real TRAIN images labelled every synthetic image (policy "
            f"`{labelled.get('policy')}`, confidence threshold {labelled.get('threshold')}): {labelled.get('accepted')} of "
            f"{labelled.get('generated')} accepted"
            + (
                "; only accepted images are exported."
                if accepted_only
                else "; every image is exported, `accepted` says which passed."
            ),
            "",
            *table(
                ["class", "generated", "accepted", "rate"],
                [[c, v.get("generated"), v.get("accepted"), v.get("rate")] for c, v in per.items()],
            ),
            "",
        ]
    return lines
