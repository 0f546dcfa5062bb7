"""A test hook, not a user setting: make this process signal itself at a named point, so that a kill-and-resume
or Ctrl-C test stops the process exactly where it means to on a machine of any speed (a sleep or a polling loop
stops it wherever it happens to be by then).

`RETINAUG_FAULT=ACTION@POINT:N` acts right after the Nth time this process passes POINT. ACTION is `kill`
(SIGKILL: dies at once, as `kill -9` or the OOM killer), `int` (SIGINT, as Ctrl-C sends; the CLI handles it,
other code only where SIGINT is not ignored), `term` (SIGTERM, as `kill`, schedulers and `docker stop` send) or `freeze` (SIGSTOP: a hung worker, alive and never finishing until
something kills it). POINT is one of
  fit     an experiment fit's metrics.json is written (either executor)
  epoch   a classifier epoch ends (labeler, experiments)
  step    a generator optimiser step ends, after its checkpoint when one is due (finetune)
  image   a synthetic PNG is written (generate)
e.g. `RETINAUG_FAULT=kill@fit:1 retinaug experiment ...` dies with -9 right after its first fit. Each process
counts its own passes (child processes and Ray workers inherit the variable). It is read once; unset, `reached`
only returns.
"""

from __future__ import annotations

import functools
import os
import re
import signal

from .errors import RetinaugError

ENV = "RETINAUG_FAULT"
ACTIONS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM, "freeze": signal.SIGSTOP}
POINTS = ("fit", "epoch", "step", "image")
_passes: dict[str, int] = {}


@functools.cache
def _plan() -> tuple[signal.Signals, str, int] | None:
    """(signal, point, N) from RETINAUG_FAULT, None when unset; a malformed value is an error, never no fault."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    found = re.fullmatch(r"(\w+)@(\w+):([1-9]\d*)", spec)
    if not found or found[1] not in ACTIONS or found[2] not in POINTS:
        raise RetinaugError(
            f"{ENV}={spec!r}: expected ACTION@POINT:N with ACTION one of {', '.join(ACTIONS)}, POINT one of "
            f"{', '.join(POINTS)} and N >= 1, e.g. kill@fit:1"
        )
    return ACTIONS[found[1]], found[2], int(found[3])


def reached(point: str) -> None:
    """Count one pass through `point`; send the planned signal to this process on the planned point's Nth pass."""
    plan = _plan()
    if plan is None or plan[1] != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] == plan[2]:
        os.kill(os.getpid(), plan[0])
