"""The one door for reports that arrive: check, spool, answer.

The HTTPS receiver, the dashboard's upload form and the SMTP/LMTP receiver all hand the
bytes they received to ``Intake.accept``: it checks them as the loader will (decode and
validate), keeps refused bytes in ``spool/failed`` with the reason, spools good ones
durably, and returns a typed outcome.  Each receiver turns the outcome into its own answer:
``Accepted`` is HTTP 201 / SMTP 250 / upload 200, ``Refused`` 400 / 550 / 400, and
``Unavailable`` 503 / 451 / 503.

``Refused`` is terminal (the same bytes will never load: the sender must not retry them);
``Unavailable`` is transient (the spool cannot store now: the sender retries).  Runs in a
worker thread: it does file I/O and CPU work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tlswatch.errors import SpoolError
from tlswatch.ingest.prepare import Options, check
from tlswatch.ingest.sources import Input
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Durably spooled; ``report_ids`` are the reports that will load."""

    spool_id: str
    report_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """Terminal: the input holds no loadable report; each reason names place and cause."""

    reasons: tuple[str, ...]
    kept_as: str | None  # its id in spool/failed, when it could be kept

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Transient: the spool cannot store the input now (disk full); retry later."""

    reason: str


Outcome = Accepted | Refused | Unavailable


class Intake:
    """Check, spool, answer: shared by every receiver."""

    def __init__(self, spool: Spool, options: Options, *, metrics: Metrics | None = None) -> None:
        self.spool = spool
        self.options = options
        self.metrics = metrics

    def accept(self, data: bytes, meta: dict[str, Any], *, source: str, via: str,
               filename: str | None = None, domain: str | None = None) -> Outcome:
        """Check ``data`` as the loader will; spool it when good, keep it aside when not.

        ``domain`` is the checked domain the receiving URL named, if any (it is in ``meta``
        too, so the loader sees it).
        """
        ids, reasons = check(Input(source=source, data=data, filename=filename, via=via,
                                   domain=domain), self.options)
        if reasons:
            kept = self._keep_refused(data, meta, "; ".join(reasons))
            log.info("%s: refused %s from %r: %r (kept as %s)", via, source, _sender(meta),
                     "; ".join(reasons), kept or "nothing: no room")
            self._count(via, "invalid")
            return Refused(tuple(reasons), kept)
        try:
            spool_id = self.spool.put(data, meta)
        except SpoolError as exc:
            log.error("%s", exc)
            self._count(via, "spool_error")
            return Unavailable(str(exc))
        log.info("%s: spooled %s from %r as %s: report-ids %r", via, source, _sender(meta),
                 spool_id, ids)
        if self.metrics is not None:
            self.metrics.received.labels(via).inc()
        return Accepted(spool_id, tuple(ids))

    def _keep_refused(self, data: bytes, meta: dict[str, Any], reason: str) -> str | None:
        # The sender is told either way: keeping a copy is best effort when the disk is full.
        try:
            return self.spool.put_rejected(data, meta, reason)
        except SpoolError as exc:
            log.warning("could not keep a refused input: %s", exc)
            return None

    def _count(self, via: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(via, reason).inc()


def _sender(meta: dict[str, Any]) -> str:
    """Who sent an input: client address, envelope sender, file name (untrusted: log %r)."""
    parts = [str(meta["peer"])] if meta.get("peer") else []
    if meta.get("mail_from") is not None:
        parts.append(f"<{meta['mail_from']}>")
    if meta.get("filename"):
        parts.append(str(meta["filename"]))
    return " ".join(parts) or "?"
