"""`retinaug` command line: importing the per-stage modules registers their commands on `app`."""

import shlex
import signal
import sys

from . import (  # noqa: F401  (register commands)
    audit,
    augment,
    classify,
    data,
    env,
    export,
    generate,
    phantom,
    pipeline,
)
from .app import app

# verbs whose finished work survives an interruption and is picked up by running them again
RESUMABLE = ("run", "demo", "experiment", "generate", "finetune")
# the signals that stop a command with a message, and how the message names them: Ctrl-C, and what `kill`,
# schedulers (Slurm, Kubernetes) and `docker stop` send
STOPS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "terminated"}


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. Not a KeyboardInterrupt, which typer turns into a silent exit 130: `main` says what stopped
    (`args[0]`: what was running when the signal came, before the unwinding forgets it; `args[1]`: the signal)."""


def _interrupt(signum, frame) -> None:
    from ..progress import current_activity

    raise Interrupted(current_activity(), signum)


def _forcing(args: list[str], k: int) -> bool:
    """Is args[k] part of a `--force STAGE` / `--force=STAGE` option?"""
    return args[k] == "--force" or args[k].startswith("--force=") or (k > 0 and args[k - 1] == "--force")


def interrupted_message(args: list[str], doing: str = "", signum: int = signal.SIGINT) -> str:
    """One line: which signal stopped what was running (`doing`), and how to pick up from there."""
    verbs = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands} | {
        g.name for g in app.registered_groups
    }
    verb = next((a for a in args if a in verbs), "")  # not a global option's value (--threads 2)
    again = [a for k, a in enumerate(args) if not _forcing(args, k)]  # a forced stage is resumed, not redone
    command = shlex.join(["retinaug", *again])
    if verb in RESUMABLE:
        then = f"finished work is kept; run the same command again to resume: {command}"
    else:
        then = f"nothing of it was kept; run the same command again to start it over: {command}"
    return f"retinaug {verb}: interrupted ({STOPS[signum]}){f' during {doing}' if doing else ''}; {then}"


def main() -> None:
    """The console script: Ctrl-C or SIGTERM prints one line and exits 128 + the signal's number (130, 143), as the
    shell reports a process the signal ended; a failed write (read-only folder, full disk, over-long file name)
    raised below the code that knows the file is a one-line error, exit 1."""
    from ..io import write_error

    previous = {signum: signal.signal(signum, _interrupt) for signum in STOPS}
    try:
        app()
    except Interrupted as stop:
        for signum in STOPS:  # a second signal must not interrupt the message
            signal.signal(signum, signal.SIG_IGN)
        print(interrupted_message(sys.argv[1:], *stop.args), file=sys.stderr, flush=True)
        sys.exit(128 + stop.args[1])
    except OSError as exc:
        err = write_error(exc.filename or "a file", exc)
        if err is exc:
            raise
        print(f"Error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["app", "main"]
