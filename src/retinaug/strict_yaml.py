"""YAML as retinaug reads a user's file: plain PyYAML `safe_load`, minus what silently changes or explodes a config.

- A key given twice in one mapping is an error: PyYAML keeps the last and drops the first without a word
  (`experiments:` ... `experiments:` loses the whole first section).
- Aliases (`*name`) are refused: a few lines of nested aliases ("billion laughs") expand into gigabytes once
  validated or printed, and a config never needs them.
- Bytes that are not UTF-8 are an error naming the byte, not a UnicodeDecodeError traceback.

Imported only where YAML is read, so that the CLI starts without PyYAML.
"""

from __future__ import annotations

import yaml

from .errors import RetinaugError
from .utf8 import utf8_text

MERGE_TAG = "tag:yaml.org,2002:merge"


class Refused(yaml.YAMLError):
    """Valid YAML that retinaug does not accept; `mark` is where (PyYAML's 0-based line and column)."""

    def __init__(self, mark: yaml.Mark, message: str):
        super().__init__(message)
        self.mark, self.message = mark, message


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that raises `Refused` at an alias and at the second occurrence of a key in one mapping."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise Refused(
                event.start_mark,
                f"YAML aliases are not accepted (*{event.anchor}); write the value out instead (an alias can expand a "
                "few lines into gigabytes)",
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first_line.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error (below) says so
                continue
            if earlier is not None:
                raise Refused(
                    key_node.start_mark,
                    f"key {str(key)[:80]!r} appears twice (first at line {earlier}); "
                    "remove one of them (YAML would silently keep only the last)",
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_yaml(data: bytes | str, where: str) -> object:
    """The YAML document in `data` (UTF-8 bytes or text), or a RetinaugError that starts with `where` (e.g.
    'config file run.yaml') and says the line and what to change."""
    if isinstance(data, bytes):
        data = utf8_text(data, where)
    try:
        return yaml.load(data, Loader=StrictLoader)
    except Refused as exc:
        raise RetinaugError(f"{where} line {exc.mark.line + 1}: {exc.message}") from None
    except yaml.YAMLError as exc:
        raise RetinaugError(f"{where} is not valid YAML: {exc}") from None
