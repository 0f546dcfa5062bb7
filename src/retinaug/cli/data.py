"""CLI verbs for the data stage(s): thin wrappers over the Python API."""

from .app import app  # noqa: F401
