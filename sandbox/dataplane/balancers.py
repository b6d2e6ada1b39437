"""Load balancers that really forward TCP: one listening socket per CLB TCP listener, on VIP:port.

Ports are the real ones (listener and backend ports, security groups); the sockets are at the ports the
sandbox serves them at (ports.py): VIP:<listen(listener port)>, forwarded to <listen(backend port)>.

Each accepted connection goes to one registered target (smooth weighted round robin; weight 0
takes no new connections; only healthy targets while any is healthy, all of them otherwise, as
the real CLB fails open), connecting FROM the VIP so that the backend's security group sees the
VIP. The security group is enforced here too: a target whose groups do not admit the VIP on its
port is skipped, exactly as its health check fails. Health checks (TCP connect, or HTTP with
path and status-code mask) run from the VIP every interval and are written through the CLB
backend, so `DescribeTargetHealth` reports what really answers.

The forwarders follow the control plane: `clb.changed` / `clb.deleted` / `reset` reconcile the
set of listening sockets, `instance.state` marks a stopped or terminated server unhealthy at once.
Targets are read from the CLB state on every connection, so registrations need no restart.
"""

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from sandbox.core.emulated_cloud import Cloud
from sandbox.dataplane.net import Splice, connect_from, http_probe, reset
from sandbox.dataplane.ports import PortMap
from sandbox.wire.admin import admin_route

log = logging.getLogger("sandbox.balancers")

INSTANT_CHECK_SECONDS = 0.2  # health-check interval under the `instant` clock profile
MIN_CHECK_SECONDS = 0.05
CONNECT_TIMEOUT = 3.0  # to a target, per attempt
FORWARDED_PROTOCOLS = ("TCP",)  # layer-4 TCP listeners; UDP and layer 7 are not forwarded

TargetKey = tuple[str, int]  # (instance_id, port)


@dataclass
class _HealthCounter:
    successes: int = 0
    failures: int = 0
    reason: str = ""


