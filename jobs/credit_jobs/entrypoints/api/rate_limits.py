"""Rate limits for the API, on the `limits` library (moving windows in process memory).

Called for every protected request, in this order: the global limit and the failed-authentication budget by the
request gate (`gate.admit`; the budget is kept per client address and claimed principal: one that keeps failing is
answered `429` before its credentials are even checked), then the authenticated principal's own limit
(`app.require`). A refusal carries the
seconds until the window frees a slot, for `Retry-After`. One API process holds its own counters: with several
replicas each enforces its limits separately (docs/api.md, "Rate limits").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class Refusal:
    scope: str  # global | client | auth_failures
    retry_after: int  # whole seconds, at least 1


class RateLimits:
    def __init__(self, global_limit: RateLimitItem, client: RateLimitItem, auth_failures: RateLimitItem) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._global = global_limit
        self._client = client
        self._auth_failures = auth_failures

    def _refusal(self, item: RateLimitItem, key: str, scope: str) -> Refusal:
        reset_at = self._limiter.get_window_stats(item, scope, key).reset_time
        return Refusal(scope, max(1, math.ceil(reset_at - time.time())))

    def hit_global(self) -> Refusal | None:
        return (
            None if self._limiter.hit(self._global, "global", "all") else self._refusal(self._global, "all", "global")
        )

    def auth_failures_exhausted(self, key: str) -> Refusal | None:
        """Refused when `key` (client address and claimed principal) has used up its failed-authentication budget
        (does not count this request)."""
        if self._limiter.test(self._auth_failures, "auth_failures", key):
            return None
        return self._refusal(self._auth_failures, key, "auth_failures")

    def record_auth_failure(self, key: str) -> None:
        self._limiter.hit(self._auth_failures, "auth_failures", key)

    def hit_client(self, principal: str) -> Refusal | None:
        if self._limiter.hit(self._client, "client", principal):
            return None
        return self._refusal(self._client, principal, "client")
