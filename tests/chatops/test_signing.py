"""Signing: WeCom's official test vector verifies and decrypts; the generic HMAC v0 scheme; the timestamp window."""

import hashlib
import hmac

import pytest

from chatops.signing import (
    SignatureError,
    WeComCrypto,
    check_timestamp,
    sign_generic,
    verify_generic,
)

# WeCom's official sample (developer.work.weixin.qq.com/document/path/91144, WXBizMsgCrypt Sample)
TOKEN, CORP, AES_KEY = "QDG6eK", "wx5823bf96d3bd56c7", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
VERIFY = {
    "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
    "timestamp": "1409659589",
    "nonce": "263014780",
    "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==",
}
ECHO_PLAIN = "1616140317555161061"
MESSAGE = {
    "msg_signature": "477715d11cdb4164915debcba66cb864d751f3e6",
    "timestamp": "1409659813",
    "nonce": "1372623149",
}
ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYv"
    "uJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+Ltw"
    "Gc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9"
    "EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0l"
    "XdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)
REQUEST_BODY = (
    f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{ENCRYPT}]]></Encrypt>"
    "<AgentID><![CDATA[218]]></AgentID></xml>"
)


def test_the_official_wecom_url_verification_vector_verifies_and_decrypts() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
    crypto.verify(VERIFY["msg_signature"], VERIFY["timestamp"], VERIFY["nonce"], VERIFY["echostr"])
    assert crypto.decrypt(VERIFY["echostr"]) == ECHO_PLAIN


def test_the_official_wecom_message_vector_verifies_and_decrypts() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
    crypto.verify(MESSAGE["msg_signature"], MESSAGE["timestamp"], MESSAGE["nonce"], ENCRYPT)
    plain = crypto.decrypt(ENCRYPT)
    assert "<Content><![CDATA[hello]]></Content>" in plain
    assert "<FromUserName><![CDATA[mycreate]]></FromUserName>" in plain
    assert "<MsgId>4561255354251345929</MsgId>" in plain


def test_wecom_refuses_a_wrong_signature_another_corp_and_garbage() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
    with pytest.raises(SignatureError) as wrong:
        crypto.verify("0" * 40, MESSAGE["timestamp"], MESSAGE["nonce"], ENCRYPT)
    assert wrong.value.status == 401
    with pytest.raises(SignatureError) as unsigned:
        crypto.verify(None, MESSAGE["timestamp"], MESSAGE["nonce"], ENCRYPT)
    assert unsigned.value.status == 401
    other = WeComCrypto(TOKEN, AES_KEY, "wx0000000000000000")
    with pytest.raises(SignatureError) as corp:
        other.decrypt(ENCRYPT)
    assert corp.value.status == 403
    with pytest.raises(SignatureError) as garbage:
        crypto.decrypt("bm90IGEgbWVzc2FnZQ==")
    assert garbage.value.status == 400
    assert TOKEN not in repr(crypto) and AES_KEY not in repr(crypto)


def test_wecom_encrypt_round_trips_and_the_reply_envelope_is_signed() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
    text = "<xml><Content><![CDATA[扩容 session 2]]></Content></xml>"
    assert crypto.decrypt(crypto.encrypt(text)) == text
    envelope = crypto.encrypted_xml(text, "1409659813", "42")
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    signature = envelope.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
    crypto.verify(signature, "1409659813", "42", encrypt)


def test_generic_v0_signature_is_slacks_scheme() -> None:
    body = b'{"message_id":"1","user":"ops","chat":"c","text":"help"}'
    headers = sign_generic("s3cret", body, 1700000000)
    expected = hmac.new(b"s3cret", b"v0:1700000000:" + body, hashlib.sha256).hexdigest()
    assert headers == {"X-Tcscale-Request-Timestamp": "1700000000", "X-Tcscale-Signature": f"v0={expected}"}
    verify_generic("s3cret", body, "1700000000", f"v0={expected}", 300, now=1700000100)
    for secret, changed_body in (("other", body), ("s3cret", body + b" ")):
        with pytest.raises(SignatureError, match="wrong signature"):
            verify_generic(secret, changed_body, "1700000000", f"v0={expected}", 300, now=1700000100)
    with pytest.raises(SignatureError, match="unsigned"):
        verify_generic("s3cret", body, "1700000000", None, 300, now=1700000100)


