"""The bridge's "busy" answer follows the tier lock itself: a held lock is busy whatever the UI did to its limit."""

import asyncio

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from chatops import runs
from flows.shared.tier_lock import limit_name, tier_lock


def test_a_held_tier_is_busy_even_with_its_limit_switched_off(prefect_harness: None) -> None:
    with tier_lock("business"):
        with get_client(sync_client=True) as client:
            client.update_global_concurrency_limit(limit_name("business"), GlobalConcurrencyLimitUpdate(active=False))
        why = asyncio.run(runs.busy("business"))
        assert why is not None and "tcscale-scale-business" in why and "taken" in why
    assert asyncio.run(runs.busy("business")) is None
