"""The generator's model card (GENERATOR/README.md): written by finetune, refreshed with the run's audit by the report."""

from __future__ import annotations

import json

import yaml
from conftest import make_dataset
from PIL import Image
from pipeline_helpers import quality_row, small_copy, tiny_run

from retinaug.cards import refresh_model_card, write_model_card
from retinaug.generate import DDPMConfig, finetune


def test_finetune_writes_a_model_card_from_its_own_numbers(tmp_path):
    make_dataset(tmp_path / "data", classes=("G", "C"), patients_per_class=6, size=16)
    tiny = {
        "size": 16,
        "steps": 5,
        "batch_size": 8,
        "block_out_channels": [16, 32],
        "norm_num_groups": 8,
        "warmup_steps": 1,
        "samples_per_class": 1,
        "condition_eye": True,
    }
    meta = finetune(tmp_path / "data", DDPMConfig(**tiny), tmp_path / "gen")
    card = (tmp_path / "gen" / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "unknown" and "fundus" in header["tags"] and "base_model" not in header
    assert "# ddpm generator of fundus photographs (G, C)" in card and "trained from scratch" in card
    assert meta["train_patients_per_class"] == {"G": 3, "C": 3}  # 3 of 6 patients per class are TRAIN, 2 eyes each
    assert "| G | glaucoma | 6 | 3 |" in card and "| C | cataract | 6 | 3 |" in card and "| all |  | 12 | 6 |" in card
    history = json.loads((tmp_path / "gen" / "history.json").read_text())
    assert "5 optimiser steps" in card and f"final loss {history['loss'][-1]:.4g}." in card and "eye side" in card
    config = yaml.safe_load(card.split("## Config")[1].split("```yaml\n")[1].split("```")[0])
    assert config == meta["config"]
    assert "![training loss](loss_curve.png)" in card and "![samples](samples.png)" in card
    with Image.open(tmp_path / "gen" / "loss_curve.png") as im:
        assert im.format == "PNG" and im.width > 100
    assert "Not audited yet" in card and "Not for clinical use" in card and str(tmp_path) not in card
    before = (tmp_path / "gen" / "README.md").stat().st_mtime_ns
    write_model_card(tmp_path / "gen")  # same files: nothing rewritten
    assert (tmp_path / "gen" / "README.md").stat().st_mtime_ns == before


def test_run_card_has_the_audit_figures_and_the_report_links_it():
    run = tiny_run()
    card = (run / "generator" / "README.md").read_text()
    audit = json.loads((run / "quality" / "audit.json").read_text())
    for code in audit["classes"]:
        row = quality_row(card, code)
        assert f"{audit['per_class'][code]['fid']:.3g}" in row and f"{audit['memorization'][code]['rate']:.3g}" in row
    assert f"{audit['overall']['fid']:.3g}" in quality_row(card, "all") and "From the run's quality audit" in card
    assert "| N | normal | " in card  # the generator learned every TRAIN class; the audit measured the sampled ones
    assert 'href="../generator/README.md"' in (run / "report" / "index.html").read_text()


def test_card_drops_the_audit_of_images_another_training_made(tmp_path):
    run = small_copy(tmp_path)
    record = json.loads((run / "synthetic" / "generate.json").read_text())
    (run / "synthetic" / "generate.json").write_text(json.dumps({**record, "generator_id": "retrained"}))
    card = refresh_model_card(run).read_text()
    assert "not made by this training of the generator" in card and "| FID |" not in card
