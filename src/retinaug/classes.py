"""ODIR class vocabulary, the named tasks (subsets of classes) every stage speaks, and the one parser of
class-code lists that every option and config field uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from .errors import RetinaugError

CLASSES: dict[str, str] = {
    "N": "normal",
    "D": "diabetes",
    "G": "glaucoma",
    "C": "cataract",
    "A": "age-related macular degeneration",
    "H": "hypertension",
    "M": "pathological myopia",
    "O": "other diseases/abnormalities",
}
CODES: tuple[str, ...] = tuple(CLASSES)

TASKS: dict[str, tuple[str, ...]] = {
    "5-class": ("G", "C", "A", "H", "M"),
    "7-class": ("D", "G", "C", "A", "H", "M", "N"),
    "8-class": ("N", "D", "G", "C", "A", "H", "M", "O"),
}


def parse_codes(spec: str | Iterable[str], at_least: int = 1) -> tuple[str, ...]:
    """A task name ('5-class'), comma-separated codes ('g, C,A') or a list of codes -> ordered upper-case codes.
    Unknown or repeated codes, or fewer than `at_least`, are an error naming the valid codes."""
    if isinstance(spec, str):
        if spec.strip() in TASKS:
            return TASKS[spec.strip()]
        codes = [c.strip().upper() for c in spec.split(",") if c.strip()]
    else:
        codes = [str(c).strip().upper() for c in spec]
    unknown = [c for c in codes if c not in CLASSES]
    valid = f"use a task ({', '.join(TASKS)}) or comma-separated class codes from {','.join(CODES)}"
    if unknown:
        raise RetinaugError(f"unknown class code(s) {', '.join(unknown)} in {spec!r}: {valid}")
    if len(codes) < at_least:
        raise RetinaugError(f"{spec!r} names {len(codes)} class(es), at least {at_least} are needed: {valid}")
    if len(set(codes)) != len(codes):
        raise RetinaugError(f"{spec!r} repeats a class code")
    return tuple(codes)


def resolve_task(task: str | Iterable[str]) -> tuple[str, ...]:
    """A named task ('5-class') or a custom subset of at least two classes ('G,C,A' or a list) -> class codes."""
    return parse_codes(task, at_least=2)


def parse_classes(spec: str | None, default: tuple[str, ...] = CODES) -> tuple[str, ...]:
    """Parse a '--classes G,C,A' option (one or more codes, or a task name); empty -> `default`."""
    return parse_codes(spec) if spec else default


def codes_field(value):
    """Config fields: None/empty stay None; anything else must parse (pydantic reports a ValueError by key path)."""
    if value is None or value == "" or value == []:
        return None
    try:
        return list(parse_codes(value))
    except RetinaugError as exc:
        raise ValueError(str(exc)) from None


# A config field holding class codes (`[G, C]`, `"G,C"` or a task name), validated where the config is loaded.
ClassCodes = Annotated[list[str], BeforeValidator(codes_field)]


def _task_field(value: str) -> str:
    try:
        resolve_task(value)
    except RetinaugError as exc:
        raise ValueError(str(exc)) from None
    return value


# A config field naming a task ('5-class' or 'G,C,A'), validated where the config is loaded.
Task = Annotated[str, AfterValidator(_task_field)]
