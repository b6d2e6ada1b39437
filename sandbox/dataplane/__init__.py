"""The sandbox's data plane: servers you can SSH into, guests that serve HTTP, load balancers that forward TCP.

It runs in the sandbox's event loop, follows the control plane through `cloud.events`, and is
started and stopped by the HTTP app's lifespan (`SandboxConfig.dataplane`).

Servers: every RUNNING instance has a disk (a folder), an SSH listener on each of its addresses
and its guests (the apps on its disk). Events only mark an instance as changed; one worker per
instance then converges it (up while RUNNING, down otherwise, disk removed once the instance
is gone), so a burst of events never runs two boots of one server at once.
"""

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import weakref
from pathlib import Path
from typing import Any

from sandbox.core.emulated_cloud import Cloud
from sandbox.dataplane.disks import Disks, home_dir
from sandbox.dataplane.ports import PortMap
from sandbox.dataplane.shell import Guest, Shell
from sandbox.dataplane.ssh import SshServers

log = logging.getLogger("sandbox.dataplane")
KNOWN_PORTS = (80, 443, 5757, 8080)  # the real ports guests' curl / Invoke-WebRequest may be sent to
_PLANES: "weakref.WeakKeyDictionary[Cloud, DataPlane]" = weakref.WeakKeyDictionary()


def _optional(module: str, name: str) -> Any:
    """A class another engineer's module provides, or None while that module does not exist yet."""
    try:
        imported = __import__(f"sandbox.dataplane.{module}", fromlist=[name])
    except ModuleNotFoundError as error:
        if error.name != f"sandbox.dataplane.{module}":
            raise
        return None
    return getattr(imported, name)


def bindable(port: int) -> bool:
    """Can servers listen on `port`? Below `ip_unprivileged_port_start` (usually 1024) needs root, and a
    host service on the wildcard address (a laptop's own sshd on 0.0.0.0:22) takes the port on every address."""
    if os.geteuid() != 0:
        try:
            start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
        except (OSError, ValueError):
            start = 1024
        if port < start:
            return False
    with socket.socket() as probe:
        try:
            probe.bind(("127.254.254.254", port))
        except OSError:
            return False
    return True


def choose_port(configured: int | None, real: int, fallback: int) -> int:
    if configured is not None:
        return configured
    return real if bindable(real) else fallback


def dataplane_of(cloud: Cloud) -> "DataPlane | None":
    return _PLANES.get(cloud)


