"""Which /16 of 127.0.0.0/8 this sandbox hands out as public addresses (instances' public IPs, OPEN CLB VIPs).

Two sandboxes on one machine (two pytest runs, `tcscale up` beside a test run, two embedded sandboxes
in one process) share the loopback interface: with the same public pool their OPEN CLBs would get the
same VIPs and their servers' listeners would collide (the second seed answered 500: EADDRINUSE).
Unless `SandboxConfig.public_pool` names one, each sandbox (each `Cloud`) claims the first free /16
of `CANDIDATES` (127.100.0.0/16 first, so the documented default holds for a lone sandbox):
- across processes, by an exclusive `flock` on a lock file per /16 under the temp directory, held for
  the life of the process (the kernel releases it when the process ends, however it ends);
- inside one process, by recording the sandbox that uses it (a weak reference: a sandbox that is gone
  frees its /16 for the next one of this process).
The seed claims the private /16 of the guide's VPC the same way (`claim(network, owner)`).
"""

import atexit
import fcntl
import gc
import ipaddress
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import IO

DEFAULT_POOL = "127.100.0.0/16"
CANDIDATES = [f"127.{second}.0.0/16" for second in range(100, 150)]
LOCK_DIR = Path(tempfile.gettempdir()) / "tcscale-sandbox-pools"

_held: dict[str, IO[bytes]] = {}  # /16 -> its lock file, held for the life of the process
_users: dict[str, weakref.ref[object]] = {}  # /16 -> the sandbox of this process that uses it
_lock = threading.Lock()


@atexit.register
def _close_held() -> None:
    """Close the held lock files at exit (the kernel would release them anyway; this spares the ResourceWarning)."""
    for handle in _held.values():
        handle.close()


def claim(network: str, owner: object | None = None) -> bool:
    """Hold `network` (a /16) for `owner` (a sandbox), unless another process on this machine or another
    live sandbox of this process holds it."""
    with _lock:
        user = _users.get(network)
        current = user() if user is not None else None
        if owner is not None and current is not None and current is not owner:
            return False
        if network in _held:
            if owner is not None:
                _users[network] = weakref.ref(owner)
            return True
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        handle = open(LOCK_DIR / f"{network.replace('/', '_')}.lock", "ab")  # noqa: SIM115 (held for the process)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        _held[network] = handle
        if owner is not None:
            _users[network] = weakref.ref(owner)
        return True


def public_pool_for(owner: object) -> str:
    """The first candidate /16 no other sandbox (of any process on this machine) holds, now held by `owner`.

    RuntimeError, saying so, when every candidate is taken."""
    for attempt in range(2):
        pool = next((pool for pool in CANDIDATES if claim(pool, owner)), None)
        if pool is not None:
            return pool
        if attempt == 0:
            gc.collect()  # sandboxes of this process that are gone but not yet collected free theirs
    raise RuntimeError(
        f"every public pool candidate ({CANDIDATES[0]} ... {CANDIDATES[-1]}) is held by another sandbox on this "
        "machine: stop one, or name a free /16 of 127.0.0.0/8 (SandboxConfig.public_pool, --public-pool)"
    )


def parse_pool(pool: str) -> ipaddress.IPv4Network:
    network = ipaddress.IPv4Network(pool)
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) or network.prefixlen > 24:
        raise ValueError(f"the public pool {pool} must be a /24 or larger inside 127.0.0.0/8")
    return network
