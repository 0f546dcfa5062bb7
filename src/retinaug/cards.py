"""Markdown cards that travel with what retinaug makes: the model card of a generator folder and the dataset card
of an export (both `README.md`, Hugging Face style: a YAML header, then prose and tables).

Cards are built only from files a run already holds (config.json, history.json, the run's records and audit),
so they can be rebuilt at any time: `finetune` writes the generator's card, `retinaug report` rewrites it with the
run's audit figures once the quality stage has measured that generator's images. Audit figures appear only while
the run's records show the audit still describes the images (and generator) at hand; otherwise the card says why not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from . import __version__
from .classes import CLASSES, CODES
from .classify.config import describe
from .generation_record import RUN_RECORD, training_id
from .io import json_dict, save_figure, write_text_atomic
from .stages import SOURCE, read_record

CARD = "README.md"
LOSS_CURVE = "loss_curve.png"
WARNING = (
    "**Not for clinical use.** Synthetic medical images, and models trained on them, are research material: "
    "they must not be used to diagnose, screen or treat anyone, nor as evidence about a real patient."
)
GENERATOR_METHODS = {
    "ddpm": "class-conditional pixel-space diffusion (diffusers UNet2DModel with a class embedding and a null class for "
    "classifier-free guidance)",
    "ldm": "latent diffusion: a small AutoencoderKL trained on the training images, then a class-conditional UNet2DModel "
    "in its latent space",
    "sd-lora": "Stable Diffusion fine-tuned with LoRA adapters (peft); the class is named in the text prompt",
}


# ---------------------------------------------------------------- small markdown helpers


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table (cells formatted with 3 significant digits)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_num(c) for c in row) + " |" for row in rows]


def front_matter(meta: dict) -> str:
    """The YAML header of a Hugging Face card."""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def shown_path(value: str | None) -> str | None:
    """A local path as its last part (cards get published: the reader's disk layout is nobody's business); a hub id as is."""
    if not value:
        return value
    return Path(value).name if os.path.isabs(value) or os.path.exists(value) else value


# ---------------------------------------------------------------- the run's audit


def stage_current(run: Path, stage: str) -> bool:
    """A stage finished and every input it recorded is still what its upstream stage (itself current) last wrote."""
    rec = read_record(run / stage)
    if rec.get("status") != "done":
        return False
    for up, recorded in (rec.get("inputs") or {}).items():
        # switched off when the stage ran (switching it on redoes the stage); the dataset itself: what the data
        # stage made of it is checked through its output hash below
        if recorded == "disabled" or up == SOURCE:
            continue
        if read_record(run / up).get("output_hash", "absent") != recorded or not stage_current(run, up):
            return False
    return True


def run_audit(run: str | Path, generator: str | Path | None = None) -> tuple[dict | None, str]:
    """(RUN/quality/audit.json, where it comes from) while it describes the run's current synthetic images (and, with
    `generator`, images made by that very training run); (None, why not) otherwise."""
    run = Path(run)
    audit = json_dict(run / "quality" / "audit.json")
    if not audit:
        return None, "The run has no quality audit (the quality stage did not run)."
    if not stage_current(run, "quality"):
        return (
            None,
            "The run's quality audit is out of date (an upstream stage changed since); re-run the pipeline to refresh it.",
        )
    if generator is not None:
        made_by = json_dict(run / "synthetic" / RUN_RECORD).get("generator_id")
        if made_by != training_id(Path(generator)):
            return None, "The run's audited images were not made by this training of the generator."
    return audit, f"From the run's quality audit (`quality/audit.json`, features: {audit.get('extractor', '?')})."


def quality_section(audit: dict | None, note: str) -> list[str]:
    """Class fidelity, CAS, FID/KID and memorization figures of an audit, per class and overall, as markdown."""
    lines = ["## Quality", "", note, ""]
    if audit is None:
        return lines
    lines += _quality_table(audit) + [""]
    lines.append(
        "Class fidelity: share of the images (all, before any filter) that the run's labeler assigns to the class "
        "they were asked to show, divided by its recall of that class on real test images (1 = as recognisable as "
        "real images). FID/KID: distance to the real training images in the audit's feature space; 'real test vs "
        "train' is the same distance between two sets of real images, the scale of a good value. Memorized: images "
        "closer to a training image than real test images usually are (the same rule flags the real test images "
        "at the next column's rate)."
    )
    lines += _cas_paragraph(audit.get("cas") or {})
    lines += _img2img_paragraph((audit.get("memorization") or {}).get("img2img") or {})
    return lines + [""]


def _quality_table(audit: dict) -> list[str]:
    """One row per audited class and one for all images; only the columns the audit measured."""
    per, mem = audit.get("per_class") or {}, audit.get("memorization") or {}
    fidelity = (audit.get("class_fidelity") or {}).get("per_class") or {}
    cas_class = (audit.get("cas") or {}).get("per_class") or {}
    classes = [c for c in CODES if c in per or c in fidelity]
    header = [
        "class",
        "synthetic images",
        "class fidelity",
        "FID",
        "FID real test vs train",
        "KID",
        "memorized (rate)",
        "real test images flagged (rate)",
        "CAS recall",
        "real recall",
    ]
    rows = []
    for c in classes:
        p, m, f, k = per.get(c) or {}, mem.get(c) or {}, fidelity.get(c) or {}, cas_class.get(c) or {}
        rows.append(
            [
                c,
                p.get("n_synthetic", f.get("n_synthetic")),
                f.get("fidelity"),
                p.get("fid"),
                p.get("fid_test_vs_train"),
                p.get("kid_mean"),
                m.get("rate"),
                m.get("test_rate"),
                k.get("cas_recall"),
                k.get("real_recall"),
            ]
        )
    overall = audit.get("overall") or {}
    rows.append(
        [
            "all",
            audit.get("n_synthetic"),
            (audit.get("class_fidelity") or {}).get("macro_fidelity"),
            overall.get("fid"),
            overall.get("fid_test_vs_train"),
            overall.get("kid_mean"),
            mem.get("rate"),
            mem.get("test_rate"),
            None,
            None,
        ]
    )
    shown = [i for i in range(len(header)) if i == 0 or any(r[i] is not None for r in rows)]  # measured columns only
    return table([header[i] for i in shown], [[r[i] for i in shown] for r in rows])


def _cas_paragraph(cas: dict) -> list[str]:
    """The classification accuracy score against real training images, or why it was not measured."""
    if "synthetic" in cas and "real" in cas:
        s, r = cas["synthetic"], cas["real"]
        return [
            "",
            f"CAS (classification accuracy score): a classifier trained on synthetic images only reaches macro-F1 "
            f"{_num(s.get('macro_f1'))} (accuracy {_num(s.get('accuracy'))}) on {_num(cas.get('n_test'))} real test "
            f"images, against {_num(r.get('macro_f1'))} ({_num(r.get('accuracy'))}) for the same recipe trained on the "
            f"real training images (ratio {_num(cas.get('f1_ratio'))}); recipe: "
            f"{describe(cas['recipe']) if isinstance(cas.get('recipe'), dict) else 'not recorded'}.",
        ]
    if cas.get("reason"):
        return ["", f"CAS: not measured ({cas['reason']})."]
    return []


def _img2img_paragraph(img2img: dict) -> list[str]:
    """How many img2img images are near-copies of the real image they started from (only when there are some)."""
    if not img2img.get("n"):
        return []
    return [
        "",
        f"img2img: {img2img.get('n_parent_copies')} of {img2img.get('n')} images are near-copies of their real "
        f"parent (rate {_num(img2img.get('parent_copy_rate'))}).",
    ]


# ---------------------------------------------------------------- generator model card


def _loss_curve(history: dict, target: Path, source: Path) -> Path | None:
    """The training loss of every phase (ldm: autoencoder, then diffusion), one panel each; drawn again only when
    the history is newer than the figure."""
    if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return target
    phases = {k: v for k, v in history.items() if isinstance(v, dict) and v.get("loss")}
    phases["diffusion" if phases else "training"] = history
    phases = {k: v for k, v in phases.items() if v.get("loss")}
    if not phases:
        return None
    fig = Figure(figsize=(4.2 * len(phases), 3))
    fig.subplots_adjust(wspace=0.35)
    for i, (name, h) in enumerate(phases.items()):
        ax = fig.add_subplot(1, len(phases), i + 1)
        loss = np.asarray(h["loss"], dtype=float)
        ax.plot(h.get("step") or np.arange(1, len(loss) + 1), loss, lw=1)
        ax.set(xlabel="step", ylabel="loss", title=name)
        ax.set_yscale("log" if (loss > 0).all() and loss.max() > 10 * loss.min() else "linear")
    return save_figure(fig, target)


def write_model_card(generator: str | Path, audit: dict | None = None, audit_note: str | None = None) -> Path:
    """Write GENERATOR/README.md (and loss_curve.png) from the folder's config.json and history.json, with the audit's
    figures when given. Rewriting it changes no other file (the text is only written when it differs)."""
    gen = Path(generator)
    meta, history = json_dict(gen / "config.json"), json_dict(gen / "history.json")
    cfg, method = meta.get("config") or {}, meta.get("method", "?")
    note = audit_note or (
        "Not audited yet: `retinaug run` (quality stage, then report) adds class fidelity, CAS, FID and "
        "memorization figures here."
    )
    lines = [
        *_intro_section(meta),
        *_training_data_section(meta),
        *_training_section(gen, history, cfg),
        *_samples_section(gen),
        *quality_section(audit, note),
        *_how_to_use_section(gen),
        *_limitations_section(),
        *_config_section(cfg),
    ]
    text = front_matter(_model_header(method, cfg.get("base_model"))) + "\n" + "\n".join(lines)
    target = gen / CARD
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        write_text_atomic(target, text)
    return target


def _model_header(method: str, base: str | None) -> dict[str, Any]:
    """The card's YAML header; names the base model only when it is a hub id (a local folder is named in the text)."""
    header: dict[str, Any] = {
        "license": "unknown",
        "tags": ["retinaug", "diffusion", "fundus", "ophthalmology", "medical-imaging"],
    }
    if method == "sd-lora":
        header["pipeline_tag"] = "text-to-image"
        if base and not os.path.isabs(base) and not os.path.exists(base):
            header["base_model"] = base
    return header


