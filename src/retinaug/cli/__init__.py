"""`retinaug` command line: importing the per-stage modules registers their commands on `app`."""

from . import audit, augment, classify, data, env, export, generate, phantom, pipeline  # noqa: F401  (register commands)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
