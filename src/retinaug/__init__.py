"""retinaug: diffusion-based data augmentation for ocular disease diagnosis, leakage-free.

The Python API is one function per stage (see DESIGN.md); the `retinaug` CLI is a thin layer over it. The names
below load on first use, so `import retinaug` (and every CLI start) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "CLASSES": "classes",
    "TASKS": "classes",
    "resolve_task": "classes",
    "ManifestError": "errors",
    "RetinaugError": "errors",
    "load_manifest": "manifest",
    "save_manifest": "manifest",
    "validate_manifest": "manifest",
}

__all__ = sorted(_LAZY)  # noqa: PLE0605  (the lazily imported names, listed once in _LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'retinaug' has no attribute {name!r}")
