"""`retinaug` command line: importing the per-stage modules registers their commands on `app`."""

import shlex
import signal
import sys

from . import audit, augment, classify, data, env, export, generate, phantom, pipeline  # noqa: F401  (register commands)
from .app import app

# verbs whose finished work survives an interruption and is picked up by running them again
RESUMABLE = ("run", "demo", "experiment", "generate", "finetune")


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which typer turns into a silent exit 130: `main` says what stopped
    (`args[0]`: what was running when the signal came, before the unwinding forgets it)."""


def _interrupt(signum, frame) -> None:
    from ..progress import current_activity

    raise Interrupted(current_activity())


def _forcing(args: list[str], k: int) -> bool:
    """Is args[k] part of a `--force STAGE` / `--force=STAGE` option?"""
    return args[k] == "--force" or args[k].startswith("--force=") or (k > 0 and args[k - 1] == "--force")


def interrupted_message(args: list[str], doing: str = "") -> str:
    """One line: what was running (`doing`), and how to pick up from there."""
    verbs = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands} | {g.name for g in app.registered_groups}
    verb = next((a for a in args if a in verbs), "")  # not a global option's value (--threads 2)
    again = [a for k, a in enumerate(args) if not _forcing(args, k)]  # a forced stage is resumed, not redone
    command = shlex.join(["retinaug", *again])
    if verb in RESUMABLE:
        then = f"finished work is kept; run the same command again to resume: {command}"
    else:
        then = f"nothing of it was kept; run the same command again to start it over: {command}"
    return f"retinaug {verb}: interrupted (Ctrl-C){f' during {doing}' if doing else ''}; {then}"


def main() -> None:
    """The console script: Ctrl-C prints one line and exits 130; a failed write (read-only folder, full disk,
    over-long file name) raised below the code that knows the file is a one-line error, exit 1."""
    from ..io import write_error

    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        app()
    except Interrupted as stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the message
        print(interrupted_message(sys.argv[1:], *stop.args), file=sys.stderr, flush=True)
        sys.exit(130)
    except OSError as exc:
        err = write_error(exc.filename or "a file", exc)
        if err is exc:
            raise
        print(f"Error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["app", "main"]
