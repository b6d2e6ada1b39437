"""Who held a tier, read where the servers keep it: the concurrency leases in the shared Redis.

The rehearsal's lock-hold intervals come from the runs' own `prefect.concurrency-limit.acquired/released` events;
a run whose events client was cut off by the lost server (Prefect 3.8.8 takes a connection dropped during the
events WebSocket's auth handshake for a refused token and stops sending that run's events) leaves none. This
watcher does not depend on the runs: it samples the leases in Redis (prefect_redis.lease_storage's keys: a sorted
set of lease ids by expiry, one JSON document per lease naming the limits it holds) every SAMPLE_SECONDS, and
keeps when each lease was first and last seen, per limit id. Two leases of one tier seen at once is a tier held
twice; a lease still there at the end is a tier left locked.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

SAMPLE_SECONDS = 0.25
EXPIRATIONS = "prefect:concurrency:expirations"
LEASE = "prefect:concurrency:lease:{}"


@dataclass
class Seen:
    limit_ids: list[str]
    first: datetime
    last: datetime


class LeaseWatch:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
        self.leases: dict[str, Seen] = {}
        self.overlaps: list[str] = []  # limit ids held by two leases in one sample
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, list[str]]:
        """The live leases now: {limit id: [lease ids]}."""
        now = datetime.now(UTC)
        held: dict[str, list[str]] = {}
        for lease_id in self.client.zrangebyscore(EXPIRATIONS, now.timestamp(), "+inf"):
            document = self.client.get(LEASE.format(lease_id))
            if document is None:  # released between the two reads
                continue
            limit_ids = json.loads(document)["resource_ids"]
            seen = self.leases.setdefault(lease_id, Seen(limit_ids, now, now))
            seen.last = now
            for limit_id in limit_ids:
                held.setdefault(limit_id, []).append(lease_id)
        self.overlaps += [limit_id for limit_id, ids in held.items() if len(ids) > 1]
        return held

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                self.sample()
            except (redis.RedisError, ValueError, KeyError) as error:
                self.error = f"{type(error).__name__}: {error}"

    def stop(self) -> dict[str, list[str]]:
        """Stop sampling; the leases still live at the end."""
        self._stop.set()
        self._thread.join()
        held = self.sample()
        self.client.close()
        return held

    def holds(self, limit_id: str) -> list[tuple[datetime, datetime]]:
        """When each lease of the limit was seen, first to last, in order."""
        return sorted((s.first, s.last) for s in self.leases.values() if limit_id in s.limit_ids)
