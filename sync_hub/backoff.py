"""Back-off: how long to wait before talking to central again after it failed.

Exponential with jitter, so that the hubs of a country do not all return at the same second
after an outage of central, and capped, so that a hub offline for days tries again within
minutes of central's return. Central's ``Retry-After`` is a floor.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from sync_hub.errors import CentralUnavailable

T = TypeVar("T")

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0


class Backoff:
    """Exponential back-off with jitter, capped; central's Retry-After is a floor."""

    def __init__(
        self,
        *,
        base: float = BACKOFF_BASE_SECONDS,
        cap: float = BACKOFF_CAP_SECONDS,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        # Jitter spreads the retries of many hubs after one outage of central; it protects
        # nothing secret, so the system's random source is plenty.
        self._uniform = uniform or random.SystemRandom().uniform

    def next_delay(self, retry_after: float | None = None) -> float:
        """Seconds to wait after one more failure in a row."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 30))
        delay = ceiling / 2 + self._uniform(0.0, ceiling / 2)
        return max(delay, retry_after) if retry_after is not None else delay

    def reset(self) -> None:
        self.failures = 0


def retrying(
    step: Callable[[], T],
    *,
    attempts: int,
    sleep: Callable[[float], None],
    backoff: Backoff | None = None,
    on_retry: Callable[[CentralUnavailable, float], None] | None = None,
) -> T:
    """Run ``step``; while central is unavailable, wait a back-off and run it again, up to
    ``attempts`` runs in all. Raises the last CentralUnavailable; any other error at once."""
    backoff = backoff or Backoff()
    while True:
        try:
            return step()
        except CentralUnavailable as exc:
            if backoff.failures + 1 >= attempts:
                raise
            delay = backoff.next_delay(exc.retry_after)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
