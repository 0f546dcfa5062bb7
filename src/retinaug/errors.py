"""One exception type for user mistakes. It is a click exception, so the CLI prints its message (no
traceback) and exits non-zero; from Python it is an ordinary exception whose message says how to fix it."""

try:  # newer typer (0.29 here) vendors click; its CLI catches only its own ClickException
    from typer._click.exceptions import ClickException
except ImportError:  # older typer uses the click package
    from click import ClickException


class RetinaugError(ClickException):
    """A problem the user can fix (bad input, missing file, wrong option); the message says how."""

    def __str__(self) -> str:
        return self.message


class ManifestError(RetinaugError):
    """A manifest table is malformed: missing columns, unknown classes, duplicate or escaping paths."""
