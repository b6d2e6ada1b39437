"""What the rehearsal reads back from the Prefect API, and the checks it makes on it.

Everything comes from the server, as an operator would see it: each flow run's state and times
(`GET /flow_runs/{id}`), the worker that ran it (the worker's own `prefect.worker.submitted-flow-run`
event, whose resource is the worker and whose related resources name the flow run), when the run held
its tier's lock (`prefect.concurrency-limit.acquired` / `.released` events of the global concurrency limit
`tcscale-scale-<tier>`, emitted from inside the flow run, so related to it), and each tier limit's active slots
(`/v2/concurrency_limits/filter`); plus the round-robin's own counts of connections per Prefect server.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tasks.waiters import wait_until

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
RAN = {"COMPLETED", "FAILED", "CRASHED"}
EVENTS = [
    "prefect.worker.submitted-flow-run",
    "prefect.concurrency-limit.acquired",
    "prefect.concurrency-limit.released",
]
# How a change sent while its tier is taken may end, by design: the bridge replies busy, or the run is queued, or
# it gives up waiting for the tier's lock (TierBusy), or the deployment's own limit cancels it (CANCEL_NEW).
BUSY_WORDS = ("busy", "TierBusy", "queued", "concurrency limit reached")
UNDO_INCOMPLETE = "undo incomplete"  # flows/shared/tier_run.py's note on a failed run whose undo did not finish
TIER_LIMIT_PREFIX = "tcscale-scale-"


@dataclass
class Command:
    text: str
    tier: str
    changes: bool = False  # not a dry run: takes the tier's lock, so it may find the tier busy (refused or queued)
    answer: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None


@dataclass
class RunFacts:
    command: Command
    name: str = ""
    state: str = ""
    message: str = ""
    start: datetime | None = None
    end: datetime | None = None
    worker: str | None = None
    locks: list[tuple[datetime, datetime | None]] = field(default_factory=list)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _api(api_url: str, auth: str) -> httpx.Client:
    user, _, password = auth.partition(":")
    return httpx.Client(base_url=api_url, auth=(user, password) if auth else None, timeout=10)


def _events(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "event": {"name": EVENTS},
            "order": "ASC",
        },
        "limit": 50,
    }
    answer = api.post("/events/filter", json=body)
    answer.raise_for_status()
    return answer.json()["events"]


def _read(api: httpx.Client, command: Command) -> RunFacts:
    facts = RunFacts(command)
    if command.run_id is None:
        return facts
    run = api.get(f"/flow_runs/{command.run_id}")
    run.raise_for_status()
    data = run.json()
    state = data.get("state") or {}
    facts.name, facts.state, facts.message = data["name"], state.get("type", ""), state.get("message") or ""
    facts.start, facts.end = _time(data.get("start_time")), _time(data.get("end_time"))
    acquired: datetime | None = None
    for event in _events(api, command.run_id):
        when = _time(event["occurred"])
        if event["event"] == "prefect.worker.submitted-flow-run":
            facts.worker = event["resource"].get("prefect.resource.name")
        elif not event["resource"].get("prefect.resource.name", "").startswith("tcscale-scale-"):
            continue
        elif event["event"].endswith(".acquired"):
            acquired = when
        elif acquired is not None:
            facts.locks.append((acquired, when))
            acquired = None
    if acquired is not None:
        facts.locks.append((acquired, None))
    return facts


def collect(
    api_url: str, auth: str, commands: list[Command], failed: Callable[[Any], str | None], timeout: float = 900.0
) -> list[RunFacts]:
    """Wait until every run is final and its events are stored (the server persists events in batches)."""
    with _api(api_url, auth) as api:

        def read_all() -> list[RunFacts]:
            return [_read(api, command) for command in commands]

        def settled(facts: list[RunFacts]) -> bool:
            ran = [f for f in facts if f.command.run_id]
            ran_on_a_worker = [f for f in ran if f.state in RAN]  # a run cancelled before a worker took it has none
            return all(f.state in FINAL for f in ran) and all(f.worker for f in ran_on_a_worker)

        print(f"\nwaiting for {sum(1 for c in commands if c.run_id)} runs to finish ...", flush=True)
        return wait_until(read_all, done=settled, failed=failed, what="every run final", timeout=timeout, max_delay=5.0)


def _tier_limits(api_url: str, auth: str) -> dict[str, dict[str, Any]]:
    with _api(api_url, auth) as api:
        answer = api.post("/v2/concurrency_limits/filter", json={"offset": 0, "limit": 100})
        answer.raise_for_status()
    found = answer.json()
    return {
        limit["name"].removeprefix(TIER_LIMIT_PREFIX): limit
        for limit in found
        if limit["name"].startswith(TIER_LIMIT_PREFIX)
    }


def tier_slots(api_url: str, auth: str) -> dict[str, int]:
    """Each tier limit's active slots (1: a run holds the tier), by tier."""
    return {tier: int(limit["active_slots"]) for tier, limit in _tier_limits(api_url, auth).items()}


