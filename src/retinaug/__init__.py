"""retinaug: diffusion-based data augmentation for ocular disease diagnosis, leakage-free.

The Python API is one function per stage (see DESIGN.md); the `retinaug` CLI is a thin layer over it.
"""

from .classes import CLASSES, TASKS, resolve_task
from .errors import ManifestError, RetinaugError
from .manifest import load_manifest, save_manifest, validate_manifest

__version__ = "0.1.0"

__all__ = [
    "CLASSES",
    "TASKS",
    "ManifestError",
    "RetinaugError",
    "load_manifest",
    "resolve_task",
    "save_manifest",
    "validate_manifest",
]
