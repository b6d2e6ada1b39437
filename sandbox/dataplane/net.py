"""Outgoing TCP and HTTP from a chosen loopback source address (a VIP, a server's private IP), and relaying.

Every emulated address is a 127.x.y.z on `lo`, so binding the outgoing socket's source address
is all it takes for the receiving side (a guest, a security-group check) to see who is calling.
Used by the load balancers (forwarding, health checks) and by the guests (auth-service probes, curl).
"""

import asyncio
import contextlib
import fcntl
import json as jsonlib
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 5.0
MAX_BODY = 16 * 1024 * 1024  # a probe reads health pages and small JSON answers, never bulk data


async def open_from(
    source_ip: str | None, host: str, port: int, timeout: float = DEFAULT_TIMEOUT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to host:port with the socket bound to `source_ip` (None: any).

    Raises OSError (ConnectionRefusedError, TimeoutError, ...) when the peer cannot be reached.
    """
    local_addr = (source_ip, 0) if source_ip else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local_addr), timeout=timeout
        )
    except TimeoutError:
        raise TimeoutError(f"connecting to {host}:{port} timed out after {timeout:g} s") from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests must not wait for Nagle
    return reader, writer


class _StatusAndBody(NamedTuple):
    status: int
    body: bytes


class HttpAnswer(_StatusAndBody):
    """`status, body = await http_probe(...)`; also `.headers` (lower-case names), `.text()`, `.json()`."""

    headers: dict[str, str]

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)


def _answer(status: int, body: bytes, headers: dict[str, str]) -> HttpAnswer:
    answer = HttpAnswer(status, body)
    answer.headers = headers  # a NamedTuple subclass without __slots__ keeps a __dict__ for extras
    return answer


async def http_probe(
    source_ip: str | None,
    url: str,
    method: str = "GET",
    json: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connect_port: Callable[[int], int] | None = None,
) -> HttpAnswer:
    """One HTTP/1.1 request (Connection: close) from `source_ip`; the whole exchange within `timeout`.

    `json` is sent as an application/json body; `body` as raw bytes. `connect_port` maps the URL's (real)
    port to the port the sandbox listens on for it (see ports.py). Raises OSError when the server
    cannot be reached or closes without a valid answer, TimeoutError when it does not answer in time.
    """
    exchange = _exchange(source_ip, url, method, json, body, headers or {}, connect_port or (lambda port: port))
    try:
        return await asyncio.wait_for(exchange, timeout)
    except TimeoutError:
        raise TimeoutError(f"{method} {url} got no answer within {timeout:g} s") from None


async def _exchange(
    source_ip: str | None,
    url: str,
    method: str,
    json: Any,
    body: bytes | None,
    extra: dict[str, str],
    connect_port: Callable[[int], int],
) -> HttpAnswer:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs can be probed, not {url!r}")
    port = connect_port(parts.port or 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload = body or b""
    headers = {"Host": parts.netloc, "User-Agent": "sandbox-probe", "Accept": "*/*", "Connection": "close"}
    if json is not None:
        payload = jsonlib.dumps(json).encode()
        headers["Content-Type"] = "application/json"
    if payload or method in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(payload))
    headers.update(extra)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"

    reader, writer = await open_from(source_ip, parts.hostname, port)
    try:
        writer.write(head.encode("latin-1") + payload)
        await writer.drain()
        return await _read_answer(reader, method)
    except (asyncio.IncompleteReadError, ValueError) as error:  # cut short, or a malformed length
        raise ConnectionResetError(f"the HTTP answer from {parts.netloc} is incomplete: {error}") from None
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader, method: str) -> HttpAnswer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("the server closed the connection without an HTTP answer") from None
    except asyncio.LimitOverrunError:
        raise ConnectionError("the server's HTTP header is too large") from None
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}")
    status = int(status_line[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        data = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        data = await _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise ConnectionError(f"the answer's body ({length} bytes) is larger than a probe reads")
        data = await reader.readexactly(length)
    else:
        data = await reader.read(MAX_BODY)  # Connection: close delimits the body
    return _answer(status, data, headers)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readline()
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()  # the empty trailer line
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ConnectionError("the chunked answer is larger than a probe reads")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)  # CRLF after each chunk


# ---- TCP relaying (the load balancers' forwarding path) -----------------------------------------------
# The kernel moves the bytes: socket -> pipe -> socket with splice(2), driven by the event loop's
# readiness callbacks. No copy through Python, no coroutine per chunk: ~2x the throughput of an
# asyncio.Protocol relay on this kind of machine.
PIPE_BYTES = 1024 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


async def connect_from(source_ip: str | None, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """A connected non-blocking socket to host:port whose source address is `source_ip` (None: any)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_ip:
            sock.bind((source_ip, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"connecting to {host}:{port} timed out after {timeout:g} s") from None
    except BaseException:
        sock.close()
        raise
    return sock


class _Pump:
    """One direction of a spliced connection: src -> pipe -> dst.

    Reading and writing are decoupled: src is read while the pipe has room (even when dst is
    momentarily full) and dst is written while the pipe holds bytes, so both sockets stay busy.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket, done: Callable[[bool], None]
    ) -> None:
        self._loop, self._dst, self._done = loop, dst, done
        self._src_fd, self._dst_fd = src.fileno(), dst.fileno()
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._capacity = 64 * 1024  # Linux's default pipe size
        with contextlib.suppress(OSError):  # a larger pipe moves more per wake-up
            self._capacity = fcntl.fcntl(self._pipe_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._buffered = 0
        self.moved = 0  # bytes delivered to dst (Cloud Monitor's traffic metrics count them)
        self._eof = False
        self._reading = self._writing = False
        self.stopped = False
        self._watch()

    def _watch(self) -> None:
        """Register for exactly the readiness this direction can use now."""
        if self.stopped:
            return
        want_read = not self._eof and self._buffered < self._capacity
        want_write = self._buffered > 0
        if want_read != self._reading:
            self._reading = want_read
            if want_read:
                self._loop.add_reader(self._src_fd, self._on_readable)
            else:
                self._loop.remove_reader(self._src_fd)
        if want_write != self._writing:
            self._writing = want_write
            if want_write:
                self._loop.add_writer(self._dst_fd, self._on_writable)
            else:
                self._loop.remove_writer(self._dst_fd)

    def _on_readable(self) -> None:
        # Keep moving while bytes keep coming and the pipe has room: fewer trips through the event loop.
        while not self.stopped and not self._eof and self._buffered < self._capacity:
            try:
                moved = os.splice(self._src_fd, self._pipe_w, self._capacity - self._buffered, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                break
            except OSError:
                self._finish(clean=False)
                return
            if moved == 0:
                self._eof = True
            self._buffered += moved
            self._drain()
        self._watch()

    def _on_writable(self) -> None:
        self._drain()
        self._watch()

    def _drain(self) -> None:
        """Move what the pipe holds to dst, until dst would block."""
        while self._buffered and not self.stopped:
            try:
                delivered = os.splice(self._pipe_r, self._dst_fd, self._buffered, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError:
                self._finish(clean=False)
                return
            self._buffered -= delivered
            self.moved += delivered
        if self._eof and not self._buffered and not self.stopped:
            with contextlib.suppress(OSError):
                self._dst.shutdown(socket.SHUT_WR)  # pass the half-close on
            self._finish(clean=True)

    def _finish(self, clean: bool) -> None:
        if self.stopped:
            return
        self.stop()
        self._done(clean)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self._reading:
            self._loop.remove_reader(self._src_fd)
        if self._writing:
            self._loop.remove_writer(self._dst_fd)
        self._reading = self._writing = False
        os.close(self._pipe_r)
        os.close(self._pipe_w)


class Splice:
    """A relayed TCP connection: both directions spliced until both ends have closed (or one resets)."""

    def __init__(
        self, client: socket.socket, upstream: socket.socket, on_closed: Callable[["Splice"], None] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self._sockets = (client, upstream)
        self._on_closed = on_closed
        self._open_directions = 2
        self.closed = False
        self._pumps = (
            _Pump(loop, client, upstream, self._direction_done),
            _Pump(loop, upstream, client, self._direction_done),
        )

    def _direction_done(self, clean: bool) -> None:
        self._open_directions -= 1
        if not clean or self._open_directions == 0:
            self.close(reset=not clean)

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for pump in self._pumps:
            pump.stop()  # unregister from the selector before the descriptors go
        for sock in self._sockets:
            if reset:  # an abortive close (RST), as the side that failed did
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        if self._on_closed is not None:
            self._on_closed(self)

    @property
    def bytes_in(self) -> int:
        """Bytes from the client to the upstream so far."""
        return self._pumps[0].moved

    @property
    def bytes_out(self) -> int:
        """Bytes from the upstream to the client so far."""
        return self._pumps[1].moved


def reset(sock: socket.socket) -> None:
    """Close a socket with an RST (what a client of a load balancer with no usable backend sees)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
