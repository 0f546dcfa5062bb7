"""One exception type for user mistakes. It is a click exception, so the CLI prints its message (no
traceback) and exits non-zero; from Python it is an ordinary exception whose message says how to fix it.

`validated` turns a pydantic ValidationError into that message, the same way for every config and option."""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any, TypeVar

try:  # newer typer (0.29 here) vendors click; its CLI catches only its own ClickException
    from typer._click.exceptions import ClickException
except ImportError:  # older typer uses the click package
    from click import ClickException

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")
QUOTE_LIMIT = 200  # characters of a user's input that an error message quotes
MAX_PROBLEMS = 20  # validation problems listed in one message


class RetinaugError(ClickException):
    """A problem the user can fix (bad input, missing file, wrong option); the message says how."""

    def __str__(self) -> str:
        return self.message


class ManifestError(RetinaugError):
    """A manifest table is malformed: missing columns, unknown classes, duplicate or escaping paths."""


class LeakageError(RetinaugError):
    """A training set would share images or patients with the val/test sets (a bug or a hand-edited manifest)."""


def clipped(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def quoted(value: Any) -> str:
    """A bounded repr of an input value for an error message: `reprlib` abbreviates long and nested containers
    without building their full repr (a config of nested lists can expand to gigabytes), then at most QUOTE_LIMIT
    characters are kept."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = QUOTE_LIMIT
    return clipped(short.repr(value), QUOTE_LIMIT)


def validation_message(exc: ValidationError, origin: str, options: bool = False) -> str:
    """One line per problem (the first MAX_PROBLEMS), named by its key path (`experiments.train.epocs`) or, for CLI
    options, `--per-class`; keys, messages and values are quoted only up to a bounded length."""
    lines = []
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS]:
        loc = [str(p) for p in err["loc"]]
        where = clipped(
            f"--{loc[0].replace('_', '-')}" if options and loc else ".".join(loc) or "(top level)", QUOTE_LIMIT
        )
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key (check the spelling; `retinaug init-config` writes every valid key)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = f" (got {quoted(err['input'])})" if "input" in err and not isinstance(err["input"], dict) else ""
            lines.append(f"{where}: {clipped(msg, 2 * QUOTE_LIMIT)}{got}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"... and {len(errors) - MAX_PROBLEMS} more problem(s)")
    return f"invalid {origin}:\n  - " + "\n  - ".join(lines)


def validated(model: type[M], data: Any, origin: str, options: bool = False) -> M:
    """`model.model_validate(data)`, with a RetinaugError naming every bad key instead of a pydantic traceback."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RetinaugError(validation_message(exc, origin, options)) from None