def test_the_timestamp_window() -> None:
    assert check_timestamp("1000", 300, now=1300) == 1000
    for raw, now in (("1000", 1301), ("1301", 1000), ("", 1000), (None, 1000), ("12a", 1000)):
        with pytest.raises(SignatureError) as error:
            check_timestamp(raw, 300, now=now)
        assert error.value.status == 401


# WeCom's JSON-callback sample (WXBizJsonMsgCrypt, the library the group robot's docs point to: WeCom team's
# github.com/sbzhu/weworkapi_python, callback_json/Sample.py). The robot publishes no ciphertext example of its own.
JSON_TOKEN, JSON_AES_KEY, JSON_RECEIVE_ID = (
    "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", "ww1436e0e65a779aee",
)  # fmt: skip
JSON_VERIFY = {
    "msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
    "timestamp": "1476416373",
    "nonce": "47744683",
    "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
}
JSON_ECHO_PLAIN = "1288432023552776189"
JSON_MESSAGE = {"msg_signature": "e3647471e395139e2308c1fa963f2d648a00b90e", "timestamp": "1409659813",
                "nonce": "1372623149"}  # fmt: skip
JSON_ENCRYPT = (
    "cjhLUX7UU4yCSelv1vz7T0zT8huF51bAMVWriNvO1FMegHrQZNrtvRxbwf0fUPsFvwqR0U0fgiJNEA5Y30F2MoI2S7vv3EjVQ68C0cjw9frBoU"
    "E2Hj0BvFp9h3u6Vbsg4lc1C8AtHdaN8orKuNKkLRLuYEL52R1J3v8olJGZRLnRdVKIivixmX/eQpzgeExtp20jI1HxRP1AAZ6xZoILdqDPO549"
    "LO4WeG+685JRUTdiwcY5fjZlqeMxuT4PpMn1X9OWsS7NRj06Wa5E3Tvg4twjWp39KPfOdRte6P1T4JU="
)


def test_wecoms_official_json_callback_vectors_verify_and_decrypt_with_the_one_crypto() -> None:
    crypto = WeComCrypto(JSON_TOKEN, JSON_AES_KEY, JSON_RECEIVE_ID)
    crypto.verify(JSON_VERIFY["msg_signature"], JSON_VERIFY["timestamp"], JSON_VERIFY["nonce"], JSON_VERIFY["echostr"])
    assert crypto.decrypt(JSON_VERIFY["echostr"]) == JSON_ECHO_PLAIN
    crypto.verify(JSON_MESSAGE["msg_signature"], JSON_MESSAGE["timestamp"], JSON_MESSAGE["nonce"], JSON_ENCRYPT)
    plain = crypto.decrypt(JSON_ENCRYPT)
    assert '"Content": "hello"' in plain and '"MsgId": 4561255354251345929' in plain  # (the sample's JSON has a typo)
    with pytest.raises(SignatureError) as forged:
        crypto.verify(JSON_MESSAGE["msg_signature"], JSON_MESSAGE["timestamp"], "1372623150", JSON_ENCRYPT)
    assert forged.value.status == 401
    internal_robot = WeComCrypto(JSON_TOKEN, JSON_AES_KEY, "", receiver="robot receive id")  # receive id "": refused
    with pytest.raises(SignatureError, match="another robot receive id") as other:
        internal_robot.decrypt(JSON_ENCRYPT)
    assert other.value.status == 403


def test_the_json_reply_envelope_is_wxbizjsonmsgcrypts_and_round_trips() -> None:
    robot = WeComCrypto(JSON_TOKEN, JSON_AES_KEY, "", receiver="robot receive id")
    message = '{"msgtype": "stream", "stream": {"id": "s1", "finish": true, "content": "扩容 ok"}}'
    envelope = robot.encrypted_json(message, "1409659813", "42")
    assert set(envelope) == {"encrypt", "msgsignature", "timestamp", "nonce"}
    robot.verify(envelope["msgsignature"], envelope["timestamp"], envelope["nonce"], envelope["encrypt"])
    assert robot.decrypt(envelope["encrypt"]) == message
