"""Progress lines: logged (for the run's log files) while bars draw on the console; on the console only where no
bar can be drawn (stderr not a terminal)."""

from __future__ import annotations

import logging

from retinaug.logs import setup_console_logging
from retinaug.progress import track


def _lines(caplog, prefix: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if getattr(r, "progress", False) and r.getMessage().startswith(prefix)
    ]


def test_progress_lines_are_logged(monkeypatch, caplog):
    monkeypatch.setenv("RETINAUG_PROGRESS_EVERY", "0")
    caplog.set_level(logging.INFO, logger="retinaug")
    assert list(track(range(4), "training", unit="step")) == [0, 1, 2, 3]
    lines = _lines(caplog, "training: ")
    assert [ln.split(",")[0] for ln in lines] == [
        "training: 1/4 (25%)",
        "training: 2/4 (50%)",
        "training: 3/4 (75%)",
        "training: 4/4 (100%)",
    ]
    assert " step/s, " in lines[0] and "min elapsed" in lines[-1]
    assert "min left" in lines[0] and "min left" not in lines[-1]  # an estimate while work remains


def test_default_interval_logs_only_the_closing_line(monkeypatch, caplog):
    monkeypatch.delenv("RETINAUG_PROGRESS_EVERY", raising=False)
    caplog.set_level(logging.INFO, logger="retinaug")
    list(track(range(50), "fast loop"))
    assert [ln.split(",")[0] for ln in _lines(caplog, "fast loop: ")] == [
        "fast loop: 50/50 (100%)"
    ]  # no periodic line in 60 s


def test_console_shows_progress_lines_only_where_no_bar_is_drawn(monkeypatch, capsys):
    setup_console_logging()
    monkeypatch.setenv("RETINAUG_PROGRESS_EVERY", "0")
    monkeypatch.delenv("RETINAUG_QUIET", raising=False)
    list(track(range(2), "plain"))
    assert "plain: 2/2 (100%)" in capsys.readouterr().err  # captured stderr is not a terminal
    monkeypatch.setenv("RETINAUG_QUIET", "1")
    list(track(range(2), "hidden"))
    assert capsys.readouterr().err == ""
