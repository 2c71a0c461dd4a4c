"""Prometheus metrics for one hub app: calls, errors, latency per server and tool, restarts, server state.

Each app gets its own registry (several hubs can live in one process: instances, tests). prometheus_client
(~0.6 MiB) is imported at the first count or scrape, not by a hub at rest (tests/test_cost_fences.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sized
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerGauges(Protocol):
    """What the per-server gauges read of a server at scrape time (any `toolserver.ToolServer` has it)."""

    @property
    def state(self) -> str: ...  # "ready" counts as up

    @property
    def tools(self) -> Sized: ...

    @property
    def restarts(self) -> int: ...


class HubMetrics:
    def __init__(self, servers: Callable[[], Mapping[str, ServerGauges]]) -> None:
        self._servers = servers
        self._counters: _Counters | None = None

    @property
    def counters(self) -> _Counters:
        if self._counters is None:
            self._counters = _Counters(self._servers)
        return self._counters

    def observe(self, server: str, tool: str, status: int, seconds: float, error_type: str | None,
                *, face: str = "http") -> None:
        counters = self.counters
        counters.calls.labels(server, tool, str(status), face).inc()
        counters.latency.labels(server, tool).observe(seconds)
        if error_type is not None:
            counters.errors.labels(server, tool, error_type).inc()

    def refused(self, status: int) -> None:
        self.counters.refused.labels(str(status)).inc()

    def state_error(self, operation: str) -> None:
        self.counters.state_errors.labels(operation).inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest  # see the module docstring

        return generate_latest(self.counters.registry)


class _Counters:
    """The registry and its metrics, made at the first count or scrape."""

    def __init__(self, servers: Callable[[], Mapping[str, ServerGauges]]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram  # see the module docstring

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        self.calls: Counter = Counter(
            "mcphub_tool_calls", "Tool calls by outcome and face (http, mcp)", ["server", "tool", "status", "face"],
            registry=self.registry,
        )
        self.errors: Counter = Counter(
            "mcphub_tool_errors", "Failed tool calls by error type", ["server", "tool", "type"], registry=self.registry
        )
        self.latency: Histogram = Histogram(
            "mcphub_tool_call_duration_seconds",
            "Tool call latency through the hub",
            ["server", "tool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refused: Counter = Counter(
            "mcphub_requests_refused", "Requests refused before routing (Host, Origin, Content-Type), by status",
            ["status"], registry=self.registry,
        )
        self.state_errors: Counter = Counter(
            "mcphub_state_errors", "Failed commands to the shared state store (hub.state) by operation", ["operation"],
            registry=self.registry,
        )
        self.registry.register(_ServerCollector(servers))


class _ServerCollector:
    """Per-server gauges read from the supervisor's handles at scrape time (a prometheus_client Collector)."""

    def __init__(self, servers: Callable[[], Mapping[str, ServerGauges]]) -> None:
        self._servers = servers

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("mcphub_server_up", "1 if the server is ready", labels=["server", "state"])
        tools = GaugeMetricFamily("mcphub_server_tools", "Tools the server exposes", labels=["server"])
        restarts = CounterMetricFamily("mcphub_server_restarts", "Server restarts", labels=["server"])
        users = GaugeMetricFamily("mcphub_server_user_instances",
                                  "Instances of a per-user server running now, one per user", labels=["server"])
        for name, handle in self._servers().items():
            up.add_metric([name, str(handle.state)], 1.0 if handle.state == "ready" else 0.0)
            tools.add_metric([name], float(len(handle.tools)))
            restarts.add_metric([name], float(handle.restarts))
            running = getattr(handle, "user_instances", None)  # a local per-user server's (supervisor.ServerHandle)
            if running is not None:
                users.add_metric([name], float(running))
        yield up
        yield tools
        yield restarts
        yield users

    def describe(self) -> Iterable[Metric]:
        return []
