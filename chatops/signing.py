"""Inbound verification: the generic webhook's HMAC-SHA256 (Slack's v0 scheme) and WeCom's callback crypto.

Generic: `X-Tcscale-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + raw body))` with
`X-Tcscale-Request-Timestamp`. WeCom (企业微信; WXBizMsgCrypt, one implementation for the self-built app's XML
callback and the group robot's JSON one): `msg_signature = sha1(sorted(token, timestamp, nonce, encrypt))`, body
AES-256-CBC with key = b64decode(EncodingAESKey + "="), IV = key[:16], PKCS#7 padded to 32 bytes, plaintext =
random(16) + len(4, big-endian) + msg + receive id (the app: its CorpID; an internal group robot: ""). Every
comparison is constant time. WeCom's own scheme has no replay window: the bridge checks the timestamp itself
(`check_timestamp`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TIMESTAMP_HEADER = "X-Tcscale-Request-Timestamp"
SIGNATURE_HEADER = "X-Tcscale-Signature"
WECOM_BLOCK = 32  # WeCom pads to 32 bytes, not AES's 16


class SignatureError(Exception):
    """A request that must be refused: `status` is the HTTP status, the message the JSON reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_timestamp(raw: str | None, window: int, now: float | None = None) -> int:
    """The request's timestamp (seconds) if within `window` of now; else `SignatureError(401)`."""
    if not raw:
        raise SignatureError(401, "missing request timestamp")
    try:
        stamp = int(raw)
    except ValueError:
        raise SignatureError(401, "the request timestamp is not an integer") from None
    now = time.time() if now is None else now
    if abs(now - stamp) > window:
        raise SignatureError(401, f"stale request: its timestamp is more than {window} s from now")
    return stamp


# --- generic (Slack v0) ---------------------------------------------------------------------------------


def generic_signature(secret: str, body: bytes, timestamp: int | str) -> str:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def sign_generic(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers a generic bot sends with `body` (raw bytes, exactly as posted)."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: generic_signature(secret, body, timestamp)}


def verify_generic(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, window: int, now: float | None = None
) -> None:
    """Raise `SignatureError` unless the request is signed with `secret` and fresh."""
    if not signature:
        raise SignatureError(401, f"unsigned request: {SIGNATURE_HEADER} is missing")
    stamp = check_timestamp(timestamp, window, now)
    if not hmac.compare_digest(generic_signature(secret, body, stamp).encode(), signature.encode()):
        raise SignatureError(401, "wrong signature")


# --- WeCom -------------------------------------------------------------------------------------------------


class WeComCrypto:
    """WXBizMsgCrypt: verify, decrypt and encrypt WeCom callback messages (XML or JSON envelopes).

    `receive_id` is what the plaintext must end with: the self-built app's CorpID, "" for an internal group
    robot; `receiver` names it in the refusal."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str, receiver: str = "CorpID") -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("the EncodingAESKey must be 43 characters")
        self._token = token
        self._key = base64.b64decode(encoding_aes_key + "=")
        self.receive_id = receive_id
        self.receiver = receiver

    def __repr__(self) -> str:
        return f"WeComCrypto(receive_id={self.receive_id!r})"  # never the token or the key

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return hashlib.sha1("".join(sorted([self._token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def verify(self, msg_signature: str | None, timestamp: str, nonce: str | None, encrypt: str) -> None:
        if not msg_signature or nonce is None:
            raise SignatureError(401, "unsigned request: msg_signature or nonce is missing")
        expected = self.signature(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), msg_signature.encode()):
            raise SignatureError(401, "wrong msg_signature")

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def decrypt(self, encrypt: str) -> str:
        """The message inside `encrypt`; `SignatureError` if it does not decrypt or is not for our receive id."""
        try:
            data = base64.b64decode(encrypt, validate=True)
            decryptor = self._cipher().decryptor()
            plain = decryptor.update(data) + decryptor.finalize()
            pad = plain[-1]
            if not 1 <= pad <= WECOM_BLOCK:
                raise ValueError("bad padding")
            plain = plain[:-pad]
            (length,) = struct.unpack(">I", plain[16:20])
            message, receive_id = plain[20 : 20 + length], plain[20 + length :]
            text = message.decode()
        except (ValueError, IndexError, struct.error):
            raise SignatureError(400, "the message does not decrypt with our EncodingAESKey") from None
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise SignatureError(403, f"the message is for another {self.receiver}")
        return text

    def encrypt(self, message: str, random16: bytes | None = None) -> str:
        body = message.encode()
        plain = (random16 or os.urandom(16)) + struct.pack(">I", len(body)) + body + self.receive_id.encode()
        pad = WECOM_BLOCK - len(plain) % WECOM_BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def encrypted_xml(self, message: str, timestamp: str, nonce: str) -> str:
        """A passive reply (or a test's callback body): the encrypted envelope WeCom expects."""
        encrypt = self.encrypt(message)
        return (
            f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{self.signature(timestamp, nonce, encrypt)}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )

    def encrypted_json(self, message: str, timestamp: str, nonce: str) -> dict[str, str]:
        """A group robot's passive reply (or a test's callback body): WXBizJsonMsgCrypt's envelope."""
        encrypt = self.encrypt(message)
        return {"encrypt": encrypt, "msgsignature": self.signature(timestamp, nonce, encrypt), "timestamp": timestamp,
                "nonce": nonce}  # fmt: skip