def _intro_section(meta: dict) -> list[str]:
    cfg, method = meta.get("config") or {}, meta.get("method", "?")
    start = (
        f"fine-tuned from the base model `{shown_path(cfg.get('base_model'))}` (LoRA adapters only; the base weights are not in this folder)"
        if method == "sd-lora"
        else f"trained from scratch (random initialisation, seed {cfg.get('seed', 0)}); no pretrained weights"
    )
    return [
        f"# {method} generator of fundus photographs ({', '.join(meta.get('classes') or [])})",
        "",
        f"A diffusion model made with retinaug {__version__}: {GENERATOR_METHODS.get(method, method)}, "
        f"at {cfg.get('size', '?')} px, {start}. It learned from {meta.get('n_train_images', '?')} real images of "
        f"{meta.get('train_patients', '?')} training patients; the validation and test patients of the split were never shown to it.",
        "",
        WARNING,
        "",
    ]


def _training_data_section(meta: dict) -> list[str]:
    counts, patients = meta.get("train_counts") or {}, meta.get("train_patients_per_class") or {}
    return [
        "## Training data",
        "",
        "Real images of the TRAIN split only (patient-level split: no patient's images are in two splits).",
        "",
        *table(
            ["class", "name", "images", "patients"],
            [[c, CLASSES.get(c, c), counts.get(c), patients.get(c, "–")] for c in meta.get("classes") or []]
            + [["all", "", meta.get("n_train_images"), meta.get("train_patients")]],
        ),
        "",
    ]


