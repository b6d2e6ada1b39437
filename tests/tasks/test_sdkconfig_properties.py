"""Properties of the sdk.config edit (tasks/sdkconfig.py) over generated documents: only the target value changes.

The documents are generated as TEXT, the way operators' files are: any layout (spaces, tabs, LF or CRLF), a BOM
or none, UTF-8/16/32 or a declared legacy encoding, strings written with any mix of escapes (`\\u00e9`, surrogate
pairs, `\\/`), `//` and `/* */` comments where whitespace may be, strings that look like comments or keys, nested
`authServerUrl` keys (never touched), duplicate keys other than the target, other keys before and after it. The
oracle is the stdlib's `json.loads` of each generated piece, and where the target's literal sits in the text.

The default run is fast and deterministic (a few seconds, part of the `unit` tests). A thorough, randomised run:
`TCSCALE_HYPOTHESIS=thorough uv run pytest -q -p no:cacheprovider tests/tasks/test_sdkconfig_properties.py`
(3000 examples per property, randomised: 15 to 25 minutes on the shared 2-core machine).
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tasks.sdkconfig import Encoding, SdkConfigError, detect_encoding, get_string, parse, set_string

# Profiles of their own: registering Hypothesis's "default" would change it for every other property test too.
settings.register_profile(
    "sdkconfig-fast", max_examples=30, derandomize=True, database=None, deadline=None, print_blob=True
)
settings.register_profile(
    "sdkconfig-thorough",
    max_examples=3000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile("sdkconfig-" + os.environ.get("TCSCALE_HYPOTHESIS", "fast"))

PATH = "/etc/qcloud/sdk.config"
KEY = "authServerUrl"
SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Pieces real files hold that a scanner could mistake for structure.
TRICKY = [
    "// x",
    "/* */",
    "*/",
    "/*",
    "//",
    '"authServerUrl": "x"',
    "{",
    "}",
    "[",
    ",",
    ":",
    "\\",
    '"',
    "\r\n",
    "\ufeff",
]
TRICKY += ["é", "会话", "\U0001f600", "\u2028", "\x00", "\x7f", "http://10.0.0.2/mina_auth/"]

# (codec, BOM) as files come: every form `detect_encoding` recognises by itself, BOM-less UTF-16/32 included.
UTF_FORMS = [
    ("utf-8", b""),
    ("utf-8", codecs.BOM_UTF8),
    ("utf-16-le", codecs.BOM_UTF16_LE),
    ("utf-16-be", codecs.BOM_UTF16_BE),
    ("utf-32-le", codecs.BOM_UTF32_LE),
    ("utf-32-be", codecs.BOM_UTF32_BE),
    ("utf-16-le", b""),
    ("utf-16-be", b""),
    ("utf-32-le", b""),
    ("utf-32-be", b""),
]
# Encodings an operator declares (`encoding=`): no BOM, no zero bytes to recognise them by.
LEGACY = ["gbk", "gb18030", "iso8859-1", "cp1252", "shift_jis"]


def raw_ok(char: str, codec: str) -> bool:
    """Whether `char` can stand as itself in a file of `codec` (and reads back as itself)."""
    try:
        return char.encode(codec).decode(codec) == char
    except UnicodeError:
        return False


# ---- strategies ---------------------------------------------------------------------------------------------
# Built once: a strategy made per draw costs more than the edit under test.
CHARS = st.characters(codec="utf-8") | st.sampled_from(TRICKY)  # no surrogates
# Strings as configs hold them: any unicode; lone surrogates too, which only JSON escapes can make.
TEXTS = st.lists(CHARS | st.characters(categories=["Cs"]), max_size=8).map("".join)
PLAIN_TEXTS = st.lists(CHARS, max_size=8).map("".join)
OTHER_KEYS = TEXTS.filter(lambda key: key != KEY)
NESTED_KEYS = st.just(KEY) | TEXTS
URLS = (
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https"]),
        st.from_regex(r"[a-z0-9.\-]{1,20}|10\.\d{1,3}\.\d{1,3}\.\d{1,3}|会话\.example\.com", fullmatch=True),
        st.sampled_from(["", ":80", ":8080"]),
        st.from_regex(r"(/[A-Za-z0-9_.~%\-]{0,10}){0,3}/?", fullmatch=True),
    )
    | PLAIN_TEXTS
)  # new `authServerUrl` values: URL-shaped mostly, any valid unicode now and then (two lone surrogates in a
# row would read back from JSON as one character: the edit refuses such a value rather than write another one)
NUMBERS = st.from_regex(r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?", fullmatch=True)
LITERALS = st.sampled_from(["true", "false", "null"])
WAYS = st.integers(0, 5)  # how one character is written: an index into its ways, raw twice as likely
SMALL = st.integers(0, 3)
NEWLINES = st.sampled_from(["\n", "\r\n"])
BLANKS = st.lists(st.sampled_from([" ", "  ", "\t", "NL", "NL    "]), max_size=3)
COMMENT = st.sampled_from([None, "block", "line"])
KINDS = st.sampled_from(["string", "number", "literal", "object", "array"])
LEAVES = st.sampled_from(["string", "number", "literal"])


@dataclass(frozen=True)
class Style:
    """One document's habits: line ending, whether it has comments, which characters its encoding holds raw."""

    newline: str
    comments: bool
    codec: str


