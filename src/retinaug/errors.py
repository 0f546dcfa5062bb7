"""One exception type for user mistakes. It is a click exception, so the CLI prints its message (no
traceback) and exits non-zero; from Python it is an ordinary exception whose message says how to fix it.

`validated` turns a pydantic ValidationError into that message, the same way for every config and option."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

try:  # newer typer (0.29 here) vendors click; its CLI catches only its own ClickException
    from typer._click.exceptions import ClickException
except ImportError:  # older typer uses the click package
    from click import ClickException

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")


class RetinaugError(ClickException):
    """A problem the user can fix (bad input, missing file, wrong option); the message says how."""

    def __str__(self) -> str:
        return self.message


class ManifestError(RetinaugError):
    """A manifest table is malformed: missing columns, unknown classes, duplicate or escaping paths."""


class LeakageError(RetinaugError):
    """A training set would share images or patients with the val/test sets (a bug or a hand-edited manifest)."""


def validation_message(exc: ValidationError, origin: str, options: bool = False) -> str:
    """One line per problem, named by its key path (`experiments.train.epocs`) or, for CLI options, `--per-class`."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = f"--{loc[0].replace('_', '-')}" if options and loc else ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key (check the spelling; `retinaug init-config` writes every valid key)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
            lines.append(f"{where}: {msg}{got}")
    return f"invalid {origin}:\n  - " + "\n  - ".join(lines)


def validated(model: type[M], data: Any, origin: str, options: bool = False) -> M:
    """`model.model_validate(data)`, with a RetinaugError naming every bad key instead of a pydantic traceback."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RetinaugError(validation_message(exc, origin, options)) from None
