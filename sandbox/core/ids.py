"""Resource identifiers in Tencent Cloud's shape (`ins-1a2b3c4d`)."""

import secrets
import string
import uuid

_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str, length: int = 8) -> str:
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def request_id() -> str:
    return str(uuid.uuid4())
