"""What every inbound route shares: the body read under a size limit before any signature work, the audited
refusal, and the reason an authentic message the bridge cannot take is refused."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from chatops.bridge import MAX_TEXT
from chatops.signing import SignatureError
from chatops.store import Audit

MAX_BODY = 64 * 1024


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, at most `limit` bytes; `SignatureError(413)` as soon as it is known to be larger: from its
    Content-Length before a byte is read, or while streaming, so an over-size body never sits in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:  # (the HTTP server refuses a malformed length itself)
        raise SignatureError(413, "request too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise SignatureError(413, "request too large")
        chunks.append(chunk)
    return b"".join(chunks)


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def refuse(audit: Audit, request: Request, platform: str, error: SignatureError) -> JSONResponse:
    """The refusal of a request that runs nothing: one audit line, then `{"error": reason}` with its status."""
    audit.write(platform=platform, client=client_of(request), decision=f"rejected: {error.reason}")
    return JSONResponse({"error": error.reason}, status_code=error.status)


def unusable(error: ValidationError, content: str, id_name: str) -> tuple[str, str]:
    """The audit decision and the chat reply for an authentic message the bridge cannot take (`id_name`: the
    platform's name for the message id)."""
    problems = {(str(e["loc"][0]), e["type"]) for e in error.errors() if e["loc"]}
    if ("message_id", "string_too_short") in problems:
        reply = f"this message has no {id_name}, so a redelivery could not be told apart: nothing was run"
        return f"no {id_name}", reply
    if any(field == "text" for field, _ in problems):
        reply = f"your message is {len(content)} characters; a command is at most {MAX_TEXT}: nothing was run"
        return f"text over {MAX_TEXT} characters", reply
    fields = ", ".join(sorted(field for field, _ in problems))
    return f"unusable {fields}", f"this message's {fields} is not usable (empty or too long): nothing was run"
