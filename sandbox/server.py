"""Run the sandbox: in the foreground (`python -m sandbox serve`) or embedded in a thread (tests, demo)."""

import asyncio
import socket
import struct
import threading
import time
from types import TracebackType

import httpx
import uvicorn

from sandbox.core.emulated_cloud import Cloud, SandboxConfig
from sandbox.wire.app import SandboxApp


def _uvicorn_config(cloud: Cloud) -> uvicorn.Config:
    return uvicorn.Config(
        SandboxApp(cloud),
        host=cloud.config.host,
        port=cloud.config.port,
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )


class ApiServer(uvicorn.Server):
    """uvicorn's server, whose endpoint can restart as a real cloud's API does (a fault rule's `outage_ms`): every
    open connection dropped (reset), new ones refused, then the same port served again by the same app, its cloud
    as it was; the data plane (servers, balancers) runs on, as a real cloud's servers do."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if isinstance(config.app, SandboxApp):
            config.app.outage = self.outage

    def outage(self, seconds: float) -> None:
        """Called on the server's event loop (by the app, serving the request that meets the restart)."""
        loop = asyncio.get_running_loop()
        listening = [sock for server in self.servers for sock in server.sockets]
        if not listening:  # already down (a request held before the restart met another): it comes back on its own
            return
        host, port = listening[0].getsockname()[:2]
        for server in self.servers:
            server.close()  # the listening socket: new connections are refused
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and not transport.is_closing():
                sock = transport.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: the client sees a reset, as from a restarted host
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
        loop.call_later(seconds, self._reopen, host, port)

    def _reopen(self, host: str, port: int) -> None:
        self._reopening = asyncio.get_running_loop().create_task(self._listen_again(host, port))  # kept: not GC'd

    async def _listen_again(self, host: str, port: int) -> None:
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        self.servers = [await loop.create_server(protocol, host=host, port=port, backlog=config.backlog)]


def serve(config: SandboxConfig) -> None:
    ApiServer(_uvicorn_config(Cloud(config))).run()


class EmbeddedSandbox:
    """A sandbox served from a background thread of this process.

    Use port 0 to let the OS choose; `endpoint` is what `HttpProfile(endpoint=...)` takes.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.cloud = Cloud(config or SandboxConfig(port=0))
        self._server = ApiServer(_uvicorn_config(self.cloud))
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run, name="sandbox", daemon=True)
        # One client for every admin call: `httpx.request` builds a TLS context per call (~35 ms of CPU loading CA
        # certificates), which the tests' thousands of admin calls paid (~15 % of a whole-flow test's CPU).
        self._admin = httpx.Client(timeout=10)

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"{self.cloud.config.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self, timeout: float = 10.0) -> "EmbeddedSandbox":
        self._thread.start()
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded sandbox did not start")
            time.sleep(delay)  # waiting on uvicorn's own `started` flag, with backoff
            delay = min(delay * 2, 0.1)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._admin.close()

    def admin(self, method: str, path: str, json: object = None) -> object:
        response = self._admin.request(method, f"{self.url}/_sandbox/{path}", json=json)
        response.raise_for_status()
        return response.json()

    def __enter__(self) -> "EmbeddedSandbox":
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