def tier_limit_ids(api_url: str, auth: str) -> dict[str, str]:
    """Each tier limit's id (what its leases name), by tier."""
    return {tier: str(limit["id"]) for tier, limit in _tier_limits(api_url, auth).items()}


def runs_in_flight(api_url: str, auth: str, commands: list[Command]) -> list[str]:
    """The names of the commands' runs that are not final yet."""
    with _api(api_url, auth) as api:
        facts = [_read(api, command) for command in commands if command.run_id]
    return [f"{f.name} ({f.state.lower()})" for f in facts if f.state not in FINAL]


def balancer_counts(stats: Path) -> dict[str, dict[str, int]]:
    """The round-robin's counts per Prefect server: {name: {forwarded, refused}}."""
    try:
        backends = json.loads(stats.read_text())["backends"]
    except (OSError, ValueError, KeyError):
        return {}
    return {b["name"]: {"forwarded": b["forwarded"], "refused": b["refused"]} for b in backends}


def check_failover(
    killed_at: datetime | None,
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    servers: tuple[str, ...],
) -> list[str]:
    """One server was killed mid-run; both served clients before; only the other one after."""
    failures = [] if killed_at else ["no Prefect server was killed while a change ran"]
    for name in servers:
        was, now = before.get(name, {}), after.get(name, {})
        print(f"{name}: {was.get('forwarded', 0)} connections before the commands, {now.get('forwarded', 0)} in all, "
              f"{now.get('refused', 0)} refused (dead)")  # fmt: skip
        if not was.get("forwarded"):
            failures.append(f"{name} served no connection before the kill: the round-robin did not spread the load")
    return failures


def check_tiers_free(api_url: str, auth: str, commands: list[Command]) -> list[str]:
    """No tier is left locked once every run is final."""
    slots = tier_slots(api_url, auth)
    print("final active slots: " + ", ".join(f"{tier} {n}" for tier, n in sorted(slots.items())))
    return [
        f"the {tier} tier is left locked ({slots.get(tier)} active slots of {TIER_LIMIT_PREFIX}{tier})"
        for tier in sorted({c.tier for c in commands if c.changes})
        if slots.get(tier, 0) != 0
    ]


def _clock(value: datetime | None) -> str:
    return value.strftime("%H:%M:%S.%f")[:-5] if value else "-"


def _why(f: RunFacts) -> str:
    """The gist of a state message: 'Flow run encountered an exception: TierBusy: another ...' -> 'TierBusy: ...'."""
    message = f.message.removeprefix("Flow run encountered an exception: ") or str(f.command.answer.get("text", ""))
    return message if len(message) <= 60 else message[:57] + "..."


def print_report(facts: list[RunFacts]) -> None:
    rows = [
        {
            "#": str(number),
            "command": f.command.text,
            "tier": f.command.tier,
            "flow run": f.name or "(none)",
            "worker": f.worker or "-",
            "state": f.state or str(f.command.answer.get("status", "-")),
            "start": _clock(f.start),
            "end": _clock(f.end),
            "tier lock held (UTC)": ", ".join(f"{_clock(a)}-{_clock(r)}" for a, r in f.locks) or "-",
            "why not completed": "" if f.state == "COMPLETED" else _why(f),
        }
        for number, f in enumerate(facts, 1)
    ]
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    print("\n" + "  ".join(key.ljust(w) for key, w in widths.items()))
    print("  ".join("-" * w for w in widths.values()))
    for row in rows:
        print("  ".join(row[key].ljust(w) for key, w in widths.items()))
    print()


def _busy(f: RunFacts) -> bool:
    said = f"{f.message} {f.command.answer}"
    return f.command.changes and any(word.lower() in said.lower() for word in BUSY_WORDS)


