"""Shared fixtures: a tiny labelled dataset on disk, built in the test (no download, no phantom needed)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RETINAUG_QUIET", "1")
# the torch threads of a test and of the CLI processes it starts: CI's 2 cores shared by the pytest-xdist workers
# (pyproject's `-n 2`: 1 thread each, 2 without xdist), unless RETINAUG_TEST_THREADS says otherwise (1 beside a benchmark)
THREADS = int(
    os.environ.get("RETINAUG_TEST_THREADS") or max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
)
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "RETINAUG_CACHE_DIR" not in os.environ:  # keep the user's ~/.cache clean: one image cache per test session
    import atexit
    import shutil
    import tempfile

    os.environ["RETINAUG_CACHE_DIR"] = tempfile.mkdtemp(prefix="retinaug-cache-")
    atexit.register(shutil.rmtree, os.environ["RETINAUG_CACHE_DIR"], ignore_errors=True)
if "RETINAUG_CONFIG_DIR" not in os.environ:  # trusted image roots recorded by tests stay out of ~/.config
    import atexit
    import shutil
    import tempfile

    os.environ["RETINAUG_CONFIG_DIR"] = tempfile.mkdtemp(prefix="retinaug-config-")
    atexit.register(shutil.rmtree, os.environ["RETINAUG_CONFIG_DIR"], ignore_errors=True)

SHARED_ODIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "odir5k-256"
if "RETINAUG_ODIR" in os.environ:
    SHARED_ODIR = Path(os.environ["RETINAUG_ODIR"])


def make_dataset(
    root: Path,
    classes: tuple[str, ...] = ("G", "C", "A"),
    patients_per_class: int = 8,
    size: int = 32,
    seed: int = 0,
    splits: dict[str, float] | None = None,
):
    """Write a small real-looking manifest: 2 eyes per patient, a class-specific colour + noise per image,
    patients split train/val/test by class-stratified order. Returns the saved manifest DataFrame."""
    from retinaug.manifest import load_manifest, new_manifest, save_manifest

    rng = np.random.default_rng(seed)
    fractions = splits or {"train": 0.5, "val": 0.25, "test": 0.25}
    rows = []
    for ci, code in enumerate(classes):
        colour = np.array([(60 + 70 * ci) % 256, (200 - 50 * ci) % 256, (30 + 90 * ci) % 256], dtype=float)
        n_train = round(patients_per_class * fractions["train"])
        n_val = round(patients_per_class * fractions["val"])
        for k in range(patients_per_class):
            split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            pid = f"{code}{k:03d}"
            for eye in ("left", "right"):
                img = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                rel = Path("images") / code / f"{pid}_{eye}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / rel)
                rows.append(
                    dict(
                        path=str(root / rel),
                        label=code,
                        patient_id=pid,
                        eye=eye,
                        split=split,
                        origin="real",
                        source="test",
                    )
                )
    save_manifest(new_manifest(rows), root)
    return load_manifest(root)


def write_hub_snapshot(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face hub cache at ROOT holding FILES (relative paths) as REPO's `main`, laid out as huggingface_hub
    writes it (blobs named by content, snapshot symlinks, refs/main); returns the snapshot folder."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    (folder / "blobs").mkdir(parents=True)
    for name, payload in files.items():
        blob = folder / "blobs" / hashlib.sha256(payload).hexdigest()
        blob.write_bytes(payload)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(snapshot.name)
    return snapshot


@pytest.fixture
def tiny_data(tmp_path: Path):
    """A 3-class manifest (G, C, A), 8 patients x 2 eyes per class, 32 px, saved in tmp_path/data."""
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Every test computes with THREADS torch threads (float reductions, and so results, depend on the count)."""
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass
    yield


def kill9_at(args: list[str], fault: str, env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """Run `retinaug ARGS` in a subprocess that SIGKILLs itself at `fault` (RETINAUG_FAULT, e.g. 'kill@step:7': right
    after its 7th training step; see retinaug.faults) and check that it died there. `env`: default 1 thread, quiet."""
    from pipeline_helpers import cli

    env = env or {**os.environ, "RETINAUG_QUIET": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        cli(*args), env={**env, "RETINAUG_FAULT": fault}, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == -signal.SIGKILL, (
        f"not killed at {fault} (exit code {res.returncode}):\n{res.stderr[-3000:]}"
    )
