"""Admission control: a bounded number of requests per model and in all, refused before any stream.

The router is the one place every request passes, so it counts them here: in flight plus queued
(waiting for a load or a batch slot). Beyond the per-model limit a request gets 429 with
Retry-After at once; beyond the global limit, or while the server drains for shutdown, 503.
"""

from __future__ import annotations

import collections

from mlx_fleet.router.http.errors import ApiError


class Admission:
    def __init__(self, per_model: int, total: int, retry_after: float = 1.0) -> None:
        self.per_model, self.total, self.retry_after = per_model, total, retry_after
        self.open: collections.Counter[str] = collections.Counter()
        self.count = 0
        self.draining = False

    def enter(self, model: str) -> None:
        if self.draining:
            raise ApiError(503, "The server is shutting down.", code="shutting_down", retry_after=5)
        if self.open[model] >= self.per_model:
            raise ApiError(429, f"Too many concurrent requests for model '{model}' (limit {self.per_model}); "
                                f"retry after {self.retry_after:g} s.", code="rate_limit_exceeded",
                           retry_after=self.retry_after)
        if self.count >= self.total:
            raise ApiError(503, f"The server is busy ({self.total} requests open).", code="server_busy",
                           retry_after=self.retry_after)
        self.open[model] += 1
        self.count += 1

    def leave(self, model: str) -> None:
        self.open[model] -= 1
        self.count -= 1
        if not self.open[model]:
            del self.open[model]
