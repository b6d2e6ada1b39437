"""The JSON-aware in-place edit of sdk.config: examples from the guide, refusals, and generated files."""

import codecs
import json
import random
import string

import pytest

from tasks.sdkconfig import SdkConfigError, detect_encoding, get_string, parse, set_string

PATH = "/etc/qcloud/sdk.config"
NEW = "http://10.0.3.7/mina_auth/"

# The file the Node.js demo ships, as an operator would have it after the guide's edit (CRLF, BOM, comment).
GUIDE_FILE = (
    "\ufeff{\r\n"
    '    "serverHost": "www.example.com",\r\n'
    '    "authServerUrl": "http://10.0.0.2/mina_auth/", //VIP上个步骤创建负载均衡实例的VIP\r\n'
    '    "tunnelServerUrl": "https://tunnel.example.com",\r\n'
    '    "tunnelSignatureKey": "27fb7d1c161b7ca52d73cce0f1d833f9f5b5ec89",\r\n'
    '    "networkTimeout": 30000\r\n'
    "}\r\n"
).encode("utf-8")


def test_the_guides_edit_changes_only_the_value():
    edit = set_string(GUIDE_FILE, "authServerUrl", NEW, PATH)
    assert edit.changed and edit.before == "http://10.0.0.2/mina_auth/" and edit.after == NEW
    assert edit.data == GUIDE_FILE.replace(b"http://10.0.0.2/mina_auth/", NEW.encode())
    assert edit.data.startswith(codecs.BOM_UTF8) and edit.data.count(b"\r\n") == GUIDE_FILE.count(b"\r\n")
    assert "//VIP上个步骤".encode() in edit.data
    assert get_string(edit.data, "authServerUrl", PATH) == NEW


def test_an_equal_value_is_not_rewritten_however_it_is_escaped():
    data = b'{"authServerUrl": "http:\\/\\/10.0.3.7\\/mina_auth\\/"}'
    edit = set_string(data, "authServerUrl", NEW, PATH)
    assert not edit.changed and edit.data == data and edit.before == NEW


def test_nested_keys_and_strings_that_look_like_keys_are_left_alone():
    data = (
        b'{"nested": {"authServerUrl": "keep-1", "deeper": [{"authServerUrl": "keep-2"}]},\n'
        b' "text": "\\"authServerUrl\\": \\"keep-3\\" // not a comment /* nor this */",\n'
        b' "authServerUrl": "old"}'
    )
    edit = set_string(data, "authServerUrl", NEW, PATH)
    assert edit.data == data.replace(b'"old"', json.dumps(NEW).encode())
    for kept in (b"keep-1", b"keep-2", b"keep-3"):
        assert kept in edit.data


def test_block_comments_and_a_comment_before_the_key_are_kept():
    data = b'/* sdk */ {\n  // the session service\n  "authServerUrl": /* vip */ "old" /* end */\n}\n'
    edit = set_string(data, "authServerUrl", NEW, PATH)
    assert edit.data == data.replace(b'"old"', f'"{NEW}"'.encode())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"authServerUrl": "old",}', "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
        (b'{\n  "authServerUrl": "old"\n  "x": 1\n}', "not valid JSON: Expecting ',' delimiter at line 3 column 3"),
        (b'{"authServerUrl": NaN}', "not valid JSON: NaN is not JSON"),
        (b"{'authServerUrl': 'old'}", "not valid JSON"),
        (b'{"authServerUrl": "old"} /* open', "unterminated /* comment starting on line 1"),
        (b"", "not valid JSON: Expecting value at line 1 column 1"),
        (b'["authServerUrl"]', "the top level is a JSON list, not an object"),
        (b'{"serverHost": "x"}', "no top-level key 'authServerUrl'"),
        (b'{"authServerUrl": "a", "authServerUrl": "b"}', "appears 2 times: ambiguous"),
        (b'{"authServerUrl": 80}', "top-level 'authServerUrl' is a JSON int, not a string"),
        (b'{"authServerUrl": "\xff"}', "not utf-8 text (invalid start byte at byte 19)"),
    ],
)
def test_refusals_name_the_file_and_the_reason(data, reason):
    with pytest.raises(SdkConfigError) as info:
        set_string(data, "authServerUrl", NEW, PATH)
    assert str(info.value).startswith(f"{PATH}: ") and reason in str(info.value)


def test_other_duplicate_keys_do_not_block_the_edit():
    data = b'{"networkTimeout": 1, "networkTimeout": 2, "authServerUrl": "old"}'
    assert set_string(data, "authServerUrl", NEW, PATH).data == data.replace(b'"old"', f'"{NEW}"'.encode())


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_files_with_a_bom_stay_in_their_encoding(codec):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}
    text = '{\r\n  "serverHost": "商城.example.com",\r\n  "authServerUrl": "old"\r\n}'
    data = bom[codec] + text.encode(codec)
    edit = set_string(data, "authServerUrl", NEW, "C:\\qcloud\\sdk.config")
    assert edit.data == bom[codec] + text.replace('"old"', f'"{NEW}"').encode(codec)


