"""Fault injection, like LocalStack's chaos API: rules matched per request by service and action.

A rule can add latency, answer with an HTTP status, answer with an API error, let the request succeed while the
asynchronous operation it starts ends in its failed state (a CREATEFAILED image, a LAUNCH_FAILED server, a CLB task
with status 1), or restart the API endpoint (`outage_ms`). It fires with a probability, or for the first `count`
matching requests only, or only once another rule has fired (`after`: a fault during the undo of a run that failed on
the first), or only after its first `skip` matches went through (the third RegisterTargets of a run: `skip` 2,
`count` 1).
"""

import random
from collections.abc import Callable

from pydantic import BaseModel, Field

from sandbox.core.ids import new_id


class FaultRule(BaseModel):
    id: str = Field(default_factory=lambda: new_id("fault"))
    service: str | None = Field(None, description="cvm, clb, vpc, as; None matches every service")
    action: str | None = Field(None, description="API action; None matches every action")
    error_code: str | None = None
    error_message: str = "Injected fault."
    http_status: int | None = Field(None, ge=400, le=599)
    latency_ms: int = Field(0, ge=0)
    async_failure: str | None = Field(
        None, description="the request succeeds; the operation it starts fails with this message"
    )
    lose_answer: bool = Field(
        False,
        description="the request takes effect, then its answer is lost (HTTP 502; after latency_ms): a create that "
        "succeeded",
    )
    outage_ms: int = Field(
        0,
        ge=0,
        description="the API endpoint restarts when the request arrives: every open connection is dropped (this "
        "request's too: with `lose_answer` it takes effect first, else never), new ones are refused for outage_ms, "
        "then the same port answers again, the cloud as it was (its servers and balancers run on)",
    )
    probability: float = Field(1.0, ge=0, le=1)
    count: int | None = Field(None, ge=1, description="fire for the first N matches only")
    after: str | None = Field(
        None, description="the id of another rule: fire only once that one has fired (a fault during an undo)"
    )
    skip: int = Field(0, ge=0, description="let the first N matches through untouched, then fire")
    fired: int = 0
    seen: int = 0  # matches so far (those let through by `skip` included)

    def matches(self, service: str, action: str) -> bool:
        return (self.service in (None, service)) and (self.action in (None, action))


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def pick(self, service: str, action: str, only: Callable[[FaultRule], bool] | None = None) -> list[FaultRule]:
        """The rules that fire for this request (each counted as fired); `only` narrows which rules are asked."""
        fired = []
        armed = {rule.id for rule in self.rules if rule.fired}
        for rule in self.rules:
            if not rule.matches(service, action) or (only is not None and not only(rule)):
                continue
            if rule.after is not None and rule.after not in armed:
                continue
            rule.seen += 1
            if rule.seen <= rule.skip:
                continue
            if rule.count is not None and rule.fired >= rule.count:
                continue
            if self._random.random() >= rule.probability:
                continue
            rule.fired += 1
            fired.append(rule)
        return fired
