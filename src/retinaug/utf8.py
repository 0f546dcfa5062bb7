"""Decoding a user's file as UTF-8 with an error that says where: shared by the CSV reader (io.py) and the YAML
reader (strict_yaml.py), which io.py calls, so it lives apart from both."""

from __future__ import annotations

from .errors import RetinaugError


def utf8_text(data: bytes, where: str, encoding: str = "utf-8") -> str:
    """`data` decoded, or a RetinaugError naming `where`, the line and the byte that is not UTF-8."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RetinaugError(
            f"{where} line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; re-save the file as UTF-8 "
            "(e.g. `iconv -f latin1 -t utf-8 IN > OUT`)"
        ) from None
