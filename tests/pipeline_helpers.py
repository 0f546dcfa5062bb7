"""A tiny but complete pipeline run (every stage, real code, 16 px), built once per test session and shared by
test_pipeline.py, test_report.py, test_export.py and test_model_card.py; and how tests start the CLI in a process
of its own."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path


def cli(*args: str) -> list[str]:
    """The `retinaug` command line with this interpreter (and so this checkout's code)."""
    return [sys.executable, "-c", "from retinaug.cli import main; main()", *args]


def cli_env() -> dict[str, str]:
    """Environment of a CLI subprocess whose results must equal this process's: the same torch thread count (float
    reduction order), quiet, and this checkout's tests folder and code on the path."""
    import torch

    return {
        **os.environ,
        "RETINAUG_QUIET": "1",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    }


TINY = {
    "name": "tiny",
    "data": {"source": "phantom", "n": 96, "size": 16, "val": 0.2, "test": 0.25},
    "generator": {
        "ddpm": {
            "size": 16,
            "steps": 4,
            "batch_size": 16,
            "block_out_channels": [16, 32],
            "attention_levels": [],
            "norm_num_groups": 8,
            "warmup_steps": 1,
            "samples_per_class": 1,
        }
    },
    "synthetic": {"per_class": 4, "batch_size": 32, "steps": 2},
    "labeler": {
        "train": {
            "task": "8-class",
            "backbone": "resnet10t",
            "size": 16,
            "epochs": 1,
            "batch_size": 16,
            "augment": False,
        }
    },
    "label": {"policy": "all"},
    "selection": {"extractor": "pixels", "keep": 0.5, "perplexity": 5},
    "experiments": {
        "sets": [],
        "seeds": 1,
        "n_boot": 10,
        "scenarios": [
            {"name": "real", "task": "5-class"},
            {"name": "syn", "task": "5-class", "synthetic": 0.5},
            {"name": "trad", "task": "5-class", "traditional": 1},
            {"name": "sel", "task": "7-class", "synthetic": 0.5, "selection": True},
        ],
        "train": {"backbone": "resnet10t", "size": 16, "epochs": 1, "batch_size": 16, "augment": False},
    },
    "quality": {"extractor": "pixels", "kid_subset_size": 4, "kid_subsets": 2, "ssim_size": 16},
}


def tiny_config(*overrides: str):
    from retinaug.config import PipelineConfig, apply_set

    raw = TINY
    for item in overrides:
        raw = apply_set(raw, item)
    return PipelineConfig.model_validate(raw)


@functools.lru_cache(maxsize=1)
def tiny_run() -> Path:
    from retinaug.pipeline import run_pipeline

    root = Path(tempfile.mkdtemp(prefix="retinaug-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # 100 MB per test session otherwise left in /tmp
    run = root / "run"
    run_pipeline(tiny_config(), run)
    return run


def quality_row(card: str, code: str) -> list[str]:
    """The cells of one class's row in a card's Quality table."""
    quality = card.split("## Quality", 1)[1].split("\n## ", 1)[0]
    return next(line.strip("| ").split(" | ") for line in quality.splitlines() if line.startswith(f"| {code} | "))


def small_copy(tmp_path: Path) -> Path:
    """The shared tiny run without its experiments and models (what export and the cards read), to alter safely."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run, ignore=shutil.ignore_patterns("experiments", "*.safetensors", "cache"))
    return run
