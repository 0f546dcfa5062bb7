"""One exception type for user mistakes. It is a click exception, so the CLI prints its message (no
traceback) and exits non-zero; from Python it is an ordinary exception whose message says how to fix it."""

import click


class RetinaugError(click.ClickException):
    """A problem the user can fix (bad input, missing file, wrong option); the message says how."""

    def __str__(self) -> str:
        return self.message


class ManifestError(RetinaugError):
    """A manifest table is malformed: missing columns, unknown classes, duplicate or escaping paths."""
