"""Report section on how the run was made: stage records, machine, package versions, the resolved config."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd
from markupsafe import Markup, escape

from ..stage_order import stage_records
from .html import h3, join, p, table

PACKAGES = (
    "retinaug",
    "torch",
    "torchvision",
    "timm",
    "diffusers",
    "peft",
    "transformers",
    "accelerate",
    "scikit-learn",
    "torchmetrics",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "pydantic",
)


def _versions() -> pd.DataFrame:
    rows = []
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def section_provenance(run: Path) -> Markup | None:
    timings = [
        {
            "stage": label,
            "status": rec.get("status"),
            "seconds": rec.get("seconds"),
            "started": rec.get("started"),
            "why": rec.get("why"),
        }
        for label, rec in stage_records(run)
    ]
    parts = []
    if timings:
        t = pd.DataFrame(timings)
        parts += [
            h3("Stages"),
            table(t, floatfmt="{:.1f}"),
            p(f"total {pd.to_numeric(t['seconds'], errors='coerce').sum():.1f} s"),
        ]
    try:
        import torch

        device = f"torch {torch.__version__}, CUDA {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}, {torch.get_num_threads()} threads"
    except ImportError:
        device = "torch not installed"
    # no host name: a report gets shared, and what it ran on is the platform, not this machine's name
    machine = f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; {device}"
    parts += [h3("Machine"), p(machine), h3("Package versions"), table(_versions())]
    cfg = run / "config.yaml"
    if cfg.is_file():
        parts += [
            h3("Resolved config"),
            Markup(f"<details><summary>config.yaml</summary><pre>{escape(cfg.read_text())}</pre></details>"),
        ]
    return join(parts)
