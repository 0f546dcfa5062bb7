"""`executor: ray`: every fit is one Ray task, on an embedded Ray instance (this machine) or on a Ray cluster.

Ray schedules the tasks on the CPUs and GPUs each one asks for, retries a task that raised or whose worker died
(`max_retries`) and cancels them on Ctrl-C or SIGTERM; this module submits, waits and reports. A task runs the same
`run_fit` as the local executor and writes into the run folder, which every Ray node must therefore see at the
same path (a shared file system). The driver holds the run lock; besides a failed fit's error.txt it writes
nothing while the tasks run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import traceback
from collections.abc import Iterator

from ..errors import RetinaugError
from ..hardware import configure_threads, usable_cores
from ..io import write_text_atomic
from ..progress import progress_bar
from .fit import FIT_LOG, Fit, run_fit
from .scenarios import ExperimentConfig

log = logging.getLogger("retinaug.experiments")
REFRESH_S = 1.0  # how often the bar's running / failed counts are refreshed while no fit finishes


def fit_task(fit: Fit, threads: int) -> None:
    """The body of a fit's Ray task: `run_fit` with `threads` torch threads and no progress bars (the fit's log
    lines go to its fit.log, with the traceback of an attempt that raised)."""
    os.environ["RETINAUG_QUIET"] = "1"
    configure_threads(threads)
    try:
        run_fit(fit)
    except BaseException:
        with open(fit.folder / FIT_LOG, "a", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        raise


def import_ray():
    try:
        import ray
    except ImportError:
        raise RetinaugError(
            'experiments.executor is ray, but Ray is not installed: pip install "retinaug[ray]" '
            "(or set experiments.executor: local)"
        ) from None
    return ray


@contextlib.contextmanager
def connected(cfg: ExperimentConfig) -> Iterator:
    """Ray for this run: the instance this process already initialised (kept running), else the cluster at
    `ray.address` / $RAY_ADDRESS, else an embedded instance of `workers` x `ray.num_cpus` CPUs; the last two
    are disconnected (the embedded one stopped) when the block ends, also on Ctrl-C or an error."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        if cfg.workers:
            log.warning(
                "experiments.workers %d is not used on the Ray cluster at %s (its resources decide)",
                cfg.workers,
                address,
            )
        _init(ray, address=address, log_to_driver=False)
    else:
        workers = cfg.workers or max(1, int(usable_cores() // cfg.ray.num_cpus))
        _init(
            ray,
            address="local",
            num_cpus=math.ceil(workers * cfg.ray.num_cpus),
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def _init(ray, **options) -> None:
    """`ray.init`, keeping this process's SIGTERM handler: Ray's own makes SIGTERM a silent exit, the CLI's says what
    stopped and how to resume."""
    handler = signal.getsignal(signal.SIGTERM)
    ray.init(**options)
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run_on_ray(fits: list[Fit], cfg: ExperimentConfig) -> None:
    """Run every fit as a Ray task; raise a RetinaugError naming those that still failed after their retries,
    once all the others have finished (each failed one's error is in its folder's error.txt)."""
    rc = cfg.ray
    failed: dict[str, str] = {}
    with connected(cfg) as ray:
        task = ray.remote(fit_task).options(
            num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, max_retries=rc.max_retries, retry_exceptions=True
        )
        pending = {task.remote(f, max(1, int(rc.num_cpus))): f for f in fits}
        log.info(
            "%d fit(s) submitted to Ray: %g CPU and %g GPU each, up to %d retries",
            len(fits),
            rc.num_cpus,
            rc.num_gpus,
            rc.max_retries,
        )
        with progress_bar("fits on Ray", len(fits), "fit") as advance:
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=REFRESH_S, fetch_local=False)
                    for ref in ready:
                        fit = pending.pop(ref)
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayError as exc:
                            failed[fit.name] = _report_failure(fit, exc, rc.max_retries + 1)
                    running = sum((f.folder / FIT_LOG).is_file() for f in pending.values())  # started, not done
                    done = len(fits) - len(pending) - len(failed)
                    advance(len(ready), status=f"{done} done, {running} running, {len(failed)} failed")
            except BaseException as exc:  # Ctrl-C (or a driver error): stop what is still queued or running
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise _interrupt_of(exc) from None
    if failed:
        lines = "\n  - ".join(f"{name}: {error}" for name, error in failed.items())
        raise RetinaugError(
            f"{len(failed)} of {len(fits)} fits failed after {rc.max_retries + 1} attempt(s) each; the other fits finished. "
            f"Errors (each failed fit's folder has error.txt and fit.log):\n  - {lines}\n"
            "Fix the cause and run the same command again: finished fits are kept and only the failed ones run."
        )


def _interrupt_of(exc: BaseException) -> BaseException:
    """The Ctrl-C itself when Ray's compiled `wait` ran the SIGINT handler and wrapped what it raised (the CLI's
    Interrupted, a KeyboardInterrupt) in a SystemError; else `exc`."""
    cause = exc.__cause__
    return (
        cause
        if isinstance(exc, SystemError) and isinstance(cause, BaseException) and not isinstance(cause, Exception)
        else exc
    )


def _report_failure(fit: Fit, exc: Exception, attempts: int) -> str:
    """Write the fit's error.txt (Ray's error, with the remote traceback) and log it; returns its one-line summary."""
    cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps what the task raised; a dead worker has no cause
    lines = str(cause).strip().splitlines()
    summary = f"{type(cause).__name__}: {lines[0] if lines else ''}"
    write_text_atomic(fit.folder / "error.txt", f"{fit.name} failed after {attempts} attempt(s): {summary}\n\n{exc}\n")
    log.error("%s failed after %d attempt(s): %s (see %s)", fit.name, attempts, summary, fit.folder / "error.txt")
    return summary
