"""From a day's forecast load to a few capacity steps: servers per slot, launched ahead, within the bounds, merged.

- servers needed in a slot = ceil(forecast load / one server's load at the target CPU), within [min, max];
- launched ahead: each slot holds the most any slot in the next `lead` minutes needs (the tier's measured
  launch-to-healthy time plus a margin), so the servers of a rising step are healthy when the load arrives; a
  falling step waits for the load to fall (scale-in is at once);
- merged: a dip shorter than `min_dip_minutes` is filled (a scale-in followed soon by a launch saves little and
  risks the launch), then the cheapest step is raised into its neighbour until at most `max_steps` remain. Steps
  only ever go up while merging: the plan never has fewer servers than the forecast needs.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from flows.capacity_plan_steps.forecast import SLOT_MINUTES, SLOTS_PER_DAY


class CapacityStep(BaseModel):
    minute: int = Field(ge=0, lt=24 * 60, description="when the step fires, minutes after 00:00 Beijing time")
    servers: int = Field(ge=0)

    def at(self) -> str:
        return f"{self.minute // 60:02d}:{self.minute % 60:02d}"


def servers_needed(forecast: list[float], per_server: float, min_size: int, max_size: int) -> list[int]:
    """Servers for each slot's forecast load, `per_server` being one server's load at the target CPU."""
    if per_server <= 0:
        raise ValueError(f"one server's load at the target CPU must be positive, not {per_server}")
    return [min(max(math.ceil(load / per_server - 1e-9), min_size), max_size) for load in forecast]


def ahead(needed: list[int], lead_minutes: int) -> list[int]:
    """Each slot raised to the most needed over the next `lead_minutes` (rounded up to whole slots), within the day."""
    reach = math.ceil(lead_minutes / SLOT_MINUTES)
    return [max(needed[s : s + reach + 1]) for s in range(len(needed))]


def _segments(per_slot: list[int]) -> list[list[int]]:
    """[start slot, servers, length in slots] of each run of equal values."""
    runs: list[list[int]] = []
    for slot, servers in enumerate(per_slot):
        if runs and runs[-1][1] == servers:
            runs[-1][2] += 1
        else:
            runs.append([slot, servers, 1])
    return runs


def _coalesce(runs: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for run in runs:
        if out and out[-1][1] == run[1]:
            out[-1][2] += run[2]
        else:
            out.append(list(run))
    return out


def _raise_cost(runs: list[list[int]], i: int) -> tuple[float, int]:
    """(server-slots it costs, the value) to raise run i into its lower-higher neighbour; inf when a local peak."""
    higher = [runs[j][1] for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j][1] > runs[i][1]]
    if not higher:
        return math.inf, runs[i][1]
    to = min(higher)
    return (to - runs[i][1]) * runs[i][2], to


def merge(per_slot: list[int], max_steps: int = 8, min_dip_minutes: int = 60) -> list[CapacityStep]:
    runs = _segments(per_slot)
    dip = math.ceil(min_dip_minutes / SLOT_MINUTES)
    changed = True
    while changed:  # short dips between higher neighbours are filled
        changed = False
        for i in range(1, len(runs) - 1):
            if runs[i][2] < dip and runs[i - 1][1] > runs[i][1] < runs[i + 1][1]:
                runs[i][1] = min(runs[i - 1][1], runs[i + 1][1])
                changed = True
        runs = _coalesce(runs)
    while len(runs) > max(max_steps, 1):
        costs = [_raise_cost(runs, i) for i in range(len(runs))]
        cheapest = min(range(len(runs)), key=lambda i: costs[i][0])
        runs[cheapest][1] = costs[cheapest][1]
        runs = _coalesce(runs)
    return [CapacityStep(minute=start * SLOT_MINUTES, servers=servers) for start, servers, _ in runs]


def plan_day(
    forecast: list[float],
    per_server: float,
    lead_minutes: int,
    min_size: int,
    max_size: int,
    max_steps: int = 8,
    min_dip_minutes: int = 60,
) -> list[CapacityStep]:
    """The day's capacity steps (the first at 00:00): servers for the forecast, ahead by the lead, merged."""
    if len(forecast) != SLOTS_PER_DAY:
        raise ValueError(f"a day's forecast has {SLOTS_PER_DAY} slots, not {len(forecast)}")
    needed = servers_needed(forecast, per_server, min_size, max_size)
    return merge(ahead(needed, lead_minutes), max_steps, min_dip_minutes)


def servers_at(steps: list[CapacityStep], minute: int) -> int:
    """The planned servers at a minute of the day."""
    current = steps[0].servers
    for step in steps:
        if step.minute <= minute:
            current = step.servers
    return current


def server_hours(steps: list[CapacityStep]) -> float:
    return sum(servers_at(steps, m) for m in range(0, 24 * 60, SLOT_MINUTES)) * SLOT_MINUTES / 60
