"""A TCP round-robin in front of several Prefect API servers: what a team's load balancer does, in one process.

`python -m devstack.tcp_balancer --port P --backend NAME=HOST:PORT ...` forwards each new TCP connection to the
next backend in turn, byte for byte (HTTP, keep-alive and WebSockets alike, as a CLB's TCP listener or NGINX's
`stream` does). A backend that refuses the connection, or does not accept it within CONNECT_TIMEOUT (its machine
gone), is skipped for this connection and the next one is tried: a dead server costs its clients one reconnect,
never an answer from nowhere. A connection already forwarded to a server that dies is closed, and the client
(Prefect's client retries on a dropped connection) connects again.

Every few seconds it writes its counts to `--stats` (JSON): connections forwarded and refused, per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

CONNECT_TIMEOUT = 2.0
STATS_EVERY = 1.0


@dataclass
class Backend:
    name: str
    host: str
    port: int
    forwarded: int = 0
    refused: int = 0


def parse_backend(text: str) -> Backend:
    """NAME=HOST:PORT"""
    name, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not (name and host and port.isdigit()):
        raise argparse.ArgumentTypeError(f"a backend is NAME=HOST:PORT, not {text!r}")
    return Backend(name, host, int(port))


class Balancer:
    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self._turn = itertools.cycle(range(len(backends)))

    async def _connect(self) -> tuple[Backend, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next backend in turn that accepts, or None when none does."""
        first = next(self._turn)
        for offset in range(len(self.backends)):
            backend = self.backends[(first + offset) % len(self.backends)]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(backend.host, backend.port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                backend.refused += 1
                continue
            backend.forwarded += 1
            return backend, reader, writer
        return None

    async def serve_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connected = await self._connect()
        if connected is None:
            client_writer.close()
            return
        _, backend_reader, backend_writer = connected
        await asyncio.gather(
            _pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer), return_exceptions=True
        )

    def stats(self) -> dict[str, object]:
        return {"backends": [asdict(b) for b in self.backends]}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error on either side, then close the writing side (the peer sees the drop)."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def run(port: int, backends: list[Backend], stats: Path | None) -> None:
    balancer = Balancer(backends)
    server = await asyncio.start_server(balancer.serve_client, "127.0.0.1", port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"balancing 127.0.0.1:{port} over {', '.join(f'{b.name}={b.host}:{b.port}' for b in backends)}", flush=True)
    async with server:
        while not stop.is_set():
            if stats:
                stats.write_text(json.dumps(balancer.stats()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_EVERY)
    if stats:
        stats.write_text(json.dumps(balancer.stats()))
    print(json.dumps(balancer.stats()), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="where clients connect, on 127.0.0.1")
    parser.add_argument("--backend", type=parse_backend, action="append", required=True, help="NAME=HOST:PORT")
    parser.add_argument("--stats", type=Path, help="a JSON file rewritten with the counts every second")
    args = parser.parse_args(argv)
    asyncio.run(run(args.port, args.backend, args.stats))


if __name__ == "__main__":
    main()
