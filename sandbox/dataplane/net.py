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
import threading
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
# The kernel moves the bytes: socket -> pipe -> socket with splice(2), no copy through Python. Each direction
# is a thread in blocking splice calls (which release the GIL): two system calls per chunk and no event-loop
# round trip, where readiness callbacks cost an epoll wait and two epoll_ctl per chunk and waited behind every
# other callback of the sandbox's loop (bulk TCP through a listener 0.37-0.6 of direct -> see bench.dataplane).
PIPE_BYTES = 1024 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0)


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


class Splice:
    """A relayed TCP connection: both directions spliced until both ends have closed (or one resets).

    The sockets are blocking from here on and belong to the two pump threads; the last one to finish closes
    them (never while the other may still use their descriptors) and tells `on_closed` on the event loop.
    """

    def __init__(
        self, client: socket.socket, upstream: socket.socket, on_closed: Callable[["Splice"], None] | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = (client, upstream)
        self._on_closed = on_closed
        self._lock = threading.Lock()
        self._running = 2
        self._reset = False
        self._moved = [0, 0]  # bytes delivered: client -> upstream, upstream -> client (Cloud Monitor's traffic)
        self.closed = False
        for sock in self._sockets:
            sock.setblocking(True)
        for direction, (src, dst) in enumerate(((client, upstream), (upstream, client))):
            threading.Thread(target=self._pump, args=(src, dst, direction), name="clb-relay", daemon=True).start()

    @property
    def bytes_in(self) -> int:
        """Bytes from the client to the upstream so far."""
        return self._moved[0]

    @property
    def bytes_out(self) -> int:
        """Bytes from the upstream to the client so far."""
        return self._moved[1]

    def _pump(self, src: socket.socket, dst: socket.socket, direction: int) -> None:
        """One direction, src -> pipe -> dst, until src's end of stream (passed on as a half-close) or an error."""
        clean = False
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
        capacity = 64 * 1024  # Linux's default pipe size
        with contextlib.suppress(OSError):  # a larger pipe moves more per call
            capacity = fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            src_fd, dst_fd = src.fileno(), dst.fileno()
            while not self.closed:
                moved = os.splice(src_fd, pipe_w, capacity, flags=_SPLICE_FLAGS)
                if moved == 0:
                    if not self.closed:  # (closed: woken by `close`, not the peer's end of stream)
                        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                    clean = not self.closed
                    break
                while moved:
                    delivered = os.splice(pipe_r, dst_fd, moved, flags=_SPLICE_FLAGS)
                    moved -= delivered
                    self._moved[direction] += delivered
        except OSError:
            pass
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
        self._finished(clean)

    def _finished(self, clean: bool) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
            if not clean and not self.closed:  # a reset or an error on one side aborts both, as the side that failed
                self.closed, self._reset = True, True
                self._wake()
        if not last:
            return
        self.closed = True
        for sock in self._sockets:
            sock.close()
        if self._on_closed is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                self._loop.call_soon_threadsafe(self._on_closed, self)

    def _wake(self) -> None:
        """Make both pumps' blocking calls return (the sockets are closed once both have)."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                if self._reset:  # their close then sends an RST
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)

    def close(self, reset: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed, self._reset = True, reset
            self._wake()


def reset(sock: socket.socket) -> None:
    """Close a socket with an RST (what a client of a load balancer with no usable backend sees)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
