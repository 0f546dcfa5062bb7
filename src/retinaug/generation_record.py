"""What a folder of synthetic images records of its making: the `generate` run's record file, and the id of the
generator training run that made the images (its `generator_id`).

Kept out of `retinaug.generate`, which imports every generator (diffusers) on import: the model and dataset cards
(`retinaug report`, `retinaug export`) check the record without loading any generator.
"""

from __future__ import annotations

from pathlib import Path

from .io import sha256_text

RUN_RECORD = "generate.json"
CONFIG_NAME = "config.json"  # a generator folder's config (method, classes, settings); generate.registry reads it
TRAINING_FILES = (CONFIG_NAME, "history.json")


def training_id(generator: Path) -> str:
    """Identifies one training run of a generator folder: its config.json and history.json (loss curve, timings)."""
    files = [generator / name for name in TRAINING_FILES]
    return sha256_text("\n".join(f.read_text() for f in files if f.is_file()))[:16]
