"""CLI verbs for the phantom stage(s): thin wrappers over the Python API."""

from .app import app  # noqa: F401
