"""One way for every verb to build its config: `--config FILE` (a YAML of the config's fields), then the verb's named
options (each is a field of the config, declared here from the field: its type, description and default), then
`--set key=value` (dotted keys for nested fields, values parsed as YAML) — validated by the config model with
`config.load_model`, the loader `retinaug run` uses. `--help` lists every field with its description.

A verb declares `config: SomeConfig` last and is decorated with `settings(SomeConfig, options=(...))`; the
decorator replaces that parameter with the generated options, so nothing is declared twice."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape  # help texts are rich markup: `[default: 3]` must be shown, not read

CONFIG_HELP = "YAML file of this verb's settings (the fields listed below); the options and --set override it."
SET_HELP = (
    "Override one setting, KEY=VALUE (repeatable; dotted keys for nested ones; applied last), e.g. --set {example}."
)
PLAIN = (bool, int, float, str, Path)  # field types a typed CLI option carries as they are


def _plain_type(annotation: Any) -> type | None:
    """The field's type when it is one of PLAIN (or PLAIN | None), else None (the option is then text for the validator)."""
    if annotation in PLAIN:
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and args[0] in PLAIN:
            return args[0]
    return None


def _choices(annotation: Any) -> list[str]:
    """The values a Literal field (or Literal | None) takes, for the help text."""
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [c for a in typing.get_args(annotation) for c in _choices(a)]
    return []


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "[]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _described(name: str, field: FieldInfo, defaults: dict) -> str:
    """A field's description, its choices where it does not name them, and its default (the verb's where it has one)."""
    choices = _choices(field.annotation)
    said = (field.description or name).rstrip()
    if choices and not all(c in said for c in choices):
        said += f" One of: {', '.join(choices)}."
    default = defaults[name] if name in defaults else field.get_default(call_default_factory=True)
    return f"{said} [default: {_shown(default)}]"


def option_parameter(name: str, field: FieldInfo, defaults: dict, flag: str | None = None) -> inspect.Parameter:
    """The CLI option of one config field: typed for plain types (a bool is --name/--no-name), else the text given to
    the config's validator (which reads 'G,C,A' or '0.3,0.7' as the field's type); None when not given, so the
    file's value or the config's default stands."""
    flag = flag or "--" + name.replace("_", "-")
    kind = _plain_type(field.annotation)
    decls = (f"{flag}/--no-{flag.removeprefix('--')}",) if kind is bool else (flag,)
    metavar = None if kind is not None else ("|".join(_choices(field.annotation)) or "TEXT")
    info = typer.Option(*decls, help=escape(_described(name, field, defaults)), metavar=metavar, show_default=False)
    annotation = Annotated[typing.Optional[kind or str], info]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def field_lines(
    model: type[BaseModel], skip: Iterable[str] = (), defaults: dict | None = None, prefix: str = ""
) -> list[str]:
    """`key: description [default: value]` for every field but `skip`, nested sections as dotted keys."""
    lines, defaults = [], defaults or {}
    for name, field in model.model_fields.items():
        inner = field.annotation if isinstance(field.annotation, type) else None
        if name in skip:
            continue
        if inner is not None and issubclass(inner, BaseModel):
            lines += field_lines(inner, prefix=f"{prefix}{name}.")
        else:
            lines.append(f"{prefix}{name}: {_described(name, field, defaults)}")
    return lines


def help_listing(title: str, lines: list[str]) -> str:
    """A help section of settings, one paragraph each (rich markup escaped); nothing when there are none."""
    if not lines:
        return ""
    return f"\n\n{title} (--set KEY=VALUE, or in --config FILE):\n\n" + "\n\n".join(map(escape, lines))


def settings(
    model: type[BaseModel],
    options: Iterable[str] = (),
    flags: dict[str, str] | None = None,
    defaults: dict | None = None,
    read: Callable[[dict], dict] | None = None,
    example: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a verb whose last parameter is `config: model`: it gets --config, the fields `options` as named
    options (`flags` renames one: {"mapping": "--map"}), --set, and its help lists every field. `defaults` are this
    verb's defaults where they differ from the model's (used unless the file, an option or --set says otherwise);
    `read` maps a config file's content before it is merged (e.g. a section taken out of a larger YAML)."""
    options, flags, defaults = tuple(options), flags or {}, defaults or {}
    unknown = [o for o in (*options, *flags, *defaults) if o not in model.model_fields]
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {unknown}")

    def decorate(verb: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(verb, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != "config"]
        names = {p.name for p in kept}
        clash = [o for o in options if o in names or o in ("config_file", "set_")]
        if clash:
            raise ValueError(f"{verb.__name__}: option(s) {clash} are both parameters and config fields")
        added = [
            inspect.Parameter(
                "config_file",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP, dir_okay=False)],
            ),
            *(option_parameter(o, model.model_fields[o], defaults, flags.get(o)) for o in options),
            inspect.Parameter(
                "set_",
                inspect.Parameter.KEYWORD_ONLY,
                default=[],
                annotation=Annotated[
                    list[str], typer.Option("--set", help=escape(SET_HELP.format(example=example or "seed=1")))
                ],
            ),
        ]

        @functools.wraps(verb)
        def wrapper(**kwargs: Any) -> Any:
            from ..config import load_model

            file, sets = kwargs.pop("config_file"), kwargs.pop("set_")
            given = {o: v for o in options if (v := kwargs.pop(o)) is not None}
            config = load_model(model, file, given, sets, defaults=defaults, read=read)
            return verb(**kwargs, config=config)

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*kept, *added], return_annotation=signature.return_annotation
        )
        wrapper.__annotations__ = {}  # typer reads the signature above
        title = "Other settings" if options else "Settings"
        wrapper.__doc__ = inspect.cleandoc(verb.__doc__ or "") + help_listing(
            title, field_lines(model, options, defaults)
        )
        return wrapper

    return decorate
