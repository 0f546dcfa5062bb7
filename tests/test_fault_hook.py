"""The fault-injection test hook (retinaug.faults): with RETINAUG_FAULT=ACTION@POINT:N a process signals itself right
after its Nth pass through POINT, not one pass earlier or later, so kill and Ctrl-C tests stop exactly where they
mean to on a machine of any speed; a malformed value is an error, never a run without the fault."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import kill9_at, make_dataset
from pipeline_helpers import cli_env

# six passes through point 'image', file i written before pass i + 1: the files left say how many passes it made.
# SIGINT gets Python's handler, as the CLI gives it its own: a process started in the background by a shell
# without job control inherits SIGINT ignored.
PASSES = """
import signal
import sys
from pathlib import Path
from retinaug import faults
signal.signal(signal.SIGINT, signal.default_int_handler)
for i in range(6):
    Path(sys.argv[1], str(i)).touch()
    faults.reached("image")
"""


def _passes(folder: Path, fault: str) -> tuple[subprocess.CompletedProcess, int]:
    folder.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", PASSES, str(folder)],
        env={**cli_env(), "RETINAUG_FAULT": fault},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return res, len(list(folder.iterdir()))


@pytest.mark.parametrize(
    ("fault", "returncode", "passes"),
    [
        ("kill@image:1", -signal.SIGKILL, 1),
        ("kill@image:4", -signal.SIGKILL, 4),
        ("int@image:2", -signal.SIGINT, 2),  # Python's own SIGINT handler: KeyboardInterrupt, then exit by SIGINT
        ("kill@image:7", 0, 6),  # never the 7th pass
        ("kill@fit:1", 0, 6),  # another point
    ],
)
def test_the_signal_comes_right_after_the_nth_pass(tmp_path, fault, returncode, passes):
    res, made = _passes(tmp_path / "out", fault)
    assert (res.returncode, made) == (returncode, passes), res.stderr[-2000:]


@pytest.mark.parametrize("fault", ["kill@images:1", "stop@image:1", "kill@image:0", "kill@image", "kill image 1"])
def test_a_malformed_fault_is_an_error_at_the_first_pass(tmp_path, fault):
    res, made = _passes(tmp_path / "out", fault)
    assert res.returncode == 1 and made == 1
    assert (
        f"RETINAUG_FAULT={fault!r}: expected ACTION@POINT:N with ACTION one of kill, int, term, freeze, POINT one of fit, epoch, step, "
        "image and N >= 1"
    ) in res.stderr


def test_experiment_killed_after_its_1st_fit_has_finished_exactly_1(tmp_path):
    """`retinaug experiment` on a 2-seed grid with kill@fit:1: -9, seed 0 finished, seed 1 never begun."""
    run = tmp_path / "run"
    make_dataset(run / "data", classes=("G", "C", "A"), patients_per_class=4, size=16)
    (tmp_path / "cfg.yaml").write_text(
        yaml.safe_dump(
            {
                "experiments": {
                    "sets": [],
                    "seeds": 2,
                    "n_boot": 10,
                    "scenarios": [{"name": "real", "task": "G,C,A"}],
                    "train": {"backbone": "resnet10t", "size": 16, "epochs": 1, "batch_size": 8, "augment": False},
                }
            }
        )
    )
    kill9_at(["experiment", "--config", str(tmp_path / "cfg.yaml"), "--run", str(run)], "kill@fit:1", env=cli_env())
    fits = run / "experiments" / "real"
    assert [p.parent.name for p in fits.glob("seed*/metrics.json")] == ["seed0"]
    assert not (fits / "seed1").exists() and not (run / "experiments" / "summary.csv").exists()
