"""A small HTTP/1.1 server per server address: the guest's front (nginx / Apache / IIS in the real images).

It stays up while the server runs and an app is installed, and hands each request to a handler
(the guest supervisor routes it to the app). The security-group check happens at accept time: a
connection whose source address the instance's groups do not admit on this port is reset before
a byte is read, the way the real cloud never lets the packet reach the app.
"""

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("sandbox.guests")
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
IDLE_SECONDS = 30.0
REASONS = {200: "OK", 301: "Moved Permanently", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
REASONS |= {413: "Payload Too Large"}
REASONS |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    peer_ip: str
    local_ip: str
    path: str = ""
    query: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.query = parse_qs(parts.query)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"  # None: no Content-Type header (mina_auth's PHP sends none)
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, content_type: str | None = "application/json") -> HttpResponse:
    return HttpResponse(status, json.dumps(payload, ensure_ascii=False).encode(), content_type)


def html_response(status: int, html: str) -> HttpResponse:
    return HttpResponse(status, html.encode(), "text/html; charset=utf-8")


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
Admits = Callable[[str], bool]  # source ip -> admitted by the security groups on this (real) port


class Front:
    """Listeners on each of a server's addresses at one port, sharing a handler and an admission check.

    `port` is the port really bound (the real port, or its mapping: see sandbox/dataplane/ports.py).
    """

    def __init__(self, addresses: list[str], port: int, handler: Handler, admits: Admits) -> None:
        self.addresses = addresses
        self.port = port
        self.handler = handler
        self.admits = admits
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def listening(self) -> bool:
        return bool(self._servers)

    async def start(self) -> None:
        """Bind every address; OSError (address in use, ...) leaves nothing bound."""
        try:
            for address in self.addresses:
                server = await asyncio.start_server(self._serve, address, self.port, reuse_address=True)
                self._servers.append(server)
        except OSError:
            await self.stop()
            raise

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._connections):
            writer.close()  # a halted server drops its open connections too
        for server in servers:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_ip = (writer.get_extra_info("peername") or ("",))[0]
        local_ip = (writer.get_extra_info("sockname") or ("",))[0]
        if not self.admits(peer_ip):
            _reset(writer)
            return
        self._connections.add(writer)
        try:
            while await self._one_exchange(reader, writer, peer_ip, local_ip):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("guest front on %s:%s failed", local_ip, self.port)
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _one_exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_ip: str, local_ip: str
    ) -> bool:
        """Serve one request; True when the connection stays open for another (keep-alive)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_SECONDS)
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                raise
            return False  # the client closed between requests
        except asyncio.LimitOverrunError:
            await _send(writer, json_response(400, {"error": "header too large"}), keep_alive=False)
            return False
        if len(head) > MAX_HEAD:
            await _send(writer, json_response(400, {"error": "header too large"}), keep_alive=False)
            return False
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
            await _send(writer, json_response(400, {"error": "malformed request line"}), keep_alive=False)
            return False
        method, target, version = request_line
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit() or "chunked" in headers.get("transfer-encoding", "").lower():
            await _send(writer, json_response(400, {"error": "a body needs a Content-Length"}), keep_alive=False)
            return False
        if int(length_text) > MAX_BODY:
            await _send(writer, json_response(413, {"error": "body too large"}), keep_alive=False)
            return False
        body = await reader.readexactly(int(length_text))
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        request = HttpRequest(method.upper(), target, headers, body, peer_ip, local_ip)
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("guest handler failed on %s %s", method, target)
            response = json_response(500, {"error": "internal error"})
        await _send(writer, response, keep_alive, head_only=request.method == "HEAD")
        return keep_alive


async def _send(
    writer: asyncio.StreamWriter, response: HttpResponse, keep_alive: bool, head_only: bool = False
) -> None:
    reason = REASONS.get(response.status, "Status")
    content_type = f"Content-Type: {response.content_type}\r\n" if response.content_type else ""
    content_type += "".join(f"{name}: {value}\r\n" for name, value in response.headers.items())
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"{content_type}"
        f"Content-Length: {len(response.body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if head_only else response.body))
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): the client sees the connection refused at once, not a hang."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
