"""Optional experiment tracking through accelerate's own trackers (`log_with`), off by default.

`tracker:` takes any tracker accelerate knows (tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive,
swanlab, trackio); its package must be installed. Trackers that keep files locally write them under OUT/tracking
(TensorBoard event files, wandb's offline runs). MLflow logs wherever MLflow is configured to
(`MLFLOW_TRACKING_URI`: a server, `sqlite:///path/mlflow.db`, ...), so every training of a study lands in one store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from .errors import RetinaugError

TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")
Tracker = Literal[("none", *TRACKERS)]
TRACKER_HELP = (
    "Log curves through accelerate's tracker: none, or one of " + ", ".join(TRACKERS) + " (its package installed; "
    "tensorboard and wandb write under OUT/tracking, mlflow to MLFLOW_TRACKING_URI)."
)
PIP_NAMES = {"comet_ml": "comet-ml", "tensorboard": "tensorboard (or pip install 'retinaug[tracking]')"}


def tracker_args(tracker: Tracker, out: Path | None) -> dict[str, Any]:
    """`Accelerator(**tracker_args(...))` keyword arguments; a clear error when accelerate lacks the tracker or its
    package is absent (accelerate itself would only log that at debug level and track nothing)."""
    if tracker == "none" or out is None:
        return {}
    import accelerate
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    if tracker not in {t.value for t in LoggerType}:
        raise RetinaugError(
            f"accelerate {accelerate.__version__} has no {tracker!r} tracker; upgrade it (pip install -U accelerate)"
        )
    if LoggerType(tracker) not in get_available_trackers():
        raise RetinaugError(
            f"tracker {tracker!r} needs the {tracker} package: pip install {PIP_NAMES.get(tracker, tracker)}"
        )
    return {"log_with": tracker, "project_dir": str(Path(out) / "tracking")}


def start_tracking(accelerator, tracker: Tracker, project: str, config: Any, out: Path | None) -> None:
    """Start the tracker of an Accelerator made with `tracker_args` (a no-op without one), logging `config` as its
    hyperparameters; a tracker that cannot start (no server, an unusable store) is a RetinaugError naming it."""
    if tracker == "none" or out is None:
        return
    init_kwargs = {"wandb": {"dir": str(Path(out) / "tracking")}} if tracker == "wandb" else {}
    if tracker == "wandb":
        (Path(out) / "tracking").mkdir(parents=True, exist_ok=True)
    try:
        accelerator.init_trackers(project, config=hparams(config), init_kwargs=init_kwargs)
    except Exception as exc:  # each tracker library raises its own errors for a bad URI, login or store
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetinaugError(
            f"tracker {tracker!r} could not start ({type(exc).__name__}: {reason[:300]}); "
            "check its configuration (for mlflow: MLFLOW_TRACKING_URI) or set tracker: none"
        ) from None


def hparams(config: Any) -> dict[str, Any]:
    """A config as the flat scalar dict trackers accept as hyperparameters (lists and paths become strings)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.model_dump().items()}
