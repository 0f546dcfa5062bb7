"""benchmarks/gpu_check.py at tiny sizes on the CPU: every section runs its code path (ours and the plain
diffusers / torch baseline on the same model) and the JSON holds a positive rate and a ratio for each."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_tiny_on_cpu_writes_rates_and_ratios(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tiny"] and result["precision"] == "no" and result["machine"]["device"] == "cpu"
    rows = {(r["section"], r["what"]): r for r in result["rows"]}
    for section in ("sd-lora", "ddpm", "ldm", "classifier"):
        mine = [r for (s, _), r in rows.items() if s == section]
        ratios = [r for r in mine if r["unit"] == "x"]
        assert ratios or section == "ldm"
        assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in mine), (section, mine)
        assert len(mine) == 3 * len(ratios)  # ours, plain, ratio
    assert {r["what"].split(",")[0] for r in result["rows"] if r["section"] == "sd-lora" and r["unit"] == "x"} == {
        "train ratio ours / plain",
        "txt2img ratio ours / plain",
    }
    from retinaug.generate import list_generators

    if "ldm" in list_generators():
        assert {"train ratio ours / plain"} == {w for s, w in rows if s == "ldm" and rows[(s, w)]["unit"] == "x"}
        assert result["details"]["ldm"]["vae_train"]["steps"] == 2  # the autoencoder phase is recorded beside it
    else:
        assert result["details"]["ldm"] == {"skipped": "generator 'ldm' is not registered in this version"}
    assert "| sd-lora | txt2img ratio ours / plain |" in proc.stdout  # the Markdown table on stdout


def test_gpu_check_without_a_gpu_and_without_tiny_says_so(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "no CUDA GPU" in proc.stdout and not (tmp_path / "x.json").exists()
