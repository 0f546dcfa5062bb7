"""CLI verbs for the quality stage(s): thin wrappers over the Python API."""

from .app import app  # noqa: F401