def string_literal(draw: st.DrawFn, value: str, style: Style) -> str:
    """`value` as a JSON string literal, each character written raw or escaped in one of the ways JSON allows."""
    out = ['"']
    for char in value:
        code = ord(char)
        if code > 0xFFFF:  # astral: raw, or a surrogate pair of \u escapes
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            ways = [f"\\u{high:04x}\\u{low:04x}", f"\\u{high:04X}\\u{low:04X}"]
        else:
            ways = [f"\\u{code:04x}", f"\\u{code:04X}"]
            if char in SHORT_ESCAPES:
                ways.append(SHORT_ESCAPES[char])
            if char == "/":
                ways.append("\\/")
        if code >= 0x20 and char not in '"\\' and not 0xD800 <= code <= 0xDFFF and raw_ok(char, style.codec):
            ways[:0] = [char, char]
        out.append(ways[draw(WAYS) % len(ways)])
    out.append('"')
    return "".join(out)


def whitespace(draw: st.DrawFn, style: Style) -> str:
    """What may stand between tokens: blanks, line breaks, indentation, and (in a commented file) comments."""
    out = "".join(draw(BLANKS)).replace("NL", style.newline)
    comment = draw(COMMENT) if style.comments else None
    if comment:
        note = "".join(char for char in draw(PLAIN_TEXTS) if char not in "\r\n" and raw_ok(char, style.codec))
        if comment == "block":
            out += "/*" + note.replace("*/", "* /") + "*/"
        else:
            out += "//" + note + style.newline
    return out


def json_value(draw: st.DrawFn, style: Style, depth: int = 0) -> tuple[str, Any]:
    """(text, what json.loads makes of it): any JSON value; objects may hold `authServerUrl` and duplicate keys."""
    kind = draw(KINDS if depth < 3 else LEAVES)
    if kind in ("string", "number", "literal"):
        text = (
            string_literal(draw, draw(TEXTS), style)
            if kind == "string"
            else draw(NUMBERS if kind == "number" else LITERALS)
        )
        return text, json.loads(text)
    count = draw(SMALL)
    gap = "," + whitespace(draw, style)
    if kind == "array":
        items = [json_value(draw, style, depth + 1) for _ in range(count)]
        text = "[" + whitespace(draw, style) + gap.join(text for text, _ in items) + whitespace(draw, style) + "]"
        return text, [value for _, value in items]
    keys = [draw(NESTED_KEYS) for _ in range(count)]
    keys += [keys[draw(SMALL) % len(keys)]] if keys and draw(st.booleans()) else []  # a duplicate
    members = []
    for key in keys:
        literal = string_literal(draw, key, style)
        text, value = json_value(draw, style, depth + 1)
        gaps = whitespace(draw, style) + ":" + whitespace(draw, style)
        members.append((literal + gaps + text, json.loads(literal), value))
    text = "{" + whitespace(draw, style) + gap.join(text for text, _, _ in members) + whitespace(draw, style) + "}"
    return text, {key: value for _, key, value in members}


@dataclass(frozen=True)
class Doc:
    """A generated sdk.config: its text, where the target's value literal is in it, and what it means."""

    text: str
    start: int  # offsets of the target's value literal in `text` (-1 when the document has none)
    end: int
    close: int  # offset of the top-level object's closing brace
    value: Any  # the target's value (json.loads of its literal)
    members: list[tuple[str, Any]]  # the top-level (key, value) pairs, in order, duplicates included
    style: Style

    @property
    def expected(self) -> dict[str, Any]:
        return dict(self.members)  # what json.loads makes of them: the last duplicate wins, at the first's place


