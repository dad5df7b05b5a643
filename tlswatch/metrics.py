"""Counters for /metrics (Prometheus text format), shared by receivers and the loader."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """One registry per service; spool depth and loader lag are read when scraped."""

    def __init__(self, *, spool_depth: Callable[[], float] | None = None,
                 loader_lag: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter("tlswatch_received", "Inputs accepted and spooled.", ["via"],
                                registry=self.registry)
        self.rejected = Counter("tlswatch_rejected", "Inputs refused at the door or by the "
                                "loader.", ["via", "reason"], registry=self.registry)
        self.loaded = Counter("tlswatch_loaded_reports", "Reports stored.",
                              registry=self.registry)
        self.duplicates = Counter("tlswatch_duplicate_reports", "Reports seen again.",
                                  registry=self.registry)
        self.quarantined = Counter("tlswatch_quarantined", "Inputs or reports quarantined by "
                                   "the loader.", registry=self.registry)
        depth = Gauge("tlswatch_spool_depth", "Inputs waiting in spool/incoming.",
                      registry=self.registry)
        lag = Gauge("tlswatch_loader_lag_seconds", "Age of the oldest waiting input.",
                    registry=self.registry)
        if spool_depth is not None:
            depth.set_function(spool_depth)
        if loader_lag is not None:
            lag.set_function(loader_lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)
