"""Per-action request rate limits, as the real API enforces them (default 20 requests/s)."""

import time
from collections import deque

from sandbox.core.errors import ApiError


class Throttle:
    """A one-second sliding window per (SecretId, service, action); rate 0 disables it."""

    def __init__(self, rate: int = 20) -> None:
        self.rate = rate
        self._windows: dict[tuple[str, str, str], deque[float]] = {}

    def check(self, secret_id: str, service: str, action: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        window = self._windows.setdefault((secret_id, service, action), deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.rate:
            raise ApiError(
                "RequestLimitExceeded",
                f"Your current request times equals to `{len(window) + 1}` in a second, which exceeds "
                f"the frequency limit `{self.rate}` for a second. Please reduce the frequency of calls.",
            )
        window.append(now)
