"""CLI verbs for the generate stage(s): thin wrappers over the Python API."""

from .app import app  # noqa: F401