@st.composite
def documents(draw: st.DrawFn, codec: str = "utf-8", target: str = "string", targets: int = 1) -> Doc:
    """A top-level object with other members around `targets` top-level `authServerUrl` members.

    `target`: "string" (the editable case) or "other" (a number, literal, object or array there).
    """
    style = Style(draw(NEWLINES), draw(st.booleans()), codec)
    others = draw(st.lists(OTHER_KEYS, max_size=4))
    others += [others[draw(SMALL) % len(others)] for _ in range(draw(SMALL) % 3)] if others else []  # duplicates
    others = draw(st.permutations(others))
    slots = sorted(draw(st.lists(st.integers(0, len(others)), min_size=targets, max_size=targets)))
    text = whitespace(draw, style) + "{" + style.newline
    start = end = -1
    value: Any = None
    members: list[tuple[str, Any]] = []
    entries = [(key, False) for key in others]
    for offset, slot in enumerate(slots):
        entries.insert(slot + offset, (KEY, True))
    for index, (key, is_target) in enumerate(entries):
        if index:
            text += "," + whitespace(draw, style)
        key_literal = string_literal(draw, key, style)  # its meaning: two lone surrogates escaped may pair up
        text += "  " + key_literal + whitespace(draw, style) + ":" + whitespace(draw, style)
        if is_target and target == "string":
            literal = string_literal(draw, draw(TEXTS), style)
            parsed = json.loads(literal)
        else:
            literal, parsed = json_value(draw, style)
            if is_target and isinstance(parsed, str):
                literal, parsed = "[" + literal + "]", [parsed]
        if is_target:
            start, end, value = len(text), len(text) + len(literal), parsed
        text += literal
        members.append((json.loads(key_literal), parsed))
    text += whitespace(draw, style) + style.newline
    close = len(text)
    text += "}" + whitespace(draw, style)
    return Doc(text, start, end, close, value, members, style)


@st.composite
def encoded(draw: st.DrawFn, **kwargs: Any) -> tuple[Doc, bytes, str, bytes, str | None]:
    """(doc, file bytes, codec, BOM, declared encoding): a document in any encoding the edit supports."""
    if draw(st.integers(0, 4)):
        codec, bom = draw(st.sampled_from(UTF_FORMS))
        # A BOM wins over whatever is declared; a BOM-less file may also declare its own encoding.
        declared = draw(st.sampled_from([None, codec, "iso8859-1"] if bom else [None, codec]))
    else:
        codec, bom = draw(st.sampled_from(LEGACY)), b""
        declared = codec
    doc = draw(documents(codec=codec, **kwargs))
    return doc, bom + doc.text.encode(codec), codec, bom, declared


# ---- properties ---------------------------------------------------------------------------------------------
def split(doc: Doc, data: bytes, codec: str, bom: bytes) -> tuple[bytes, bytes]:
    """The bytes before and after the target's value literal."""
    before = bom + doc.text[: doc.start].encode(codec)
    after = doc.text[doc.end :].encode(codec)
    assert before + doc.text[doc.start : doc.end].encode(codec) + after == data
    return before, after


@PROFILE
@given(encoded(), URLS)
def test_setting_the_target_changes_exactly_its_value_bytes(case, new):
    doc, data, codec, bom, declared = case
    edit = set_string(data, KEY, new, PATH, declared)

    assert edit.before == doc.value and edit.after == new and edit.changed == (doc.value != new)
    if not edit.changed:
        assert edit.data == data
    else:
        head, tail = split(doc, data, codec, bom)
        assert edit.data.startswith(head) and edit.data.endswith(tail)
        literal = edit.data[len(head) : len(edit.data) - len(tail)].decode(codec)
        assert literal.startswith('"') and literal.endswith('"') and json.loads(literal) == new
    # The result: the same object with the new value, keys in their order, in the same encoding.
    assert detect_encoding(edit.data, declared) == detect_encoding(data, declared)
    assert list(parse(edit.data, PATH, declared).items()) == list({**doc.expected, KEY: new}.items())
    assert get_string(edit.data, KEY, PATH, declared) == new
    if not doc.style.comments:  # strict JSON: the stdlib alone reads it
        assert json.loads(edit.data[len(bom) :].decode(codec)) == {**doc.expected, KEY: new}


@PROFILE
@given(encoded())
def test_get_reads_the_target_and_setting_it_again_is_a_no_op(case):
    doc, data, _, _, declared = case
    assert get_string(data, KEY, PATH, declared) == doc.value
    assert list(parse(data, PATH, declared).items()) == list(doc.expected.items())
    edit = set_string(data, KEY, doc.value, PATH, declared)
    assert not edit.changed and edit.data == data and edit.before == edit.after == doc.value


