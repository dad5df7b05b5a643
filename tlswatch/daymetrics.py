"""Per-domain series of the last complete report day for /metrics, read from the store.

The serve process reads the store only through read-only connections (DuckDB refuses a
writable one in a process that holds a read-only one), opened per computation as the
dashboard does.  The figures are cached: computed again at most every ``metrics_refresh``
seconds, or at the first scrape after the loader stored reports or the UTC day changed
(but never more often than every ``MIN_GAP`` seconds, however often Prometheus scrapes).
A store that is locked or missing keeps the figures computed last; the
``..._computed_timestamp_seconds`` gauge tells how old they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from datetime import time as day_start

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tlswatch.analytics.lastday import DayFigures, day_figures
from tlswatch.config import Settings
from tlswatch.errors import StoreError, StoreLockedError
from tlswatch.store import Store

log = logging.getLogger(__name__)
MIN_GAP = 5.0
LOCK_WAIT = 2.0  # a scrape waits this long at most for the loader's write lock


class DomainDayMetrics(Collector):
    """``tlswatch_domain_sessions``, ``tlswatch_domain_failed_sessions`` and the day."""

    def __init__(self, settings: Settings, *, loaded: Callable[[], float] | None = None
                 ) -> None:
        self.settings = settings
        self.loaded = loaded or (lambda: 0.0)
        self.lock = threading.Lock()
        self.figures: DayFigures | None = None
        self.computed_at: float | None = None  # wall clock, for the gauge
        self.tried_at = float("-inf")  # monotonic
        self.seen: tuple[float, object] | None = None  # (loaded count, UTC date) last time

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.lock:
            if self._due():
                self._compute()
            figures, computed_at = self.figures, self.computed_at
        if computed_at is not None:
            yield GaugeMetricFamily(
                "tlswatch_domain_figures_computed_timestamp_seconds",
                "When the per-domain figures of the last complete report day were computed "
                "(Unix time).", value=computed_at)
        if figures is not None:
            yield from _families(figures)

    def _due(self) -> bool:
        age = time.monotonic() - self.tried_at
        if age < min(MIN_GAP, self.settings.metrics_refresh):
            return False
        return age >= self.settings.metrics_refresh or \
            self.seen != (self.loaded(), datetime.now(UTC).date())

    def _compute(self) -> None:
        self.tried_at = time.monotonic()
        seen = (self.loaded(), datetime.now(UTC).date())
        s = self.settings
        try:
            with Store.open(s.db, read_only=True,
                            lock_timeout=min(s.lock_timeout, LOCK_WAIT)) as store:
                self.figures = day_figures(store, seen[1], max_domains=s.metrics_max_domains,
                                           max_result_types=s.metrics_max_result_types)
        except StoreLockedError:
            log.debug("per-domain figures kept: the database is locked for writing")
            return
        except StoreError as exc:
            if "no database here yet" not in str(exc):
                log.warning("per-domain figures for /metrics not computed: %s", exc)
            return
        except Exception:  # /metrics must keep answering with the other series
            log.exception("per-domain figures for /metrics not computed")
            return
        self.seen, self.computed_at = seen, time.time()


def _families(figures: DayFigures) -> Iterator[GaugeMetricFamily]:
    start = datetime.combine(figures.day, day_start(0), tzinfo=UTC).timestamp()
    yield GaugeMetricFamily("tlswatch_report_day_timestamp_seconds",
                            "Start (00:00 UTC, Unix time) of the last complete report day: "
                            "the newest report day before today.", value=start)
    sessions = GaugeMetricFamily(
        "tlswatch_domain_sessions", "Sessions of the last complete report day, per policy "
        "domain and outcome (successful, failed).", labels=["policy_domain", "outcome"])
    failed = GaugeMetricFamily(
        "tlswatch_domain_failed_sessions", "Failed sessions of the last complete report day, "
        "per policy domain and result type.", labels=["policy_domain", "result_type"])
    for d in figures.domains:
        sessions.add_metric([d.policy_domain, "successful"], d.successful_sessions)
        sessions.add_metric([d.policy_domain, "failed"], d.failed_sessions)
        for result_type, count in sorted(d.failures.items()):
            failed.add_metric([d.policy_domain, result_type], count)
    left = GaugeMetricFamily(
        "tlswatch_domain_figures_left_off", "Domains and result types of that day left out "
        "of the per-domain series by metrics_max_domains and metrics_max_result_types.",
        labels=["what"])
    left.add_metric(["domains"], figures.domains_left_off)
    left.add_metric(["result_types"], figures.result_types_left_off)
    yield from (sessions, failed, left)
