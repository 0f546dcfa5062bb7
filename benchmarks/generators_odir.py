"""Which generator makes fundus images that carry their class? Side by side on real ODIR-5K (issue 13).

Each row trains (or reuses) a generator on the TRAIN patients, samples as many images per class of G C A H M as
the class has real TRAIN images (ratio 1), and audits them with one fixed labeler (5-class, trained once on the
real train images): class fidelity (share assigned to the asked class / the labeler's recall on real test),
CAS (a classifier trained on the synthetic images only, vs the same recipe on real; macro-F1 ratio), FID against
the real test-vs-train floor in the labeler's feature space, and the memorization audit (nearest training image,
parents apart for img2img). Every stage resumes: re-running skips what is finished.

Rows (the issue's table): today's ddpm (5 classes, 64 px) · ddpm on all classes · img2img from real parents with
the all-class ddpm at strength 0.3 / 0.5 / 0.7 · ldm at 128 px.

  taskset -c 0 python benchmarks/generators_odir.py --work runs/bench --threads 1
  python benchmarks/generators_odir.py --work runs/bench --rows ddpm-all,ddpm-all-img2img-0.5   # a subset
-> benchmarks/results/generators-odir.{json,md} and a sample grid per row (generators-odir-ROW-samples.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from retinaug.classify import EvaluateConfig, TrainConfig, evaluate, fit
from retinaug.errors import validated
from retinaug.generate import GenerateConfig, finetune, generate
from retinaug.generate.registry import generator_class
from retinaug.hardware import environment
from retinaug.io import write_json_atomic, write_text_atomic
from retinaug.manifest import load_manifest, manifest_file
from retinaug.quality import audit
from retinaug.quality.config import AuditConfig

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = ["G", "C", "A", "H", "M"]
ODIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "odir5k-256"

# The odir-cpu preset's generator (a 2.5 M-parameter UNet that trains at ~14 images/s on 2 cores at 64 px) and its
# sampling (DPM-Solver++ 20 steps, guidance 2); rows differ only in what the issue compares.
DDPM = dict(
    size=64,
    steps=1200,
    batch_size=16,
    lr=1e-3,
    block_out_channels=[32, 64, 128],
    attention_levels=[],
    norm_num_groups=8,
    samples_per_class=8,
)
SAMPLE = dict(steps=20, guidance=2.0, scheduler="dpm", batch_size=32, precision="auto")
# The ldm row's budget: 500 autoencoder steps (batch 16, 128 px; ~35 min on 2 cores, the 128 px convolutions are the
# cost) then the same 1,200 x 16 latent-UNet steps as the ddpm rows (32 px latents).
LDM = dict(
    size=128,
    steps=1200,
    batch_size=16,
    lr=1e-3,
    block_out_channels=[32, 64, 128],
    attention_levels=[],
    norm_num_groups=8,
    samples_per_class=8,
    vae_steps=500,
)

ROWS: dict[str, dict] = {
    "ddpm-5class": dict(
        method="ddpm",
        train={**DDPM, "train_classes": CLASSES},
        sample=SAMPLE,
        what="today's odir-cpu generator: 5 classes (613 train images)",
    ),
    "ddpm-all": dict(
        method="ddpm",
        train={**DDPM, "train_classes": "all"},
        sample=SAMPLE,
        what="the same UNet and budget on every class (3,464 train images)",
    ),
    **{
        f"ddpm-all-img2img-{s}": dict(
            generator="ddpm-all",
            sample={**SAMPLE, "mode": "img2img", "strength": s},
            what=f"ddpm-all, img2img from real train parents at strength {s}",
        )
        for s in (0.3, 0.5, 0.7)
    },
    "ldm-128": dict(
        method="ldm",
        train={**LDM, "train_classes": "all"},
        sample=SAMPLE,
        what="latent diffusion at 128 px: autoencoder + class-conditional latent UNet, every class",
    ),
    "ddpm-all-img2img-0.3-0.7": dict(
        generator="ddpm-all",
        sample={**SAMPLE, "mode": "img2img", "strength": [0.3, 0.7]},
        what="ddpm-all, img2img with a strength drawn per image in [0.3, 0.7] (DA-Fusion style)",
    ),
    "ldm-128-img2img-0.5": dict(
        generator="ldm-128",
        sample={**SAMPLE, "mode": "img2img", "strength": 0.5},
        what="ldm-128, img2img from real train parents (through its autoencoder) at strength 0.5",
    ),
    "ddpm-5class-img2img-0.5": dict(
        generator="ddpm-5class",
        sample={**SAMPLE, "mode": "img2img", "strength": 0.5},
        what="ddpm-5class, img2img from real train parents at strength 0.5",
    ),
}

# The scenario classifier of odir-cpu (CAS) and its labeler (class fidelity, FID features).
RECIPE = TrainConfig(task="5-class", backbone="resnet18", size=64, epochs=8, patience=8, batch_size=32)
LABELER = TrainConfig(task="5-class", backbone="resnet18", size=64, epochs=12, patience=12, batch_size=32)


def prepare(work: Path, odir: Path) -> tuple[Path, Path]:
    """The prepared data folder and the labeler (made once)."""
    data, labeler = work / "data", work / "labeler"
    if not manifest_file(data).is_file():
        from retinaug.ingest import OdirConfig, prepare_odir

        prepare_odir(odir, OdirConfig(), data)
    if not (labeler / "model.json").is_file():
        df = load_manifest(data)
        real = df[df["origin"] == "real"]
        fit(real[real["split"] == "train"], real[real["split"] == "val"], LABELER, labeler)
        evaluate(labeler, real, EvaluateConfig(n_boot=1000), labeler / "eval")
    return data, labeler


SMOKE = dict(steps=3, vae_steps=3, samples_per_class=1)  # --smoke: every code path in minutes, numbers meaningless


def train_generator(name: str, row: dict, work: Path, data: Path, smoke: bool = False) -> Path:
    """The row's generator folder, trained unless it is there (an img2img row reuses another row's)."""
    gen_dir = work / "rows" / row.get("generator", name) / "generator"
    if "method" in row and not (gen_dir / "config.json").is_file():
        train = (
            {**row["train"], **{k: v for k, v in SMOKE.items() if k != "vae_steps" or row["method"] == "ldm"}}
            if smoke
            else row["train"]
        )
        config = validated(generator_class(row["method"]).config_class, train, f"{row['method']} config")
        finetune(data, config, gen_dir, checkpoint_every=200)
    return gen_dir


def run_row(name: str, row: dict, work: Path, data: Path, labeler: Path, smoke: bool = False) -> dict:
    folder = work / "rows" / name
    gen_dir = train_generator(name, row, work, data, smoke)
    history = json.loads((gen_dir / "history.json").read_text())
    t0 = time.perf_counter()
    amount = {"per_class": 4} if smoke else {"ratio": 1.0}
    sampling = validated(GenerateConfig, {**row["sample"], **amount, "classes": CLASSES}, "generate option(s)")
    syn = generate(gen_dir, data, sampling, folder / "synthetic")
    record = json.loads((folder / "synthetic" / "generate.json").read_text())
    audit_dir = folder / "quality"
    if not (audit_dir / "audit.json").is_file():
        recipe = RECIPE.model_copy(update={"epochs": 1, "patience": 1}) if smoke else RECIPE
        audit(
            syn,
            load_manifest(data),
            audit_dir,
            extractor="labeler",
            labeler=labeler,
            config=AuditConfig(cas_n_boot=0 if smoke else 1000, kid_subset_size=4 if smoke else 100),
            cas_recipe=recipe,
        )
    report = json.loads((audit_dir / "audit.json").read_text())
    shutil.copyfile(
        audit_dir / "class_samples.png", RESULTS / f"generators-odir-{name}-samples.png"
    )  # this row's images
    fidelity = report["class_fidelity"]
    cas = report["cas"]
    return {
        "row": name,
        "what": row["what"],
        "generator": json.loads((gen_dir / "config.json").read_text()),
        "sampling": record.get("sampling"),
        "train_minutes": round(
            (history["seconds"] + history.get("vae", {}).get("seconds", 0)) / 60, 1
        ),  # ldm: + its autoencoder
        "vae_minutes": round(history["vae"]["seconds"] / 60, 1) if "vae" in history else None,
        "recon_psnr": history.get("vae", {}).get("recon_psnr"),
        "recon_ssim": history.get("vae", {}).get("recon_ssim"),
        "train_images_per_s": round(history["images_per_s"], 2),
        "train_precision": history.get("precision"),
        "sample_images_per_s": record.get("images_per_s"),
        "sample_minutes_this_run": round((time.perf_counter() - t0) / 60, 1),
        "n_synthetic": int(len(syn)),
        "fidelity": {c: fidelity["per_class"].get(c, {}).get("fidelity") for c in CLASSES},
        "share": {c: fidelity["per_class"].get(c, {}).get("share") for c in CLASSES},
        "macro_fidelity": fidelity.get("macro_fidelity"),
        "cas_f1": cas.get("synthetic", {}).get("macro_f1"),
        "real_f1": cas.get("real", {}).get("macro_f1"),
        "cas_ratio": cas.get("f1_ratio"),
        "cas_recall": {c: cas.get("per_class", {}).get(c, {}).get("cas_recall") for c in CLASSES},
        "fid": report["overall"]["fid"],
        "fid_floor": report["overall"]["fid_test_vs_train"],
        "fid_per_class": {c: report["per_class"][c]["fid"] for c in CLASSES if c in report["per_class"]},
        "fid_floor_per_class": {
            c: report["per_class"][c]["fid_test_vs_train"] for c in CLASSES if c in report["per_class"]
        },
        "memorization_rate": report["memorization"]["rate"],
        "memorization_test_rate": report["memorization"]["test_rate"],
        "parent_copy_rate": report["memorization"]["img2img"]["parent_copy_rate"],
    }


def _f(x, fmt="{:.2f}") -> str:
    return "" if x is None else fmt.format(x)


def markdown(rows: list[dict], labeler_eval: dict) -> str:
    recall = {c: labeler_eval["per_class"][c]["recall"] for c in CLASSES}
    lines = [
        f"Labeler (5-class resnet18, 64 px, real train): test macro-F1 {labeler_eval['macro_f1']:.3f}; recall "
        + ", ".join(f"{c} {recall[c]:.2f}" for c in CLASSES)
        + ". Class fidelity = share assigned to the asked class / that recall.",
        "",
        "| row | train min | sample img/s | fidelity G | C | A | H | M | macro | CAS F1 | real F1 | CAS/real | FID | floor | FID/floor | memorized | parent copies |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["fid"] / r["fid_floor"] if r["fid"] is not None and r["fid_floor"] else None
        lines.append(
            "| "
            + " | ".join(
                [
                    r["row"],
                    _f(r["train_minutes"], "{:.0f}"),
                    _f(r["sample_images_per_s"]),
                    *[_f(r["fidelity"][c]) for c in CLASSES],
                    _f(r["macro_fidelity"]),
                    _f(r["cas_f1"], "{:.3f}"),
                    _f(r["real_f1"], "{:.3f}"),
                    _f(r["cas_ratio"]),
                    _f(r["fid"], "{:.1f}"),
                    _f(r["fid_floor"], "{:.1f}"),
                    _f(ratio),
                    _f(r["memorization_rate"], "{:.1%}"),
                    _f(r["parent_copy_rate"], "{:.1%}"),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--work", type=Path, default=Path("runs/bench"), help="work folder (data/, labeler/, rows/<row>/...)"
    )
    p.add_argument("--odir", type=Path, default=ODIR, help="ODIR-5K folder (Kaggle layout)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows: {', '.join(ROWS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--name", default="odir", help="writes benchmarks/results/generators-NAME.{json,md}")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps and images per row: checks every code path (use another --work and --name)",
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="prepare the data and the labeler and train the rows' generators, nothing else (what odir_img2img_grid.sh needs)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data, labeler = prepare(args.work, args.odir)
    if args.train_only:
        for name in args.rows.split(","):
            print(train_generator(name, ROWS[name], args.work, data, args.smoke), flush=True)
        return
    results_file = RESULTS / f"generators-{args.name}.json"
    done = {r["row"]: r for r in json.loads(results_file.read_text())["rows"]} if results_file.is_file() else {}
    for name in args.rows.split(","):
        started = time.perf_counter()
        done[name] = run_row(name, ROWS[name], args.work, data, labeler, args.smoke)
        print(f"{name}: done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        rows = [done[n] for n in ROWS if n in done]
        labeler_eval = json.loads((labeler / "eval" / "metrics.json").read_text())
        write_json_atomic(
            results_file,
            {
                "machine": environment(),
                "threads": torch.get_num_threads(),
                "rows": rows,
                "labeler": {k: labeler_eval[k] for k in ("macro_f1", "per_class")},
            },
        )
        write_text_atomic(results_file.with_suffix(".md"), markdown(rows, labeler_eval))
    print(results_file.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
