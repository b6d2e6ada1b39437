"""The rehearsal's round-robin in front of the Prefect servers: it spreads connections and skips a dead server."""

import asyncio

from devstack.prefect_server import free_port
from devstack.tcp_balancer import Backend, Balancer


async def _answer(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readline()
    writer.write(name.encode() + b":" + request)
    await writer.drain()
    writer.close()


async def _ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def _round_robin_then_failover() -> tuple[list[bytes], list[bytes], list[Backend]]:
    live = [await asyncio.start_server(lambda r, w, n=n: _answer(n, r, w), "127.0.0.1", 0) for n in ("a", "b")]
    backends = [Backend(name, "127.0.0.1", s.sockets[0].getsockname()[1]) for name, s in zip("ab", live, strict=True)]
    port = free_port()
    front = await asyncio.start_server(Balancer(backends).serve_client, "127.0.0.1", port)
    both = [await _ask(port) for _ in range(4)]
    live[0].close()
    await live[0].wait_closed()  # server a is gone: its port refuses
    after = [await _ask(port) for _ in range(4)]
    front.close()
    live[1].close()
    return both, after, backends


def test_connections_alternate_and_a_dead_server_is_skipped() -> None:
    both, after, backends = asyncio.run(_round_robin_then_failover())
    assert both == [b"a:ping\n", b"b:ping\n", b"a:ping\n", b"b:ping\n"]
    assert after == [b"b:ping\n"] * 4  # every connection answered, none by the dead server
    a, b = backends
    assert (a.forwarded, a.refused, b.forwarded, b.refused) == (2, 2, 6, 0)
