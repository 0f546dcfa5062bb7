"""Rich progress bars for every long loop (count, rate, elapsed, remaining); RETINAUG_QUIET=1 hides them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("RETINAUG_QUIET", "") not in ("", "0")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; the bar shows `unit`/s, so batch loops can advance by the batch size."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=quiet()) as progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            progress.update(task, advance=n)
            speed = progress.tasks[task].speed
            if speed:
                progress.update(task, rate=f"{speed:.1f} {unit}/s")

        yield advance


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate over `items` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, unit) as advance:
        for item in items:
            yield item
            advance(1)