@PROFILE
@given(encoded(), URLS, URLS)
def test_setting_twice_is_setting_once_with_the_last_value(case, first, last):
    doc, data, codec, bom, declared = case
    twice = set_string(set_string(data, KEY, first, PATH, declared).data, KEY, last, PATH, declared)
    once = set_string(data, KEY, last, PATH, declared)
    assert twice.before == first and parse(twice.data, PATH, declared) == parse(once.data, PATH, declared)
    if last != doc.value:
        assert twice.data == once.data
    else:  # back to the old value: the file again, but for how the target's literal is escaped
        head, tail = split(doc, data, codec, bom)
        assert twice.data.startswith(head) and twice.data.endswith(tail)


@PROFILE
@given(encoded())
def test_the_encoding_is_recognised(case):
    _, data, codec, bom, declared = case
    assert detect_encoding(data, declared) == Encoding(codec, bom)


# ---- refusals: SdkConfigError naming the file, and no other exception ---------------------------------------
def refused(data: bytes, declared: str | None, reason: str = "") -> None:
    with pytest.raises(SdkConfigError) as info:
        set_string(data, KEY, "http://10.0.3.7/", PATH, declared)
    assert str(info.value).startswith(f"{PATH}: ") and reason in str(info.value)
    with pytest.raises(SdkConfigError) as info:
        get_string(data, KEY, PATH, declared)
    assert str(info.value).startswith(f"{PATH}: ") and reason in str(info.value)


@PROFILE
@given(encoded(targets=2))
def test_a_duplicated_target_is_refused(case):
    _, data, _, _, declared = case
    refused(data, declared, f"top-level key {KEY!r} appears 2 times: ambiguous")


@PROFILE
@given(encoded(targets=0))
def test_a_missing_target_is_refused(case):
    _, data, _, _, declared = case
    refused(data, declared, f"no top-level key {KEY!r}")


@PROFILE
@given(encoded(target="other"))
def test_a_target_that_is_not_a_string_is_refused(case):
    doc, data, _, _, declared = case
    refused(data, declared, f"top-level {KEY!r} is a JSON {type(doc.value).__name__}, not a string")


@PROFILE
@given(st.sampled_from(UTF_FORMS), st.booleans(), st.booleans(), st.data())
def test_a_top_level_that_is_not_an_object_is_refused(form, crlf, comments, data):
    codec, bom = form
    style = Style("\r\n" if crlf else "\n", comments, codec)
    text, value = json_value(data.draw, style)
    assume(not isinstance(value, dict))
    text = whitespace(data.draw, style) + text + whitespace(data.draw, style)
    data = bom + text.encode(codec)
    # RFC 4627's pattern needs two characters: a one-character BOM-less UTF-16 file reads as UTF-8 (and is refused).
    recognised = detect_encoding(data) == Encoding(codec, bom)
    refused(data, None, f"the top level is a JSON {type(value).__name__}, not an object" if recognised else "")


@PROFILE
@given(encoded(), st.data())
def test_a_truncated_document_is_refused(case, data):
    """Cut anywhere before its closing brace (mid-character, mid-BOM, mid-comment): refused, never a crash."""
    doc, full, codec, bom, declared = case
    closing = len(bom) + len(doc.text[: doc.close].encode(codec))
    refused(full[: data.draw(st.integers(0, closing - 1))], declared)


@PROFILE
@given(encoded(), st.data())
def test_any_damaged_document_is_refused_or_edited_correctly(case, data):
    """Characters that matter to a scanner inserted, deleted or replaced anywhere: either SdkConfigError, or an
    edit whose result holds the new value, every other member as before, and differs in one place only."""
    doc, _, codec, bom, declared = case
    text = doc.text
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        piece = data.draw(st.sampled_from(['"', "\\", "/", "*", "{", "}", "[", "]", ",", ":", "\r", "\n", " ", ""]))
        cut = data.draw(st.integers(0, 2))
        text = text[:at] + piece + text[at + cut :]
    damaged = bom + text.encode(codec)
    new = data.draw(URLS)
    try:
        edit = set_string(damaged, KEY, new, PATH, declared)
    except SdkConfigError as exc:
        assert str(exc).startswith(f"{PATH}: ")
        return
    assert list(parse(edit.data, PATH, declared).items()) == list({**parse(damaged, PATH, declared), KEY: new}.items())
    assert get_string(edit.data, KEY, PATH, declared) == new
    assert edit.changed or edit.data == damaged