def test_utf16_without_a_bom_is_recognised():
    data = '{"authServerUrl": "old"}'.encode("utf-16-le")
    assert detect_encoding(data).codec == "utf-16-le"
    assert set_string(data, "authServerUrl", NEW, PATH).data == f'{{"authServerUrl": "{NEW}"}}'.encode("utf-16-le")


def test_a_declared_legacy_encoding_is_kept_and_unencodable_values_are_escaped():
    data = '{"serverHost": "商城", "authServerUrl": "old"}'.encode("gbk")
    with pytest.raises(SdkConfigError, match="not utf-8 text"):
        parse(data, PATH)
    edit = set_string(data, "authServerUrl", "http://会话/", PATH, encoding="gbk")
    assert edit.data.decode("gbk") == '{"serverHost": "商城", "authServerUrl": "http://会话/"}'
    edit = set_string(data, "authServerUrl", "http://\U0001f600/", PATH, encoding="gbk")  # no emoji in GBK
    assert edit.data.decode("gbk") == '{"serverHost": "商城", "authServerUrl": "http://\\ud83d\\ude00/"}'
    assert get_string(edit.data, "authServerUrl", PATH, encoding="gbk") == "http://\U0001f600/"


# ---- generated files: random layout, nesting, escapes, comments, line endings, encodings ----------------
KEY = "authServerUrl"
ALPHABET = string.ascii_letters + string.digits + ' /:.-_"\\\t\n\u00e9\u4f1a\u8bdd\U0001f600{}[],//*'


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


def random_literal(rng: random.Random) -> str:
    return json.dumps(random_string(rng), ensure_ascii=rng.random() < 0.3)


def random_value(rng: random.Random, depth: int, ws) -> str:
    kind = rng.choice(["str", "num", "lit", "obj", "arr"] if depth < 3 else ["str", "num", "lit"])
    if kind == "str":
        return random_literal(rng)
    if kind == "num":
        return rng.choice(["0", "-1", "3.25", "1e3", "30000"])
    if kind == "lit":
        return rng.choice(["true", "false", "null"])
    if kind == "arr":
        items = [random_value(rng, depth + 1, ws) for _ in range(rng.randint(0, 3))]
        return "[" + ws() + ("," + ws()).join(items) + ws() + "]"
    keys = [KEY if rng.random() < 0.3 else random_string(rng) for _ in range(rng.randint(0, 3))]
    members = [f"{json.dumps(k)}{ws()}:{ws()}{random_value(rng, depth + 1, ws)}" for k in keys]
    return "{" + ws() + ("," + ws()).join(members) + ws() + "}"


def random_file(rng: random.Random) -> tuple[str, int, int]:
    """(text, start, end): a random sdk.config and where the target value's literal is in it."""
    newline = rng.choice(["\n", "\r\n"])
    comments = rng.random() < 0.5

    def ws() -> str:
        parts = [rng.choice(["", " ", "  ", newline + "    ", "\t"])]
        if comments and rng.random() < 0.2:
            parts.append(rng.choice(["/* c */", "// line comment" + newline]))
        return "".join(parts)

    keys = [key for key in dict.fromkeys(random_string(rng) for _ in range(rng.randint(0, 5))) if key != KEY]
    position = rng.randint(0, len(keys))
    text = "{" + newline
    start = end = -1
    for index in range(len(keys) + 1):
        if index:
            text += "," + ws()
        if index == position:
            text += f'  "{KEY}"{ws()}:{ws()}'
            start = len(text)
            text += random_literal(rng)
            end = len(text)
        else:
            text += f"  {json.dumps(keys[index - (index > position)])}:{ws()}{random_value(rng, 1, ws)}"
    text += newline + "}" + (newline if rng.random() < 0.5 else "")
    return text, start, end


@pytest.mark.parametrize("seed", range(300))
def test_generated_files_change_only_the_value(seed):
    rng = random.Random(seed)
    text, start, end = random_file(rng)
    codec, bom = rng.choice([("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE)])
    data = bom + text.encode(codec)
    new_value = random_string(rng)
    edit = set_string(data, KEY, new_value, PATH)

    old_value = json.loads(text[start:end])
    assert edit.before == old_value and edit.changed == (old_value != new_value)
    if edit.changed:
        expected = bom + (text[:start] + json.dumps(new_value, ensure_ascii=False) + text[end:]).encode(codec)
        assert edit.data == expected
    else:
        assert edit.data == data
    assert get_string(edit.data, KEY, PATH) == new_value
    before, after = parse(data, PATH), parse(edit.data, PATH)
    assert list(after) == list(before) and {**before, KEY: new_value} == after
