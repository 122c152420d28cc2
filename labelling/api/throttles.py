"""Per-token request rates: fairness between pipelines, not a security boundary."""

from __future__ import annotations

import time

from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from labelling.models import ApiToken

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """Requests and window seconds of a rate such as 36000/hour, read as DRF reads rates."""
    count, period = rate.split("/")
    return int(count), PERIODS[period[0]]


class TokenRateThrottle(BaseThrottle):
    """At most `DEFAULT_THROTTLE_RATES["token"]` requests per token and window.

    A fixed-window counter (one atomic `incr` per request) rather than DRF's sliding window,
    which reads and rewrites a list of every request's timestamp on each call. Browser
    sessions are not limited here. The count lives in Django's cache: one per process
    unless CACHES points at a shared cache.
    """

    scope = "token"

    def allow_request(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        if not rate:
            return True
        limit, period = parse_rate(rate)
        now = time.time()
        window = int(now // period)
        self._wait = period - (now - window * period)
        key = f"throttle:{self.scope}:{token.pk}:{window}"
        cache.add(key, 0, timeout=period + 5)
        try:
            count = cache.incr(key)
        except ValueError:  # evicted between add and incr: start the window again
            cache.set(key, 1, timeout=period + 5)
            count = 1
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
