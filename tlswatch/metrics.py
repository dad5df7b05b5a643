"""Counters for /metrics (Prometheus text format), shared by receivers and the loader."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    """One registry per service; spool depth and loader lag are read when scraped."""

    def __init__(self, *, spool_depth: Callable[[], float] | None = None,
                 loader_lag: Callable[[], float] | None = None,
                 loader_count: Callable[[str], float] | None = None,
                 loader_up: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter("tlswatch_received", "Inputs accepted and spooled.", ["via"],
                                registry=self.registry)
        self.rejected = Counter("tlswatch_rejected", "Inputs refused at the door or by the "
                                "loader.", ["via", "reason"], registry=self.registry)
        if loader_count is not None:
            self.registry.register(_LoaderCounts(loader_count))
        depth = Gauge("tlswatch_spool_depth", "Inputs waiting in spool/incoming.",
                      registry=self.registry)
        lag = Gauge("tlswatch_loader_lag_seconds", "Age of the oldest waiting input.",
                    registry=self.registry)
        if loader_up is not None:
            Gauge("tlswatch_loader_up", "1 while the loader process runs, 0 while it is down "
                  "or starting again (/healthz answers 503 then).",
                  registry=self.registry).set_function(loader_up)
        if spool_depth is not None:
            depth.set_function(spool_depth)
        if loader_lag is not None:
            lag.set_function(loader_lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LoaderCounts(Collector):
    """Counters kept by the loader process, read when scraped."""

    NAMES = (("loaded", "tlswatch_loaded_reports", "Reports stored."),
             ("duplicates", "tlswatch_duplicate_reports", "Reports seen again."),
             ("quarantined", "tlswatch_quarantined", "Inputs or reports quarantined by the "
              "loader."))

    def __init__(self, read: Callable[[str], float]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        for key, name, text in self.NAMES:
            yield CounterMetricFamily(name, text, value=self.read(key))