def _training_section(gen: Path, history: dict, cfg: dict) -> list[str]:
    """Steps, speed and final loss; the autoencoder's reconstruction (ldm); the loss curve, drawn here."""
    curve = _loss_curve(history, gen / LOSS_CURVE, gen / "history.json") if history else None
    lines = [
        "## Training",
        "",
        f"{history.get('steps', '?')} optimiser steps ({_num(history.get('seconds'))} s, {_num(history.get('images_per_s'))} images/s, "
        f"precision {history.get('precision', '?')}); final loss {_num((history.get('loss') or [None])[-1], 4)}."
        + (" Also conditioned on the eye side (left/right)." if cfg.get("condition_eye") else ""),
        "",
    ]
    vae = history.get("vae") or {}
    if vae:
        lines += [
            f"Autoencoder first: {vae.get('steps', '?')} steps; reconstruction of {vae.get('n_recon', 0)} held-out "
            f"(validation) images: PSNR {_num(vae.get('recon_psnr'))} dB, SSIM {_num(vae.get('recon_ssim'))}"
            + (" (`recon.png`: originals above reconstructions)." if (gen / "recon.png").is_file() else "."),
            "",
        ]
    if curve is not None:
        lines += [f"![training loss]({LOSS_CURVE})", ""]
    return lines


def _samples_section(gen: Path) -> list[str]:
    """The grid `finetune` sampled after training, when the folder has it."""
    if not (gen / "samples.png").is_file():
        return []
    return [
        "## Samples",
        "",
        "One row per class, sampled after training with the method's default settings:",
        "",
        "![samples](samples.png)",
        "",
    ]


def _how_to_use_section(gen: Path) -> list[str]:
    return [
        "## How to use",
        "",
        "```bash",
        f"retinaug generate --generator {gen.name} --data RUN/data --out synthetic --per-class 100   # or --ratio 1, --mode img2img",
        "```",
        "",
        "`--data` is the prepared data folder the generator was trained on (its TRAIN counts set `--ratio`, its TRAIN images "
        "are the img2img parents).",
        "",
    ]


def _limitations_section() -> list[str]:
    return [
        "## Intended use and limitations",
        "",
        "Research on data augmentation for fundus-photo classifiers, measured on real test patients. The images show what "
        "this model learned from a few hundred or thousand photos: they can carry the training set's biases (camera, "
        "population, grading) and artefacts, and can be near-copies of training images (see the memorization figures). "
        "Not for clinical use (see the warning above).",
        "",
    ]


def _config_section(cfg: dict) -> list[str]:
    """The training config (a local base model by its folder name only) and the folder's files."""
    base = cfg.get("base_model")
    return [
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump({**cfg, **({"base_model": shown_path(base)} if base else {})}, sort_keys=False).rstrip(),
        "```",
        "",
        "Files: `config.json` (method, classes, training data counts, config), the weights (safetensors), `history.json` "
        f"(loss per step, timings), `samples.png`, `{LOSS_CURVE}`.",
        "",
    ]


def refresh_model_card(run: str | Path) -> Path | None:
    """Rewrite RUN/generator/README.md with the run's audit (when it measured this generator's images)."""
    gen = Path(run) / "generator"
    if not (gen / "config.json").is_file():
        return None
    audit, note = run_audit(run, gen)
    return write_model_card(gen, audit, note)
