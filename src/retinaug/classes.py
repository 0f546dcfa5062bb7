"""ODIR class vocabulary and the named tasks (subsets of classes) every stage speaks."""

from __future__ import annotations

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


def resolve_task(task: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A named task ('5-class') or a custom subset ('G,C,A' or a list) -> ordered class codes."""
    if isinstance(task, str):
        if task in TASKS:
            return TASKS[task]
        codes = [c.strip().upper() for c in task.split(",") if c.strip()]
    else:
        codes = [str(c).strip().upper() for c in task]
    unknown = [c for c in codes if c not in CLASSES]
    if unknown or len(codes) < 2:
        raise RetinaugError(
            f"unknown task {task!r}: use one of {', '.join(TASKS)} or at least two comma-separated "
            f"class codes from {','.join(CODES)}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    if len(set(codes)) != len(codes):
        raise RetinaugError(f"task {task!r} repeats a class code")
    return tuple(codes)


def parse_classes(spec: str | None, default: tuple[str, ...] = CODES) -> tuple[str, ...]:
    """Parse a '--classes G,C,A' option (one or more codes, or a task name)."""
    if not spec:
        return default
    if spec in TASKS:
        return TASKS[spec]
    codes = tuple(c.strip().upper() for c in spec.split(",") if c.strip())
    unknown = [c for c in codes if c not in CLASSES]
    if unknown or not codes:
        raise RetinaugError(f"unknown class code(s) {', '.join(unknown) or spec!r}; valid codes: {','.join(CODES)}")
    return codes