def _undone(f: RunFacts) -> bool:
    """A change that failed and undid everything it had done (its undo finished: no "undo incomplete" note)."""
    return f.command.changes and f.state == "FAILED" and UNDO_INCOMPLETE not in f.message


Holds = dict[str, list[tuple[datetime, datetime]]]  # per tier: when each of its leases was seen in Redis


def check(facts: list[RunFacts], commands: list[Command], workers: tuple[str, ...], leases: Holds) -> list[str]:
    """Every failed check, in words (empty: all held)."""
    failures: list[str] = []
    # 1. No command lost: each has a run in a final state, Completed unless refused or queued as designed, or a
    #    change that failed and undid what it had done.
    for number, f in enumerate(facts, 1):
        if f.command.run_id is None and not _busy(f):
            failures.append(f"command {number} ({f.command.text!r}) created no run: {f.command.answer}")
        elif f.command.run_id and f.state != "COMPLETED" and not (_busy(f) or _undone(f)):
            failures.append(f"command {number} ({f.command.text!r}): run {f.name} ended {f.state}: {f.message}")
    ran = [f for f in facts if f.command.run_id]
    completed = sum(f.state == "COMPLETED" for f in ran)
    refused = sum(_busy(f) and f.state != "COMPLETED" for f in facts)
    undone = sum(_undone(f) and not _busy(f) for f in ran)
    print(f"runs: {len(ran)} for {len(commands)} commands; completed {completed}, undone {undone}, refused as busy "
          f"{refused}, other {len(facts) - completed - undone - refused}")  # fmt: skip
    # 2. The runs spread over every worker.
    used = {f.worker for f in ran if f.worker}
    print(f"workers used: {', '.join(sorted(used)) or 'none'}")
    if set(workers) - used:
        failures.append(f"no run went to {', '.join(sorted(set(workers) - used))} (used: {sorted(used)})")
    # 3. Per-tier serialisation: the lock intervals of one tier never overlap; every run that changed something
    #    held its tier's lock.
    for tier in sorted({c.tier for c in commands}):
        held = sorted((a, r, f.name) for f in ran if f.command.tier == tier for a, r in f.locks)
        overlaps = [
            f"{tier} tier: {second} took the lock at {_clock(second_acquire)} while {first} held it "
            f"(released {_clock(first_release)})"
            for (_, first_release, first), (second_acquire, _, second) in itertools.pairwise(held)
            if first_release is None or second_acquire < first_release
        ]
        failures += overlaps
        print(f"{tier} tier: {len(held)} lock holds, {'OVERLAPPING' if overlaps else 'never two at once'}")
    for tier in sorted({c.tier for c in commands if c.changes}):
        if not any(f.command.changes and f.command.tier == tier and f.state == "COMPLETED" for f in ran):
            failures.append(f"no change on the {tier} tier completed (every one refused or failed)")
    for f in ran:
        if not (f.command.changes and f.state == "COMPLETED" and not f.locks):
            continue
        if any(
            f.start and f.end and f.start <= first and last <= f.end for first, last in leases.get(f.command.tier, [])
        ):
            print(f"{f.name}: its lock events were lost (its events client was cut off by the killed server); "
                  f"its hold is in Redis, inside the run")  # fmt: skip
        else:
            failures.append(f"{f.name} ({f.command.text!r}) completed without a hold of its tier's lock")
    return failures


def check_leases(leases: Holds, overlapping: set[str], left: set[str], facts: list[RunFacts]) -> list[str]:
    """The servers' own record (Redis): no tier held by two leases at once, none held at the end; and the watch saw
    at least the holds the runs' events recorded (else it watches the wrong keys)."""
    failures = [f"the {tier} tier was held by two leases at once (Redis)" for tier in sorted(overlapping)]
    failures += [f"the {tier} tier is still leased at the end (Redis)" for tier in sorted(left)]
    for tier in sorted({f.command.tier for f in facts}):
        recorded = sum(len(f.locks) for f in facts if f.command.tier == tier)
        if len(leases.get(tier, [])) < recorded:
            failures.append(
                f"{tier} tier: {recorded} holds in the runs' events but {len(leases.get(tier, []))} in Redis"
            )
    for tier, holds in sorted(leases.items()):
        spans = ", ".join(f"{_clock(first)}-{_clock(last)}" for first, last in holds) or "-"
        verdict = "TWO AT ONCE" if tier in overlapping else "never two at once"
        print(f"{tier} tier in Redis: {len(holds)} lease(s) {spans}; {verdict}")
    return failures
