"""The Prometheus series `/metrics` serves (`admin.metrics`): request counters and histograms fed
by the usage writer's thread from the same records the usage table gets, so the request path does
no metric work at all; and the fleet's own figures (in flight, queued, worker memory, loads, load
time, evictions, crashes, per model), set from the supervisor's status at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from mlx_fleet.protocol import FleetStatus
from mlx_fleet.router.http.usage import UsageRecord

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RequestMetrics:
    """The per-request series, in a registry of their own (one per app, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlx_fleet_requests", "Requests by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("mlx_fleet_prompt_tokens", "Prompt (input) tokens", ["model"], registry=r)
        # The prompt cache's hit ratio is rate(cached) / rate(prompt) of these two.
        self.cached_tokens = Counter("mlx_fleet_cached_prompt_tokens",
                                     "Prompt tokens taken from the prompt cache instead of computed", ["model"],
                                     registry=r)
        self.completion_tokens = Counter("mlx_fleet_completion_tokens", "Completion (output) tokens", ["model"],
                                         registry=r)
        self.latency = Histogram("mlx_fleet_request_duration_seconds", "Whole request, first byte in to last out",
                                 ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("mlx_fleet_time_to_first_token_seconds", "Request start to its first token",
                              ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self.fleet = FleetCollector()
        r.register(self.fleet)

    def observe(self, batch: list[UsageRecord]) -> None:
        for rec in batch:
            model = rec.model or ""
            self.requests.labels(model, rec.endpoint, str(rec.status)).inc()
            if rec.prompt_tokens:
                self.prompt_tokens.labels(model).inc(rec.prompt_tokens)
                self.cached_tokens.labels(model).inc(rec.cached_tokens)
            if rec.completion_tokens:
                self.completion_tokens.labels(model).inc(rec.completion_tokens)
            self.latency.labels(model, rec.endpoint).observe(rec.latency_ms / 1000)
            ttft = rec.ttft_ms
            if ttft is not None:
                self.ttft.labels(model).observe(ttft / 1000)


class FleetCollector(Collector):
    """Gauges from the last supervisor status, which the scrape handler sets just before collecting."""

    def __init__(self) -> None:
        self.status: FleetStatus | None = None

    def collect(self):  # type: ignore[override]
        in_flight = GaugeMetricFamily("mlx_fleet_in_flight", "Requests a model's worker is running", labels=["model"])
        queued = GaugeMetricFamily("mlx_fleet_queued", "Requests waiting for a model (load or batch slot)",
                                   labels=["model"])
        memory = GaugeMetricFamily("mlx_fleet_worker_memory_bytes", "A model's worker, measured", labels=["model"])
        counters = {name: CounterMetricFamily(f"mlx_fleet_{name}", text, labels=["model"]) for name, text in (
            ("loads", "Models loaded"), ("load_failures", "Loads that failed"),
            ("evictions", "Workers ended or drained to make room or get back under the budget"),
            ("crashes", "Loaded workers that died or hung"))}
        load_time = SummaryMetricFamily("mlx_fleet_load_duration_seconds", "Time to load a model", labels=["model"])
        up = GaugeMetricFamily("mlx_fleet_supervisor_up", "1 when the supervisor answered this scrape")
        up.add_metric([], 0 if self.status is None else 1)
        for m in self.status.models if self.status is not None else ():
            in_flight.add_metric([m.id], m.in_flight)
            queued.add_metric([m.id], m.queued)
            memory.add_metric([m.id], m.memory.measured or 0)
            for name, family in counters.items():
                family.add_metric([m.id], getattr(m, name))
            load_time.add_metric([m.id], count_value=m.loads, sum_value=m.load_seconds_total)
        yield from (in_flight, queued, memory, *counters.values(), load_time, up)
