"""One channel for status lines: every module logs through `logging.getLogger("retinaug.<module>")`.

The CLI shows those records on the console (`setup_console_logging`); `retinaug run` also copies them into
`RUN/run.log` and `RUN/logs/<stage>.log` (`log_to`). Progress bars (progress.py) are the one other output:
they draw on the console only, and their progress lines (records marked `progress`) go to the log files, and
to the console only where no bar can be drawn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("retinaug")
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _not_a_drawn_bar(record: logging.LogRecord) -> bool:
    """Console filter: a progress line is shown only where the bar itself is not (a log file, CI, nohup)."""
    from .progress import console, quiet

    return not getattr(record, "progress", False) or not (console.is_terminal or quiet())


def setup_console_logging(level: int = logging.INFO) -> None:
    """Show retinaug's log records on the console (stderr, beside the progress bars); idempotent."""
    from rich.logging import RichHandler

    from .progress import console

    if not any(isinstance(h, RichHandler) for h in log.handlers):
        handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%H:%M:%S")
        handler.addFilter(_not_a_drawn_bar)
        log.addHandler(handler)
    log.setLevel(level)


@contextlib.contextmanager
def log_to(path: str | Path, level: int = logging.INFO) -> Iterator[None]:
    """Copy retinaug's log records (at `level` and above) into `path` while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(level)
    before = log.level
    if log.getEffectiveLevel() > level:  # from Python with no logging set up: the records must still be made
        log.setLevel(level)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(before)
