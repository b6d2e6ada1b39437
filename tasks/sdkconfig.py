"""Edit one top-level string value of a JSON config file (`sdk.config`) in place, byte for byte.

`json.dumps` of the parsed file would reformat everything; `sed` would hit a nested key of the same
name. Instead: decode (BOM / declared encoding), validate as JSON, locate the top-level key with a
scan that steps over nested objects, arrays and strings, and replace only the value's bytes.
Everything else (key order, indentation, CRLF, BOM, comments, other values) stays byte-identical.

Comments: the guide's own snippet has a `//` comment after the value, and hand-edited files may
keep it. Decision: `//` line and `/* */` block comments are tolerated wherever JSON allows
whitespace (outside strings), kept verbatim, and the file is validated as strict JSON with them
blanked out (same offsets, so parse errors point at the real line and column). Anything else that
is not strict JSON (trailing commas, NaN, single quotes) is refused with the path and the error.

Duplicates: a top-level key that appears twice is ambiguous (readers disagree on which one wins):
editing it is refused. Duplicates of other keys, or nested keys of the same name, are left alone.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

WHITESPACE = " \t\r\n"

# Byte-order marks, longest first (the UTF-32-LE mark starts with the UTF-16-LE one).
_BOMS: list[tuple[bytes, str]] = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


class SdkConfigError(ValueError):
    """A config file that cannot be edited safely; the message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (SdkConfigError, (self.path, self.reason))


@dataclass(frozen=True)
class Encoding:
    codec: str  # without BOM handling: "utf-8", "utf-16-le", "gbk", ...
    bom: bytes = b""


@dataclass(frozen=True)
class Member:
    """A top-level `"key": value` pair, as character offsets into the decoded text."""

    key: str
    value_start: int
    value_end: int


@dataclass(frozen=True)
class ConfigEdit:
    data: bytes  # the whole new file (the original bytes when nothing changed)
    before: str
    after: str
    changed: bool


def detect_encoding(data: bytes, declared: str | None = None) -> Encoding:
    """A BOM wins; else the declared encoding; else UTF-16/32 by RFC 4627's zero-byte pattern; else UTF-8."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return Encoding(codec, bom)
    if declared:
        codec = codecs.lookup(declared).name
        # Without a BOM these would add one when encoding: use their BOM-less forms.
        return Encoding({"utf-8-sig": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}.get(codec, codec))
    head = data[:4]
    if len(head) == 4:
        zeros = tuple(byte == 0 for byte in head)
        by_pattern = {
            (True, True, True, False): "utf-32-be",
            (False, True, True, True): "utf-32-le",
            (True, False, True, False): "utf-16-be",
            (False, True, False, True): "utf-16-le",
        }
        if zeros in by_pattern:
            return Encoding(by_pattern[zeros])
    return Encoding("utf-8")


def decode(data: bytes, path: str, declared: str | None = None) -> tuple[str, Encoding]:
    encoding = detect_encoding(data, declared)
    try:
        text = data[len(encoding.bom) :].decode(encoding.codec)
    except UnicodeDecodeError as exc:
        raise SdkConfigError(
            path, f"not {encoding.codec} text ({exc.reason} at byte {exc.start}); declare the file's encoding"
        ) from None
    except LookupError:
        raise SdkConfigError(path, f"unknown encoding {encoding.codec!r}") from None
    return text, encoding


def _string_end(text: str, start: int) -> int:
    """Index just past the JSON string starting at `start` (an opening quote)."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
        elif char == '"':
            return i + 1
        else:
            i += 1
    raise ValueError("unterminated string")


