"""Real ports and the ports the sandbox really listens on.

Everything the cloud models uses the REAL port: the apps' ports (node demo 5757, tomcat 8080, IIS and
mina_auth 80), CLB listener and backend ports, security-group rules. Only the socket layer translates:
a port the sandbox may not bind (below `ip_unprivileged_port_start`, usually 1024, when not root) is
served at another one, on every sandbox address alike (servers' fronts, CLB VIPs), and everything
that connects inside the sandbox (a balancer to its targets, an app to its authServerUrl, `curl` and
`Invoke-WebRequest` on a server) connects to the mapped port. `GET /_sandbox/servers` says per server
which real port is served where.

`SandboxConfig.app_port`, when set, is the port that stands for 80 (and the base of every port below
1024: p -> app_port - 80 + p), even when 80 could be bound, so concurrent sandboxes stay apart. When it
is not set, ports are real where bindable, else p -> 10000 + p (80 -> 10080).
"""

import os
from pathlib import Path

PRIVILEGED_LIMIT = 1024
UNMAPPED_BASE = 10000  # p -> 10000 + p when p cannot be bound and no app_port is configured


def unprivileged_start() -> int:
    """The lowest port this process may bind (0 for root)."""
    if os.geteuid() == 0:
        return 0
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return PRIVILEGED_LIMIT


class PortMap:
    """real port -> the port the sandbox listens on (and connects to) for it."""

    def __init__(self, http_port: int | None = None, start: int | None = None) -> None:
        self.http_port = http_port
        self.start = unprivileged_start() if start is None else start

    def listen(self, real: int) -> int:
        if self.http_port is not None and real < PRIVILEGED_LIMIT:
            return self.http_port - 80 + real
        if real < self.start:
            return UNMAPPED_BASE + real
        return real

    def table(self, reals: list[int]) -> dict[str, int]:
        """{"80": 10080, "5757": 5757} for the given real ports (JSON keys are strings)."""
        return {str(real): self.listen(real) for real in sorted(set(reals))}
