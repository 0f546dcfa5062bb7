"""Rich progress bars for every long loop (count, rate, elapsed, remaining); RETINAUG_QUIET=1 hides them.

Every bar also logs a plain progress line every RETINAUG_PROGRESS_EVERY seconds (default 60) and one when it
ends, as `logging` records marked `progress`: they land in the run's log files (a long stage is never silent
there), and on the console only where the bar cannot be drawn (stderr not a terminal: `nohup`, CI)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

console = Console(stderr=True)
log = logging.getLogger("retinaug.progress")
_doing: list[Callable[[], str]] = []  # what runs now, outermost first: named when the user interrupts (Ctrl-C)


@contextlib.contextmanager
def activity(what: str | Callable[[], str]) -> Iterator[None]:
    """Name what runs inside the block (a pipeline stage, a loop) for the Ctrl-C message of the CLI."""
    _doing.append(what if callable(what) else lambda: what)
    try:
        yield
    finally:
        _doing.pop()


def current_activity() -> str:
    """'stage synthetic, generating (ddpm) 12/40', or '' when nothing is named."""
    return ", ".join(part() for part in _doing)


def quiet() -> bool:
    return os.environ.get("RETINAUG_QUIET", "") not in ("", "0")


def _log_every() -> float:
    return float(os.environ.get("RETINAUG_PROGRESS_EVERY", "60"))


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, unit: str = "it") -> Iterator[Callable[..., None]]:
    """Yield `advance(n, status=None)`; the bar shows `unit`/s, so batch loops can advance by the batch size, and
    `status` (e.g. '3 done, 2 running, 1 failed'), shown after the rate and in the progress lines, when given."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=quiet()) as progress:
        task = progress.add_task(description, total=total, rate="", status="")
        every, last, logged = _log_every(), time.monotonic(), None

        def line() -> None:
            nonlocal logged
            t = progress.tasks[task]
            logged = t.completed
            speed = t.speed or (t.completed / t.elapsed if t.elapsed else None)
            done = (
                f"{t.completed:g}/{t.total:g} ({100 * t.completed / t.total:.0f}%)" if t.total else f"{t.completed:g}"
            )
            eta = (
                f", about {(t.total - t.completed) / speed / 60:.1f} min left"
                if t.total and speed and t.completed < t.total
                else ""
            )
            status = f", {t.fields['status']}" if t.fields["status"] else ""
            log.info(
                "%s: %s, %s%s, %.1f min elapsed%s",
                description,
                done,
                t.fields["rate"] or "?",
                status,
                (t.elapsed or 0) / 60,
                eta,
                extra={"progress": True},
            )

        def advance(n: int = 1, status: str | None = None) -> None:
            nonlocal last
            progress.update(task, advance=n, **({"status": status} if status is not None else {}))
            t = progress.tasks[task]
            # rich's speed only sees the last 30 s: for slow loops fall back to the mean rate since the start
            speed = t.speed or (t.completed / t.elapsed if t.elapsed else None)
            if speed:
                progress.update(task, rate=f"{speed:.2f} {unit}/s" if speed < 10 else f"{speed:.1f} {unit}/s")
            if time.monotonic() - last >= every:
                last = time.monotonic()
                line()

        def where() -> str:
            return f"{description} {progress.tasks[task].completed:g}" + (f"/{total:g}" if total else "")

        with activity(where):
            yield advance
        if progress.tasks[task].completed not in (0, logged):  # the closing line, unless just logged
            line()


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate over `items` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, unit) as advance:
        for item in items:
            yield item
            advance(1)
