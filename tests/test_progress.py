"""Progress reporting when stderr is a log file, not a terminal."""

from __future__ import annotations

from retinaug.progress import track


def test_plain_progress_lines_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("RETINAUG_QUIET", raising=False)
    monkeypatch.setenv("RETINAUG_PROGRESS_EVERY", "0")
    assert list(track(range(4), "training", unit="step")) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("training: ")]
    assert [ln.split(",")[0] for ln in lines] == ["training: 1/4 (25%)", "training: 2/4 (50%)", "training: 3/4 (75%)", "training: 4/4 (100%)"]
    assert " step/s, " in lines[0] and "min elapsed" in lines[-1]
    assert "min left" in lines[0] and "min left" not in lines[-1]  # an estimate while work remains


def test_quiet_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("RETINAUG_QUIET", "1")
    monkeypatch.setenv("RETINAUG_PROGRESS_EVERY", "0")
    assert sum(track(range(3), "training")) == 3
    assert capsys.readouterr().err == ""


def test_default_interval_keeps_logs_short(monkeypatch, capsys):
    monkeypatch.delenv("RETINAUG_QUIET", raising=False)
    monkeypatch.delenv("RETINAUG_PROGRESS_EVERY", raising=False)
    list(track(range(50), "fast loop"))
    assert "fast loop: " not in capsys.readouterr().err  # finishes well within 60 s: no periodic line
