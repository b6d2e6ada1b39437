"""Loaded by every Python process the tests start (tests/conftest.py puts this folder first on PYTHONPATH; Python
imports `sitecustomize` at startup): Prefect servers, workers, flow runs, the CLI, `tcscale up`. Tests only.

`zoneinfo.available_timezones()` walks the zoneinfo folder (~600 files, ~35 ms here), and Python's docs advise caching
it. Prefect 3.8.8 calls it at every validation of a cron schedule, on the server and in the client alike: 5 of the 20
busy seconds of the test server behind one plan-capacity test. Each process here lists the time zones once; the list
cannot change during a test run. A fresh set each call, as zoneinfo gives.
"""

import functools
import zoneinfo

_listed = functools.cache(zoneinfo.available_timezones)


def _available_timezones() -> set[str]:
    return set(_listed())


zoneinfo.available_timezones = _available_timezones
