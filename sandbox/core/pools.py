"""Which /16 of 127.0.0.0/8 this sandbox hands out as public addresses (instances' public IPs, OPEN CLB VIPs).

Two sandboxes on one machine (two pytest runs, a demo beside a test run) share the loopback
interface: with the same public pool their OPEN CLBs would get the same VIPs and their listeners
would collide. Unless `SandboxConfig.public_pool` names one, a process claims the first free /16
of `CANDIDATES` (127.100.0.0/16 first, so the documented default holds for a lone sandbox) by
taking an exclusive `flock` on a lock file per /16 under the temp directory, held for the life of
the process (the kernel releases it when the process ends, however it ends). The seed claims the
private /16 of the guide's VPC the same way (`claim`).
"""

import fcntl
import ipaddress
import os
import tempfile
import threading
from pathlib import Path
from typing import IO

DEFAULT_POOL = "127.100.0.0/16"
CANDIDATES = [f"127.{second}.0.0/16" for second in range(100, 150)]
LOCK_DIR = Path(tempfile.gettempdir()) / "tcscale-sandbox-pools"

_held: dict[str, IO[bytes]] = {}  # /16 -> its lock file, held for the life of the process
_public: str | None = None
_lock = threading.Lock()


def claim(network: str) -> bool:
    """Hold `network` (a /16) for this process, unless another process on this machine holds it."""
    with _lock:
        if network in _held:
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
        return True


def process_public_pool() -> str:
    """The /16 this process holds (claimed on first use); RuntimeError when every candidate is taken."""
    global _public
    if _public is None:
        _public = next((pool for pool in CANDIDATES if claim(pool)), None)
        if _public is None:
            raise RuntimeError(
                f"every public pool candidate ({CANDIDATES[0]} ... {CANDIDATES[-1]}) is held by a sandbox"
            )
    return _public


def parse_pool(pool: str) -> ipaddress.IPv4Network:
    network = ipaddress.IPv4Network(pool)
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) or network.prefixlen > 24:
        raise ValueError(f"the public pool {pool} must be a /24 or larger inside 127.0.0.0/8")
    return network