@dataclass
class Forwarder:
    """One CLB TCP listener made real: the listening socket, its health checker and its live connections."""

    cloud: Cloud
    lb_id: str
    listener_id: str
    vip: str
    port: int  # the listener's (real) port
    ports: PortMap = field(default_factory=PortMap)
    listening: socket.socket | None = None  # the socket on VIP:<the port the sandbox serves `port` at>
    error: str | None = None
    connections: set[Splice] = field(default_factory=set)
    served: dict[TargetKey, int] = field(default_factory=dict)  # connections forwarded per target
    _current_weight: dict[TargetKey, int] = field(default_factory=dict)
    _health: dict[TargetKey, _HealthCounter] = field(default_factory=dict)
    _checker: asyncio.Task[None] | None = None
    _acceptor: asyncio.Task[None] | None = None
    _connecting: set[asyncio.Task[None]] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once after a delete
            sock.bind((self.vip, self.ports.listen(self.port)))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as error:  # e.g. the port is taken: reported by the admin route, retried on change
            sock.close()
            where = f"{self.vip}:{self.port} (served at {self.ports.listen(self.port)})"
            self.error = f"cannot listen on {where}: {error.strerror or error}"
            log.warning("%s %s", self.listener_id, self.error)
        else:
            self.listening = sock
            self._acceptor = loop.create_task(self._accept_forever(), name=f"accept {self.listener_id}")
        self._checker = loop.create_task(self._check_forever(), name=f"health {self.listener_id}")

    async def close(self) -> None:
        tasks = [t for t in (self._checker, self._acceptor, *self._connecting) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.listening is not None:
            self.listening.close()
            self.listening = None
        for connection in list(self.connections):  # the listener is gone: so are its connections
            connection.close(reset=True)

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.listening is not None
        while True:
            try:
                client, _ = await loop.sock_accept(self.listening)
            except OSError as error:  # e.g. out of descriptors: keep serving
                log.warning("%s accept failed: %s", self.listener_id, error)
                await asyncio.sleep(0.05)
                continue
            client.setblocking(False)
            task = loop.create_task(self._forward(client))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def kick(self) -> None:
        """Check health now rather than at the end of the interval (targets or servers changed)."""
        self._wake.set()

    # ---- the listener as the control plane sees it now -----------------------------------------------
    def _listener(self) -> Any:
        lb = self.cloud.clb.state.load_balancers.get(self.lb_id)
        return lb.listeners.get(self.listener_id) if lb is not None else None

    def _instance(self, instance_id: str) -> Any:
        return self.cloud.cvm.state.instances.get(instance_id)

    def _reachable(self, target: Any) -> str | None:
        """Why the VIP cannot reach this target at all (None: it can try)."""
        instance = self._instance(target.instance_id)
        if instance is None:
            return "the instance no longer exists"
        if instance.state != "RUNNING":
            return f"the instance is {instance.state}"
        if not self.cloud.vpc.admits(instance.security_group_ids, self.vip, target.port, "TCP"):
            return f"its security groups do not admit {self.vip} on port {target.port}"
        return None

    # ---- scheduling -----------------------------------------------------------------------------------
    def _pool(self) -> list[Any]:
        listener = self._listener()
        if listener is None:
            return []
        eligible = [t for t in listener.targets if t.weight > 0]
        healthy = [t for t in eligible if t.healthy]
        return healthy or eligible

    def _pick(self, pool: list[Any]) -> Any:
        """Smooth weighted round robin (nginx): an even interleaving in proportion to the weights."""
        total = 0
        best = None
        for target in pool:
            key = (target.instance_id, target.port)
            self._current_weight[key] = self._current_weight.get(key, 0) + target.weight
            total += target.weight
            if best is None or self._current_weight[key] > self._current_weight[(best.instance_id, best.port)]:
                best = target
        assert best is not None
        self._current_weight[(best.instance_id, best.port)] -= total
        return best

    async def _forward(self, client: socket.socket) -> None:
        """Relay a new client connection to the first target, in WRR order, that accepts it."""
        pool = self._pool()
        if pool:  # the WRR choice first, then the others in order if it cannot take the connection
            first = self._pick(pool)
            pool.remove(first)
            pool.insert(0, first)
        try:
            for target in pool:
                if self._reachable(target) is not None:
                    continue
                try:
                    upstream = await connect_from(
                        self.vip, target.private_ip, self.ports.listen(target.port), CONNECT_TIMEOUT
                    )
                except OSError:
                    continue
                key = (target.instance_id, target.port)
                self.served[key] = self.served.get(key, 0) + 1
                self.connections.add(Splice(client, upstream, self._closed))
                self.cloud.events.emit("clb.connection", self.lb_id, self.listener_id, len(self.connections))
                return
        except BaseException:
            reset(client)
            raise
        reset(client)  # no target can take it: the client sees a reset, as from a CLB with no backend

    def _closed(self, connection: Splice) -> None:
        self.connections.discard(connection)
        self.cloud.events.emit("clb.traffic", self.lb_id, self.listener_id, connection.bytes_in, connection.bytes_out)

    # ---- health checks --------------------------------------------------------------------------------
    def _interval(self, health_check: Any) -> float:
        clock = self.cloud.clock.settings
        if clock.profile == "instant":
            return INSTANT_CHECK_SECONDS
        return max(MIN_CHECK_SECONDS, health_check.interval_time * clock.time_scale)

    def _timeout(self, health_check: Any) -> float:
        clock = self.cloud.clock.settings
        scale = 1.0 if clock.profile == "instant" else clock.time_scale
        return max(0.5, min(health_check.time_out * scale, 5.0))

    async def _check_forever(self) -> None:
        while True:
            listener = self._listener()
            if listener is None:
                return
            self._wake.clear()  # before checking: a kick during the check means "check again"
            try:
                await self.check_once()
            except Exception:  # a checker must survive anything a target does
                log.exception("health check of %s failed", self.listener_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval(listener.health_check))

    async def check_once(self) -> None:
        listener = self._listener()
        if listener is None:
            return
        health_check = listener.health_check
        targets = list(listener.targets)
        results = await asyncio.gather(*(self._probe(t, health_check) for t in targets))
        # The probes took time: record against the targets registered now (a failed task may have
        # restored an older copy of the load balancer meanwhile).
        listener = self._listener()
        current = {(t.instance_id, t.port): t for t in listener.targets} if listener else {}
        for target, reason in zip(targets, results, strict=True):
            if (now := current.get((target.instance_id, target.port))) is not None:
                self._record(now, reason, health_check)
        for key in set(self._health) - set(current):  # deregistered targets start afresh if they come back
            del self._health[key]

    async def _probe(self, target: Any, health_check: Any) -> str | None:
        """None when the target is healthy, else why not."""
        if not self._instance_up(target):
            return self._reachable(target)
        if not health_check.health_switch:  # checks off: a running server counts as healthy
            return None
        if (reason := self._reachable(target)) is not None:
            return reason
        timeout = self._timeout(health_check)
        try:
            if health_check.check_type == "HTTP":
                path = health_check.http_check_path or "/"
                port = health_check.check_port or target.port
                url = f"http://{target.private_ip}:{port}{path}"
                method = health_check.http_check_method or "GET"
                answer = await http_probe(self.vip, url, method, timeout=timeout, connect_port=self.ports.listen)
                status = answer.status
                mask = health_check.http_code or 31  # bit n-1 set: status class n counts as healthy
                if not (1 <= status // 100 <= 5 and mask & (1 << (status // 100 - 1))):
                    return f"HTTP {status} is not an accepted status (HttpCode {mask})"
                return None
            port = health_check.check_port or target.port
            # SYN, SYN-ACK, RST: as CLB does
            reset(await connect_from(self.vip, target.private_ip, self.ports.listen(port), timeout))
            return None
        except OSError as error:
            return f"{type(error).__name__}: {error}"

    def _record(self, target: Any, reason: str | None, health_check: Any) -> None:
        key = (target.instance_id, target.port)
        counter = self._health.setdefault(key, _HealthCounter())
        if reason is None:
            counter.successes, counter.failures, counter.reason = counter.successes + 1, 0, ""
        else:
            counter.successes, counter.failures, counter.reason = 0, counter.failures + 1, reason
        healthy = target.healthy
        if healthy is None or not self._instance_up(target):
            healthy = reason is None  # the first result counts at once, and so does a server going down
        elif healthy and counter.failures >= max(1, health_check.un_health_num):
            healthy = False
        elif not healthy and counter.successes >= max(1, health_check.health_num):
            healthy = True
        if healthy is not target.healthy:
            self.cloud.clb.set_target_health(self.lb_id, self.listener_id, target.instance_id, target.port, healthy)

    def _instance_up(self, target: Any) -> bool:
        instance = self._instance(target.instance_id)
        return instance is not None and instance.state == "RUNNING"

    def describe(self) -> dict[str, Any]:
        listener = self._listener()
        targets = []
        for target in listener.targets if listener else []:
            key = (target.instance_id, target.port)
            counter = self._health.get(key, _HealthCounter())
            targets.append(
                {
                    "instance_id": target.instance_id,
                    "address": f"{target.private_ip}:{target.port}",
                    "weight": target.weight,
                    "healthy": target.healthy,
                    "reason": counter.reason,
                    "connections_served": self.served.get(key, 0),
                }
            )
        return {
            "load_balancer_id": self.lb_id,
            "listener_id": self.listener_id,
            "address": f"{self.vip}:{self.port}",
            "served_at": f"{self.vip}:{self.ports.listen(self.port)}",
            "listening": self.listening is not None,
            "error": self.error,
            "open_connections": len(self.connections),
            "targets": targets,
        }


class Balancers:
    """Every CLB TCP listener of the sandbox, kept in step with the control plane."""

    def __init__(self, cloud: Cloud, ports: PortMap | None = None) -> None:
        self.cloud = cloud
        self.ports = ports or PortMap()
        self.forwarders: dict[tuple[str, str], Forwarder] = {}
        self._reconciler: asyncio.Task[None] | None = None
        self._stale = False
        self._running = False
        _REGISTRY.append(self)

    async def start(self) -> None:
        self._running = True
        events = self.cloud.events
        events.subscribe("clb.changed", self._on_clb_changed)
        events.subscribe("clb.deleted", self._on_clb_changed)
        events.subscribe("reset", self._on_clb_changed)
        events.subscribe("instance.state", self._on_instance_state)
        await self.reconcile()

    async def stop(self) -> None:
        self._running = False
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
        await asyncio.gather(*(f.close() for f in self.forwarders.values()))
        self.forwarders.clear()
        if self in _REGISTRY:
            _REGISTRY.remove(self)

    # ---- events (synchronous, inside the loop): schedule the async work -----------------------------
    def _on_clb_changed(self, *_: Any) -> None:
        if not self._running:
            return
        self._stale = True
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_while_stale())
        for forwarder in self.forwarders.values():
            forwarder.kick()

    def _on_instance_state(self, instance: Any, *_: Any) -> None:
        """A server that leaves RUNNING is unhealthy now, not after `UnHealthNum` failed checks."""
        if not self._running:
            return
        down = instance.state != "RUNNING"
        for lb, listener, target in self.cloud.clb.targets_of_instance(instance.instance_id):
            if down and target.healthy is not False:
                self.cloud.clb.set_target_health(
                    lb.load_balancer_id, listener.listener_id, target.instance_id, target.port, False
                )
            forwarder = self.forwarders.get((lb.load_balancer_id, listener.listener_id))
            if forwarder is not None:
                forwarder.kick()

    async def _reconcile_while_stale(self) -> None:
        while self._stale:
            self._stale = False
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconciling the load balancers failed")

    async def reconcile(self) -> None:
        """Listen on every TCP listener's VIP:port, and on nothing else."""
        wanted: dict[tuple[str, str], tuple[str, int]] = {
            (lb.load_balancer_id, listener.listener_id): (lb.vip, listener.port)
            for lb in self.cloud.clb.state.load_balancers.values()
            for listener in lb.listeners.values()
            if listener.protocol in FORWARDED_PROTOCOLS
        }
        gone = [
            key
            for key, f in self.forwarders.items()
            if wanted.get(key) != (f.vip, f.port) or f.listening is None  # a failed bind is retried
        ]
        await asyncio.gather(*(self.forwarders.pop(key).close() for key in gone))
        for key, (vip, port) in wanted.items():
            if key not in self.forwarders:
                forwarder = Forwarder(self.cloud, key[0], key[1], vip, port, self.ports)
                self.forwarders[key] = forwarder
                await forwarder.start()

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self.forwarders.values()]


_REGISTRY: list[Balancers] = []  # the running Balancers of this process, for the admin route


@admin_route("GET", "balancers")
def list_balancers(cloud: Cloud, _: dict[str, Any]) -> list[dict[str, Any]]:
    """Every forwarded listener: its address, whether it listens, and its targets' health and traffic."""
    return [row for balancers in _REGISTRY if balancers.cloud is cloud for row in balancers.describe()]