class DataPlane:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.ssh_port = choose_port(cloud.config.ssh_port, 22, 2222)
        self.ports = PortMap(cloud.config.app_port)
        self.app_port = self.ports.listen(80)  # the port that stands for 80 (see ports.py)
        state_dir = cloud.config.state_dir
        self._temporary_root = state_dir is None
        self.root = state_dir / "dataplane" if state_dir else Path(tempfile.mkdtemp(prefix="tcscale-dataplane-"))
        self.disks = Disks(self.root)
        self.shell = Shell(self.root)
        self.ssh = SshServers(cloud, self.shell, self.ssh_port, self.root / "hostkeys")
        guests_class, balancers_class = _optional("guests", "Guests"), _optional("balancers", "Balancers")
        self.guests: Any = guests_class(cloud, self.ports) if guests_class else None
        self.balancers: Any = balancers_class(cloud, self.ports) if balancers_class else None
        self.errors: dict[str, list[str]] = {}  # instance id -> why part of the server is not up
        self._controls: dict[str, asyncio.AbstractServer] = {}
        self._up: set[str] = set()
        self._changed: set[str] = set()
        self._went_down: set[str] = set()  # left RUNNING since last converged (a reboot too)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._chores: set[asyncio.Task[Any]] = set()  # keeps background tasks referenced

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to the control plane's events and bring up what already exists (restored state)."""
        _PLANES[self.cloud] = self
        events = self.cloud.events
        events.subscribe("instance.state", self._on_instance_state)
        events.subscribe("image.creating", self._on_image_creating)
        events.subscribe("image.state", self._on_image_state)
        events.subscribe("image.deleted", self._on_image_deleted)
        events.subscribe("reset", self._on_reset)
        if self.balancers is not None:
            await self.balancers.start()
        for instance_id, instance in list(self._cvm().state.instances.items()):
            if instance.state == "RUNNING":
                self._mark(instance_id)
        await self.settled()

    async def stop(self) -> None:
        """Close every listener and halt every guest."""
        await self.settled()
        await asyncio.gather(*(self._take_down(i) for i in list(self._up)), return_exceptions=True)
        await self.ssh.close()
        if self.guests is not None:
            await self.guests.stop()
        if self.balancers is not None:
            await self.balancers.stop()
        _PLANES.pop(self.cloud, None)
        if self._temporary_root:
            shutil.rmtree(self.root, ignore_errors=True)

    async def settled(self) -> None:
        """Wait until every server has converged to its instance's state (used at start, stop and by tests)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    # ---- events (synchronous, inside the event loop) -------------------------------------------
    def _cvm(self) -> Any:
        return self.cloud.backends["cvm"]

    def _on_instance_state(self, instance: Any, *_: Any) -> None:
        if instance.state != "RUNNING":
            # Refuse new SSH connections at once: the address may be handed to a new server right away.
            self.ssh.close_listeners(instance.instance_id)
            # Remember it: under the instant profile a reboot is back to RUNNING before we converge,
            # and its apps must still restart (re-reading their config) like on a real reboot.
            self._went_down.add(instance.instance_id)
        self._mark(instance.instance_id)

    def _on_image_creating(self, image: Any, instance: Any, *_: Any) -> None:
        # Synchronously, now: a write that lands after CreateImage must not be in the image.
        self.disks.snapshot(instance.instance_id, image.image_id, instance.platform)

    def _on_image_state(self, image: Any, *_: Any) -> None:
        if image.state == "CREATEFAILED":
            self.disks.remove_image(image.image_id)

    def _on_image_deleted(self, image: Any, *_: Any) -> None:
        self.disks.remove_image(image.image_id)

    def _on_reset(self, *_: Any) -> None:
        # Every instance is gone: stop listening now (their addresses are reused at once), wipe the files.
        for instance_id in list(self._up):
            self.ssh.close_listeners(instance_id)
            self._mark(instance_id)
        self.disks.wipe()

    def _mark(self, instance_id: str) -> None:
        self._changed.add(instance_id)
        if instance_id not in self._workers:
            self._workers[instance_id] = asyncio.get_running_loop().create_task(
                self._converge_while_changed(instance_id)
            )

    # ---- convergence ---------------------------------------------------------------------------
    async def _converge_while_changed(self, instance_id: str) -> None:
        try:
            while instance_id in self._changed:
                self._changed.discard(instance_id)
                try:
                    await self._converge(instance_id)
                except Exception as error:
                    log.exception("data plane: converging %s failed", instance_id)
                    self.errors.setdefault(instance_id, []).append(f"{type(error).__name__}: {error}")
        finally:
            self._workers.pop(instance_id, None)

    async def _converge(self, instance_id: str) -> None:
        instance = self._cvm().state.instances.get(instance_id)
        if instance is None:  # terminated (or the cloud was reset)
            await self._take_down(instance_id)
            self.disks.remove_disk(instance_id)
            self.ssh.forget_host_key(instance_id)
            self.errors.pop(instance_id, None)
            self._went_down.discard(instance_id)
            return
        if instance_id in self._went_down and instance_id in self._up:
            await self._take_down(instance_id)
        self._went_down.discard(instance_id)
        running = instance.state == "RUNNING"
        if running and instance_id not in self._up:
            await self._bring_up(instance)
        elif not running and instance_id in self._up:
            await self._take_down(instance_id)

    async def _bring_up(self, instance: Any) -> None:
        instance_id = instance.instance_id
        await self._released()
        errors: list[str] = []
        if not self.disks.has_disk(instance_id):
            disk = await asyncio.to_thread(self.disks.clone, instance.image_id, instance_id, instance.platform)
            keys = [k.public_key for i in instance.key_ids if (k := self._cvm().state.key_pairs.get(i))]
            self.disks.personalize(instance_id, getattr(instance, "host_name", instance_id), keys)
        disk = self.disks.disk(instance_id)
        guest = Guest(
            instance_id=instance_id,
            disk=disk,
            platform=instance.platform,
            private_ip=instance.private_ip,
            host_name=getattr(instance, "host_name", instance_id),
            control=lambda argv, cwd: self._control(instance_id, argv, cwd),
            port_map={port: self.ports.listen(port) for port in KNOWN_PORTS},
        )
        (disk / home_dir(instance.platform).lstrip("/")).mkdir(parents=True, exist_ok=True)
        if self.shell.mode == "namespace":
            self._controls[instance_id] = await self.shell.serve_control(guest)
        self._up.add(instance_id)
        errors += await self.ssh.start(guest, self.addresses(instance))
        if self.guests is not None:
            try:
                await self.guests.boot(instance, disk)
            except Exception as error:
                log.exception("data plane: booting the guests of %s failed", instance_id)
                errors.append(f"guests: {type(error).__name__}: {error}")
        self.errors[instance_id] = errors

    async def _take_down(self, instance_id: str) -> None:
        if instance_id not in self._up:
            return
        self._up.discard(instance_id)
        if self.guests is not None:
            try:
                await self.guests.halt(instance_id)
            except Exception:
                log.exception("data plane: halting the guests of %s failed", instance_id)
        await self.ssh.stop(instance_id)
        control = self._controls.pop(instance_id, None)
        if control is not None:
            control.close()
            with contextlib.suppress(Exception):
                await control.wait_closed()

    async def _released(self) -> None:
        """Wait for servers being removed to let go of their addresses (a new server may reuse one)."""
        current = asyncio.current_task()
        instances = self._cvm().state.instances
        leaving = [t for i, t in self._workers.items() if i not in instances and t is not current]
        if leaving:
            await asyncio.gather(*leaving, return_exceptions=True)

    async def _control(self, instance_id: str, argv: list[str], cwd: str) -> tuple[int, str]:
        """A service manager shim's call (pm2, systemctl, powershell), answered by the guest supervisor."""
        if self.guests is None:
            return 127, f"{argv[0] if argv else 'control'}: no guest supervisor in this sandbox\n"
        code, output = await self.guests.control(instance_id, argv, cwd)
        return int(code), str(output)

    # ---- views ---------------------------------------------------------------------------------
    @staticmethod
    def addresses(instance: Any) -> list[str]:
        return [a for a in (instance.private_ip, instance.public_ip) if a]

    def describe(self) -> list[dict[str, Any]]:
        """Every server the control plane knows, as `GET /_sandbox/servers` reports it."""
        from sandbox.dataplane.disks import login_user

        servers = []
        for instance_id, instance in self._cvm().state.instances.items():
            booted = self.disks.host_key_path(instance_id).exists()
            addresses = self.addresses(instance)
            server: dict[str, Any] = {
                "instance_id": instance_id,
                "state": instance.state,
                "platform": instance.platform,
                "private_ip": instance.private_ip,
                "public_ip": instance.public_ip,
                "addresses": addresses,
                "ssh_port": self.ssh_port,
                "ports": self.guests.port_table(instance_id) if self.guests is not None else {},
                "login_user": login_user(instance.platform),
                "ssh": "up" if self.ssh.is_up(instance_id) else "down",
                "disk": str(self.disks.disk(instance_id)) if self.disks.has_disk(instance_id) else None,
                "known_hosts": self.ssh.known_hosts(instance_id, addresses) if booted else [],
                "errors": list(self.errors.get(instance_id, [])),
            }
            if self.guests is not None and hasattr(self.guests, "status"):
                with contextlib.suppress(Exception):
                    server["guests"] = self.guests.status(instance_id)
            servers.append(server)
        return servers


import sandbox.dataplane.admin  # noqa: E402, F401  (registers GET /_sandbox/servers)
