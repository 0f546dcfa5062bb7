"""`retinaug run --preset paper` end to end on a CPU: a tiny ODIR folder (Kaggle layout) and a random Stable Diffusion
folder built here (tiny, or with SD 1.5's released shapes and layout at 256 px), the preset's own
settings except sizes shrunk with --set. Every stage runs (the GPU recipe's code path: sd-lora, VGG19, the seed's full
scenario grid, CAS) and the report renders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_sd import make_sd_release, make_tiny_sd, single_thread  # noqa: F401 (fixture)
from typer.testing import CliRunner

from retinaug.classes import CODES
from retinaug.cli import app
from retinaug.stage_order import stage_names
from retinaug.stages import read_record

KEYWORDS = {
    "N": "normal fundus",
    "D": "moderate non proliferative retinopathy",
    "G": "glaucoma",
    "C": "cataract",
    "A": "dry age-related macular degeneration",
    "H": "hypertensive retinopathy",
    "M": "pathological myopia",
    "O": "epiretinal membrane",
}
PATIENTS = 4  # per class: 2 train, 1 val, 1 test at the preset's 0.15 / 0.15 split


def tiny_odir(root: Path, size: int = 64) -> Path:
    """A Kaggle-layout ODIR-5K folder: PATIENTS patients per class, both eyes of the class, a class colour + noise."""
    rng = np.random.default_rng(0)
    rows = []
    for ci, code in enumerate(CODES):
        colour = np.array([40 + 25 * ci, 200 - 20 * ci, 60 + 15 * (ci % 3)], dtype=float)
        for k in range(PATIENTS):
            pid = 100 * (ci + 1) + k
            for eye in ("left", "right"):
                name = f"{pid}_{eye}.jpg"
                pixels = np.clip(colour + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                (root / "preprocessed_images").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / "preprocessed_images" / name, quality=95)
                rows.append(
                    {
                        "ID": pid,
                        "Left-Diagnostic Keywords": KEYWORDS[code],
                        "Right-Diagnostic Keywords": KEYWORDS[code],
                        "labels": f"['{code}']",
                        "filename": name,
                    }
                )
    pd.DataFrame(rows).to_csv(root / "full_df.csv", index=False)
    return root


# ~105 CPU-seconds alone (one thread): 14 VGG19 scenario fits + labeler + 2 CAS fits; over the 60 s the suite allows
@pytest.mark.slow
@pytest.mark.parametrize(
    "sd_size",
    [
        "tiny",
        # Stable Diffusion 1.5's released shapes and layout (random weights, a 6 GB folder) at 256 px, everything else tiny:
        # about half an hour on one CPU thread, most of it the generator's samples.png (30 sampling steps at ~6 s each)
        "real",
    ],
)
def test_paper_preset_runs_every_stage_on_cpu(tmp_path, single_thread, sd_size):
    odir = tiny_odir(tmp_path / "odir")
    if sd_size == "real":
        sd, size, sd_extra = (
            make_sd_release(tmp_path / "stable-diffusion-v1-5", real_size=True),
            256,
            {"generator.sd_lora.samples_per_class": 1, "generator.sd_lora.batch_size": 1},
        )
    else:
        sd, size, sd_extra = make_tiny_sd(tmp_path / "tiny-sd"), 32, {"generator.sd_lora.batch_size": 2}
    tiny = {
        "data.path": odir,
        "generator.sd_lora.base_model": sd,
        "generator.sd_lora.size": size,
        "generator.sd_lora.steps": 2,
        "generator.sd_lora.grad_accum": 1,
        **sd_extra,
        "synthetic.steps": 2,
        "labeler.train.size": 32,
        "labeler.train.epochs": 1,
        "experiments.seeds": 1,
        "experiments.n_boot": 10,
        "experiments.train.size": 32,
        "experiments.train.epochs": 1,
        "quality.cas_n_boot": 10,
        "quality.kid_subsets": 2,
    }
    run = tmp_path / "run"
    args = ["run", "--preset", "paper", "--out", str(run)] + [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in stage_names():
        assert read_record(run / name).get("status") == "done", name

    config = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert config["generator"]["method"] == "sd-lora" and config["experiments"]["train"]["backbone"] == "vgg19"
    gen = json.loads((run / "generator" / "config.json").read_text())
    assert gen["method"] == "sd-lora" and gen["classes"] == list(
        CODES
    )  # learns from every class, samples the asked ones
    syn = pd.read_parquet(run / "synthetic" / "manifest.parquet")
    assert (
        sorted(syn["label"].unique()) == sorted("GCAHM") and (syn.groupby("label").size() == 5 * 4).all()
    )  # 1.25 x 4x x 4 real
    summary = pd.read_csv(run / "experiments" / "summary.csv")
    scenarios = set(summary["scenario"])
    assert {
        "5class-real",
        "5class-syn-x4",
        "5class-trad-x2",
        "7class-syn-x1-tsne",
        "5class-real-class-weights",
    } <= scenarios
    audit = json.loads((run / "quality" / "audit.json").read_text())
    assert audit["cas"]["recipe"]["backbone"] == "vgg19" and audit["cas"]["classes"] == ["G", "C", "A", "H", "M"]
    assert audit["class_fidelity"]["n_classes_scored"] >= 0 and set(audit["class_fidelity"]["per_class"]) == set(
        "GCAHM"
    )

    html = (run / "report" / "index.html").read_text()
    states = dict(re.findall(r'<section id="(\w+)" class="(\w+)">', html))
    assert states and all(state == "ok" for state in states.values()), states
    assert "CAS macro-F1" in html
