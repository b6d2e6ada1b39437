"""Login passwords (`LoginSettings.Password`): the complexity rules of RunInstances, and salted hashes.

The sandbox never keeps a password, only `pbkdf2_sha256$<iterations>$<salt>$<hash>` (salt and hash in
base64), so neither the state file nor `GET /_sandbox/state` can give one back. The iteration count is
modest on purpose: every SSH password login verifies one, and a test may open a hundred at once.
"""

import base64
import hashlib
import hmac
import secrets

from sandbox.core.errors import ApiError

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 20_000
SPECIALS = set("()`~!@#$%^&*-+=|{}[]:;',.?/")


def check_password(password: str, platform: str) -> None:
    """RunInstances' documented rules: Linux 8-30 characters of at least 2 classes, Windows 12-30 of at least 3
    (classes: a-z, A-Z, 0-9 and the special characters `( ) \\` ~ ! @ # $ % ^ & * - + = | { } [ ] : ; ' , . ? /`);
    a Windows password may not start with `/`. The message never repeats the password."""
    windows = platform == "Windows"
    shortest, classes_needed = (12, 3) if windows else (8, 2)
    classes = [
        any(c.islower() and c.isascii() for c in password),
        any(c.isupper() and c.isascii() for c in password),
        any(c.isdigit() and c.isascii() for c in password),
        any(c in SPECIALS for c in password),
    ]
    allowed = all((c.isascii() and c.isalnum()) or c in SPECIALS for c in password)
    if (
        not shortest <= len(password) <= 30
        or sum(classes) < classes_needed
        or not allowed
        or (windows and password.startswith("/"))
    ):
        raise ApiError(
            "InvalidPassword",
            f"The password does not meet the complexity rules of {'Windows' if windows else 'Linux'} instances: "
            f"{shortest} to 30 characters with at least {classes_needed} of lower case letters, upper case letters, "
            "digits and special characters ( ) ` ~ ! @ # $ % ^ & * - + = | { } [ ] : ; ' , . ? /"
            + (", not starting with /." if windows else "."),
        )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"{ALGORITHM}${ITERATIONS}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Does `password` match the stored hash? (Constant-time comparison; a malformed hash matches nothing.)"""
    try:
        algorithm, iterations, salt, digest = encoded.split("$")
        if algorithm != ALGORITHM:
            return False
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(computed, base64.b64decode(digest))
    except ValueError:
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