def blank_comments(text: str, path: str = "<config>") -> str:
    """`text` with `//` and `/* */` comments (outside strings) replaced by spaces; newlines and offsets kept."""
    out = list(text)
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            try:
                i = _string_end(text, i)
            except ValueError:
                return text  # let the JSON parser report it with its position
            continue
        if text.startswith("//", i):
            end = len(text)
            for stop in ("\n", "\r"):
                found = text.find(stop, i)
                if found != -1:
                    end = min(end, found)
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close == -1:
                line = text.count("\n", 0, i) + 1
                raise SdkConfigError(path, f"not valid JSON: unterminated /* comment starting on line {line}")
            end = close + 2
        else:
            i += 1
            continue
        for j in range(i, end):
            if out[j] not in "\r\n":
                out[j] = " "
        i = end
    return "".join(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validate(text: str, path: str) -> tuple[str, dict[str, Any]]:
    """Return (text with comments blanked, parsed object); refuse anything but one JSON object."""
    plain = blank_comments(text, path)
    try:
        parsed = json.loads(plain, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SdkConfigError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise SdkConfigError(path, f"not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise SdkConfigError(path, f"the top level is a JSON {type(parsed).__name__}, not an object")
    return plain, parsed


def _skip_whitespace(text: str, i: int) -> int:
    while i < len(text) and text[i] in WHITESPACE:
        i += 1
    return i


def _value_end(text: str, i: int) -> int:
    char = text[i]
    if char == '"':
        return _string_end(text, i)
    if char in "{[":
        depth = 0
        while True:
            char = text[i]
            if char == '"':
                i = _string_end(text, i)
                continue
            if char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(text) and text[i] not in ",}]" + WHITESPACE:  # number, true, false, null
        i += 1
    return i


def top_level_members(plain: str) -> list[Member]:
    """The top-level members of `plain`, valid JSON (comments blanked) whose top level is an object."""
    members: list[Member] = []
    i = _skip_whitespace(plain, 0)
    assert plain[i] == "{"
    i = _skip_whitespace(plain, i + 1)
    while plain[i] != "}":
        key_end = _string_end(plain, i)
        key = json.loads(plain[i:key_end])
        i = _skip_whitespace(plain, key_end)
        assert plain[i] == ":"
        value_start = _skip_whitespace(plain, i + 1)
        value_end = _value_end(plain, value_start)
        members.append(Member(key, value_start, value_end))
        i = _skip_whitespace(plain, value_end)
        if plain[i] == ",":
            i = _skip_whitespace(plain, i + 1)
    return members


def _find(plain: str, key: str, path: str) -> Member:
    found = [member for member in top_level_members(plain) if member.key == key]
    if not found:
        raise SdkConfigError(path, f"no top-level key {key!r}")
    if len(found) > 1:
        raise SdkConfigError(path, f"top-level key {key!r} appears {len(found)} times: ambiguous, not editing")
    return found[0]


def parse(data: bytes, path: str, encoding: str | None = None) -> dict[str, Any]:
    """The file as a dict, after the same checks an edit makes (encoding, JSON, top-level object)."""
    text, _ = decode(data, path, encoding)
    return validate(text, path)[1]


def get_string(data: bytes, key: str, path: str, encoding: str | None = None) -> str:
    """The value of top-level string `key`; refuses a missing, duplicated or non-string key."""
    text, _ = decode(data, path, encoding)
    plain, _ = validate(text, path)
    member = _find(plain, key, path)
    value = json.loads(plain[member.value_start : member.value_end])
    if not isinstance(value, str):
        raise SdkConfigError(path, f"top-level {key!r} is a JSON {type(value).__name__}, not a string")
    return value


def _literal(value: str, codec: str) -> str:
    literal = json.dumps(value, ensure_ascii=False)
    try:
        literal.encode(codec)
    except UnicodeEncodeError:
        literal = json.dumps(value)  # \u escapes for what the file's encoding cannot hold
    return literal


def set_string(data: bytes, key: str, value: str, path: str, encoding: str | None = None) -> ConfigEdit:
    """Set top-level string `key` to `value`, changing only that value's bytes.

    Returns the new file bytes, the value before and after, and whether anything changed (an equal
    value, however it was escaped, is left untouched). Raises `SdkConfigError` naming `path`.
    """
    text, enc = decode(data, path, encoding)
    if enc.bom + text.encode(enc.codec) != data:
        raise SdkConfigError(path, f"{enc.codec} does not round-trip this file byte for byte; not editing")
    plain, parsed = validate(text, path)
    member = _find(plain, key, path)
    before = parsed_value = json.loads(plain[member.value_start : member.value_end])
    if not isinstance(parsed_value, str):
        raise SdkConfigError(path, f"top-level {key!r} is a JSON {type(parsed_value).__name__}, not a string")
    if before == value:
        return ConfigEdit(data, before, value, changed=False)

    start = len(enc.bom) + len(text[: member.value_start].encode(enc.codec))
    end = len(enc.bom) + len(text[: member.value_end].encode(enc.codec))
    new_data = data[:start] + _literal(value, enc.codec).encode(enc.codec) + data[end:]

    # Self-check: the new file parses to the old one with exactly this value changed, keys in order.
    new_text, _ = decode(new_data, path, encoding)
    _, reparsed = validate(new_text, path)
    if list(reparsed.items()) != list({**parsed, key: value}.items()):
        raise SdkConfigError(path, f"editing {key!r} in place would change more than its value; not editing")
    return ConfigEdit(new_data, before, value, changed=True)
