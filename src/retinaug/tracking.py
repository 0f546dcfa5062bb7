"""Optional experiment tracking through accelerate's trackers (TensorBoard), off by default."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from .errors import RetinaugError

Tracker = Literal["none", "tensorboard"]
TRACKER_HELP = "Log curves through accelerate's tracker: none, or tensorboard (event files in OUT/tracking; pip install tensorboard)."


def tracker_args(tracker: Tracker, out: Path | None) -> dict[str, Any]:
    """`Accelerator(**tracker_args(...))` keyword arguments; a clear error when the tracker's package is absent."""
    if tracker == "none" or out is None:
        return {}
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise RetinaugError("tracker 'tensorboard' needs the tensorboard package: pip install 'retinaug[tracking]'")
    return {"log_with": tracker, "project_dir": str(Path(out) / "tracking")}


def hparams(config: Any) -> dict[str, Any]:
    """A config as the flat scalar dict TensorBoard's hparams accept (lists and paths become strings)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.model_dump().items()}
