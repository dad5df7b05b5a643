"""One frozen settings object: defaults, then a TOML file, then TLSWATCH_* variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tlswatch.dburl import DatabaseUrl, location
from tlswatch.dnsname import is_domain
from tlswatch.errors import ConfigError

MiB = 1024 * 1024
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class Settings:
    """Every setting has a default and a help text (shown by ``tlswatch config``)."""

    db: Path | DatabaseUrl = field(default=Path("tlswatch.duckdb"), metadata=_help(
        "DuckDB database file, or a postgresql:// URL (PostgreSQL 15 or later)."))
    max_input_bytes: int = field(
        default=10 * MiB, metadata=_help("Largest input (file, message, POST body) accepted.")
    )
    max_inflated_bytes: int = field(
        default=50 * MiB,
        metadata=_help("Largest report after gunzip/unzip; checked while inflating."),
    )
    max_json_depth: int = field(default=64, metadata=_help("Deepest JSON nesting accepted."))
    max_policies: int = field(default=1_000, metadata=_help(
        "Most policy entries in one report; a report with more is refused."))
    max_failure_details: int = field(default=20_000, metadata=_help(
        "Most failure details in one report (all entries together); more is refused."))
    max_batch_bytes: int = field(default=64 * MiB, metadata=_help(
        "Most report bytes the loader holds in one batch (besides batch_size)."))
    max_mime_depth: int = field(default=20, metadata=_help(
        "Deepest nesting of MIME parts in a message; deeper is refused before parsing."))
    lock_timeout: float = field(
        default=10.0, metadata=_help("Seconds to wait for another process's database lock.")
    )
    batch_size: int = field(default=5000, metadata=_help("Reports written to DuckDB per batch."))
    workers: int = field(
        default=min(4, os.cpu_count() or 1),
        metadata=_help("Processes that decode and validate a large ingest (1: no workers)."),
    )
    domains: tuple[str, ...] = field(
        default=(), metadata=_help("Our policy domains; reports for others are quarantined "
                                   "(empty: accept every domain). '*.example.com' covers every "
                                   "subdomain of example.com at any depth, not example.com "
                                   "itself."))
    dkim: str = field(default="record", metadata=_help(
        "record: keep each mail report's DKIM result; require: quarantine mail without a "
        "valid signature by the reporting domain (RFC 8460 section 3)."))
    dns_timeout: float = field(default=5.0, metadata=_help("Seconds for a DNS lookup."))
    spool: Path = field(default=Path("spool"), metadata=_help(
        "Spool folder: received reports wait here, durably, until loaded."))
    smtp: str = field(default="127.0.0.1:2525", metadata=_help(
        "HOST:PORT the SMTP (or LMTP) receiver listens on; empty: no SMTP receiver."))
    lmtp: bool = field(default=False, metadata=_help("Speak LMTP instead of SMTP."))
    smtp_hostname: str = field(default="", metadata=_help(
        "Name in the SMTP greeting (default: this host's FQDN)."))
    report_addresses: tuple[str, ...] = field(default=(), metadata=_help(
        "Recipients accepted, exact or *@domain (empty: any recipient)."))
    max_recipients: int = field(default=100, metadata=_help("Recipients per message."))
    http: str = field(default="127.0.0.1:8080", metadata=_help(
        "HOST:PORT of the HTTP(S) receiver; empty: no HTTP receiver."))
    tls_cert: str = field(default="", metadata=_help(
        "PEM certificate (chain) for STARTTLS and HTTPS; empty: no TLS."))
    tls_key: str = field(default="", metadata=_help("PEM private key of tls_cert."))
    http_rate_limit: float = field(default=120.0, metadata=_help(
        "Report POSTs a minute allowed per client IP (0: no limit)."))
    http_rate_burst: int = field(default=60, metadata=_help(
        "POSTs a client IP may send at once before the rate limit applies."))
    loader_interval: float = field(default=1.0, metadata=_help(
        "Seconds between spool checks of the loader in 'serve'."))
    spool_keep_days: float = field(default=30.0, metadata=_help(
        "Days loaded spool files are kept in spool/done (the store keeps every report)."))
    failed_keep_days: float = field(default=30.0, metadata=_help(
        "Days refused inputs are kept in spool/failed (with their reason) for inspection."))
    failed_max_bytes: int = field(default=1024 * MiB, metadata=_help(
        "Size quota of spool/failed; past it the oldest refused inputs are deleted first."))
    detail_keep_days: int = field(default=400, metadata=_help(
        "Days of failure details (per sending IP, MX, result type) kept, counted by report "
        "day; older ones are pruned daily by 'serve' and by 'tlswatch prune'. Session totals "
        "per report and policy are kept forever (0: keep details forever)."))
    raw_keep_days: int = field(default=400, metadata=_help(
        "Days the reports' raw JSON (shown by 'report show') is kept, by report day "
        "(0: forever)."))
    quarantine_keep_days: int = field(default=90, metadata=_help(
        "Days refused inputs are kept in the database's quarantine, by arrival (0: "
        "forever)."))
    check_keep_days: int = field(default=400, metadata=_help(
        "Days the history of the MTA-STS/TLS-RPT checks ('tlswatch checks') is kept (0: "
        "forever)."))
    compact_after_prune: bool = field(default=True, metadata=_help(
        "After a prune that removed rows, rewrite the database file to give the space back "
        "(DuckDB keeps it otherwise); writers wait for the copy, the spool keeps reports."))
    compact_min_share: float = field(default=0.1, metadata=_help(
        "The daily prune of 'serve' compacts the file only once the rows pruned since the "
        "last compaction reach this share of the rows left in the pruned tables (a "
        "compaction copies the whole file under the write lock); 'tlswatch prune' compacts "
        "after any removal."))
    loader_restart_max: float = field(default=60.0, metadata=_help(
        "Longest wait in seconds before 'serve' restarts a loader process that died (the "
        "wait starts at 1 s and doubles)."))
    health_max_spool_age: float = field(default=900.0, metadata=_help(
        "/healthz answers 503 when the oldest report waiting in the spool is older than "
        "this many seconds."))
    node_name: str = field(default="", metadata=_help(
        "This 'serve' node's name in /healthz, /metrics and the database's record of the "
        "once-a-day work, when several nodes share one PostgreSQL (empty: the host name)."))
    max_connections: int = field(default=1000, metadata=_help(
        "Open connections each receiver (SMTP, HTTP) accepts; more are refused at once "
        "(421, 503)."))
    max_connections_per_ip: int = field(default=100, metadata=_help(
        "Open connections each receiver accepts from one client IPv4 address or IPv6 /64 "
        "(0: no limit). Behind a reverse proxy every client is the proxy."))
    http_header_timeout: float = field(default=20.0, metadata=_help(
        "Seconds a client has to send a complete request head, from connecting or from the "
        "previous response."))
    http_body_timeout: float = field(default=120.0, metadata=_help(
        "Seconds a client has to send a whole request body, once its head arrived."))
    http_idle_timeout: float = field(default=5.0, metadata=_help(
        "Seconds an idle keep-alive HTTP connection is kept open."))
    http_max_header_bytes: int = field(default=16 * 1024, metadata=_help(
        "Bytes an unfinished HTTP request head (request line and headers) may buffer; "
        "more: 400."))
    http_body_budget: int = field(default=128 * MiB, metadata=_help(
        "Bytes of request bodies all unfinished HTTP requests may hold together; a request "
        "that would pass it gets 503 with Retry-After (0: no limit)."))
    smtp_timeout: float = field(default=300.0, metadata=_help(
        "Seconds the SMTP receiver waits for each complete command (RFC 5321 section "
        "4.5.3.2.7)."))
    smtp_data_timeout: float = field(default=600.0, metadata=_help(
        "Seconds an SMTP client has to send a whole message after DATA."))
    smtp_command_size_limit: int = field(default=512, metadata=_help(
        "Longest SMTP command line in bytes (RFC 5321 section 4.5.3.1.4; extensions add "
        "to it); longer: 500."))
    log_repeat_interval: float = field(default=60.0, metadata=_help(
        "'serve' logs a repeated warning or error once per this many seconds, with a count "
        "of the ones not logged (0: log every one)."))

    metrics_refresh: float = field(default=60.0, metadata=_help(
        "Seconds /metrics keeps the per-domain figures of the last complete report day before "
        "computing them again (sooner after a load, but at most every 5 s)."))
    metrics_max_domains: int = field(default=200, metadata=_help(
        "Most policy domains in the per-domain series of /metrics (those with the most failed "
        "sessions first; the number left out is a series too)."))
    metrics_max_result_types: int = field(default=25, metadata=_help(
        "Most result types in the per-domain series of /metrics (the most failed sessions "
        "first); the rest are summed as result_type=\"other\"."))

    export_dir: str = field(default="", metadata=_help(
        "Folder for the daily summary files that 'serve' writes (empty: none)."))
    export_time: str = field(default="06:00", metadata=_help(
        "UTC time of day when 'serve' writes yesterday's summary (missed days are caught up)."))
    export_formats: tuple[str, ...] = field(default=("md", "html", "csv", "json", "parquet"),
                                            metadata=_help("Formats of the daily files."))
    export_revise_days: int = field(default=7, metadata=_help(
        "Days back that 'serve' rewrites a day's files when reports for it arrive later "
        "(0: never)."))
    summary_revise_percent: float = field(default=10.0, metadata=_help(
        "A revised summary is sent when a domain is new for the day, or its failed or total "
        "sessions changed by at least this many percent and summary_revise_sessions."))
    summary_revise_sessions: int = field(default=10, metadata=_help(
        "Fewest sessions a domain's failed or total sessions must change by for a revised "
        "summary (besides summary_revise_percent)."))
    summary_max_revisions: int = field(default=3, metadata=_help(
        "Most revised summaries sent for one day (0: none); files are rewritten regardless."))
    alert_success_threshold: float = field(default=0.99, metadata=_help(
        "Alert when a domain's daily success rate falls below this fraction."))
    alert_spike_factor: float = field(default=3.0, metadata=_help(
        "Alert when a day's failed sessions exceed this many times the daily average of the "
        "domain's report days in the 14 days before (none on a domain's first report day)."))
    alert_silent_days: int = field(default=3, metadata=_help(
        "Alert when a daily reporter has been silent this many days."))
    mail_smtp: str = field(default="", metadata=_help(
        "HOST:PORT of the SMTP server that sends summaries and alerts (empty: no mail)."))
    mail_starttls: bool = field(default=True, metadata=_help("Use STARTTLS for mail_smtp."))
    mail_username: str = field(default="", metadata=_help("Login for mail_smtp (empty: none)."))
    mail_password_env: str = field(default="", metadata=_help(
        "Environment variable holding the mail_smtp password."))
    mail_ca_bundle: str = field(default="", metadata=_help(
        "CA certificates (PEM) to trust for mail_smtp (empty: the system's)."))
    mail_from: str = field(default="tlswatch@localhost", metadata=_help("Sender address."))
    mail_to: tuple[str, ...] = field(default=(), metadata=_help(
        "Recipients of every domain's summaries and alerts."))
    mail_to_domains: dict[str, tuple[str, ...]] = field(default_factory=dict, metadata=_help(
        "Recipients per policy domain, e.g. {\"example.com\": [\"ops@example.com\"]}."))
    webhook_url: str = field(default="", metadata=_help(
        "URL that gets summaries and alerts as JSON with a Slack-style 'text' (empty: none)."))
    delivery_attempts: int = field(default=8, metadata=_help(
        "Tries per delivery (mail or webhook post) before it is marked failed and logged."))
    delivery_backoff: float = field(default=30.0, metadata=_help(
        "Seconds before a failed delivery is tried again; doubles with each try (at most 1 h)."))
    delivery_interval: float = field(default=5.0, metadata=_help(
        "Seconds between the outbox checks of the delivery worker in 'serve'."))
    max_alerts_per_day: int = field(default=50, metadata=_help(
        "Alerts recorded and sent per report day; beyond it one alert counts the rest."))

    web_auth: str = field(default="auto", metadata=_help(
        "Dashboard login: auto (required unless 'http' is a loopback address and the client "
        "a known loopback one: see trusted_proxies), always, never."))
    web_token: str = field(default="", metadata=_help(
        "Token for the dashboard (Authorization: Bearer TOKEN)."))
    web_user: str = field(default="", metadata=_help("User for the dashboard's basic auth."))
    web_password_env: str = field(default="", metadata=_help(
        "Environment variable holding the dashboard password."))
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=_help(
        "Addresses or CIDRs of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto "
        "are believed (empty: none; then a forwarding header only takes away the loopback "
        "exemption from login)."))
    allowed_hosts: tuple[str, ...] = field(default=(), metadata=_help(
        "Host header names served, against DNS rebinding; other names get 421 (IP literals "
        "always pass; '*': any). Empty: localhost, the 'http' address, public_host and "
        "smtp_hostname (neither set: this host's FQDN)."))

    web_max_days: int = field(default=3660, metadata=_help(
        "Longest date range (since .. until) a dashboard page shows at once, in days; a "
        "longer one gets 400."))

    policy_dir: Path = field(default=Path("policies"), metadata=_help(
        "Folder of the MTA-STS policies that 'serve' hosts (one file per domain)."))
    public_host: str = field(default="", metadata=_help(
        "This deployment's public host name, used in the DNS records 'policy init' prints "
        "(default: smtp_hostname, else this host's FQDN)."))
    check_interval_hours: float = field(default=24.0, metadata=_help(
        "'serve' checks MTA-STS and TLS-RPT (as 'tlswatch check' does) for every domain it "
        "hosts a policy for, lists in 'domains' or (when 'domains' is set) receives reports "
        "for, when its last check is this many hours old (0: no checks)."))
    check_cert_days: int = field(default=14, metadata=_help(
        "Alert when an MX or mta-sts certificate expires within this many days."))
    check_nameserver: str = field(default="", metadata=_help(
        "DNS server IP[:PORT] the checks ask (empty: the system's)."))
    check_ca_bundle: str = field(default="", metadata=_help(
        "CA certificates (PEM) the checks trust (empty: the system's)."))
    check_https_port: int = field(default=443, metadata=_help(
        "Port of the policy hosts the checks fetch from."))
    check_smtp_port: int = field(default=25, metadata=_help(
        "Port of the MX hosts the checks connect to."))
    check_timeout: float = field(default=10.0, metadata=_help(
        "Seconds for each lookup or connection of a check."))
    dns_update_zone: str = field(default="", metadata=_help(
        "DNS zone this deployment updates (RFC 2136) to publish each hosted policy's id: "
        "customers CNAME _mta-sts.DOMAIN to DOMAIN.<zone> (empty: no updates; the id is "
        "published by hand)."))
    dns_update_server: str = field(default="", metadata=_help(
        "HOST:PORT of the authoritative server of dns_update_zone that accepts the updates."))
    dns_update_tsig_name: str = field(default="", metadata=_help(
        "Name of the TSIG key the updates are signed with."))
    dns_update_tsig_secret_env: str = field(default="", metadata=_help(
        "Environment variable holding that key's secret (base64), never the secret itself."))
    dns_update_tsig_algorithm: str = field(default="hmac-sha256", metadata=_help(
        "TSIG algorithm of the key (hmac-sha256, hmac-sha512, ...)."))
    dns_update_ttl: int = field(default=300, metadata=_help(
        "TTL in seconds of the published _mta-sts TXT: resolvers may answer the previous id "
        "this long after a change."))
    dns_update_retry: float = field(default=60.0, metadata=_help(
        "Seconds before 'serve' tries a failed update again; doubles with each try (at most "
        "1 h)."))

    policy_fetch_buffer: int = field(default=10_000, metadata=_help(
        "Fetches of hosted policies 'serve' holds in memory before writing them in a batch; "
        "more are dropped and counted (tlswatch_policy_fetches_dropped_total) rather than "
        "slow the answers (0: fetches are not recorded)."))
    policy_fetch_flush: float = field(default=2.0, metadata=_help(
        "Seconds between the batches of recorded policy fetches 'serve' writes for the "
        "loader to store."))
    policy_fetch_backlog: int = field(default=1_000, metadata=_help(
        "Batches of policy fetches that may wait for the loader (the database away); "
        "further batches are dropped and counted."))
    policy_fetch_ip_rate: int = field(default=600, metadata=_help(
        "Policy fetches recorded per client address (IPv6: per /64) a minute; more are "
        "answered but not recorded, and counted (0: no limit). Real senders fetch a "
        "domain's policy a few times a day."))
    policy_fetch_keep_days: int = field(default=30, metadata=_help(
        "Days recorded policy fetches are kept, by fetch time; older ones are pruned daily "
        "by 'serve' and by 'tlswatch prune' (0: forever)."))
    sender_ranges: dict[str, tuple[str, ...]] = field(default_factory=dict, metadata=_help(
        "More addresses of big senders, added to the built-in ones, e.g. {\"Microsoft\": "
        "[\"40.92.0.0/15\"], \"Example ISP\": [\"192.0.2.0/24\"]}: the policy fetches "
        "from them are counted as that sender's."))
    sender_ptr: bool = field(default=True, metadata=_help(
        "Name the sender of a policy fetch from its reverse DNS (PTR, confirmed by a forward "
        "lookup) when its address is in no known range; asks check_nameserver."))
    sender_ptr_time: float = field(default=2.0, metadata=_help(
        "Seconds one page or command spends at most on reverse DNS lookups (answers are "
        "kept an hour); addresses not looked up in time show as unknown."))

    acme_directory: str = field(default="", metadata=_help(
        "ACME directory URL (e.g. https://acme-v02.api.letsencrypt.org/directory): 'serve' "
        "obtains and renews a certificate for every hosted mta-sts.<domain> that resolves "
        "to this deployment, served by SNI on the TLS listener (empty: ACME off)."))
    acme_email: str = field(default="", metadata=_help(
        "Contact address of the ACME account (empty: none)."))
    acme_ca_bundle: str = field(default="", metadata=_help(
        "CA certificates (PEM) trusted for the ACME server's own HTTPS (empty: the system's)."))
    acme_http: str = field(default="", metadata=_help(
        "HOST:PORT of a plain HTTP listener answering ACME HTTP-01 challenges, for any Host "
        "(port 80 in production; empty: only on 'http')."))
    acme_addresses: tuple[str, ...] = field(default=(), metadata=_help(
        "This deployment's public addresses: a certificate is asked only for a name that "
        "resolves to one of them (empty: the addresses of public_host)."))
    acme_renew_days: int = field(default=30, metadata=_help(
        "Renew an ACME certificate this many days before it expires."))
    acme_alert_days: int = field(default=14, metadata=_help(
        "Alert when an ACME certificate expires within this many days and its renewal "
        "failed."))
    acme_retry_min: float = field(default=300.0, metadata=_help(
        "Seconds before the first retry of a failed ACME order; doubled after each failure."))
    acme_retry_max: float = field(default=86400.0, metadata=_help(
        "Longest wait, in seconds, between retries of a failing ACME order."))
    acme_refresh: float = field(default=60.0, metadata=_help(
        "Seconds between two readings of the ACME certificates by each 'serve' node."))

    def __post_init__(self) -> None:
        if self.web_auth not in ("auto", "always", "never"):
            raise ConfigError(f"setting web_auth: must be auto, always or never, got "
                              f"{self.web_auth!r}")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"setting trusted_proxies: {proxy!r} is not an IP address "
                                  "or CIDR network") from None
        if self.dkim not in ("record", "require"):
            raise ConfigError(f"setting dkim: must be 'record' or 'require', got {self.dkim!r}")
        for entry in self.domains:
            if not is_domain(entry.removeprefix("*.")):
                raise ConfigError(f"setting domains: {entry!r} is not a domain name or "
                                  "*.domain (any subdomain of domain)")
        for sender, ranges in self.sender_ranges.items():
            for cidr in ranges:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise ConfigError(f"setting sender_ranges: {sender}: {cidr!r} is not an "
                                      "IP address or CIDR network") from None
        self._check_numbers()
        self._check_dns_update()

    def _check_dns_update(self) -> None:
        """With dns_update_zone set, the server and the key it needs are named."""
        if not self.dns_update_zone:
            return
        if not is_domain(self.dns_update_zone.rstrip(".").lower()):
            raise ConfigError(f"setting dns_update_zone: not a DNS zone name: "
                              f"{self.dns_update_zone!r}")
        host, colon, port = self.dns_update_server.rpartition(":")
        if not colon or not host.strip("[]") or not port.isdigit() or \
                not 0 < int(port) < 65536:
            raise ConfigError(f"setting dns_update_server: HOST:PORT of the server that "
                              f"takes updates for {self.dns_update_zone}, got "
                              f"{self.dns_update_server!r}")
        for name in ("dns_update_tsig_name", "dns_update_tsig_secret_env"):
            if not getattr(self, name):
                raise ConfigError(f"setting {name}: needed with dns_update_zone (the updates "
                                  "are signed with a TSIG key)")
        if self.dns_update_tsig_algorithm.lower().rstrip(".") not in TSIG_ALGORITHMS:
            raise ConfigError(f"setting dns_update_tsig_algorithm: one of "
                              f"{', '.join(TSIG_ALGORITHMS)}, got "
                              f"{self.dns_update_tsig_algorithm!r}")

    def _check_numbers(self) -> None:
        """No count, size, time or number of days is negative (a negative keep-days would
        prune everything); the threshold is a fraction; export_time is a time of day."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"setting {f.name}: must be 0 or more, got {value!r} "
                                  f"(default {f.default!r})")
        if not 0 <= self.alert_success_threshold <= 1:
            raise ConfigError("setting alert_success_threshold: a fraction from 0 to 1 (0.99 "
                              f"for 99%), got {self.alert_success_threshold!r}")
        hour, _, minute = self.export_time.partition(":")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise ConfigError(f"setting export_time: a UTC time of day as HH:MM (e.g. 06:00), "
                              f"got {self.export_time!r}")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind == "Path | DatabaseUrl":
            return location(value)
        if kind in (Path, "Path"):
            return Path(value)
        if kind in (bool, "bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind == "dict[str, tuple[str, ...]]":
            data = json.loads(value) if isinstance(value, str) else dict(value)
            return {str(k): tuple(str(v) for v in (vs if isinstance(vs, list | tuple) else [vs]))
                    for k, vs in data.items()}
        if kind in ("list[str]", "tuple[str, ...]"):
            if isinstance(value, str) and value.lstrip().startswith("["):
                value = json.loads(value)  # TLSWATCH_DOMAINS='["a.example", "b.example"]'
            if isinstance(value, str):  # or comma-separated: TLSWATCH_DOMAINS=a.example,b.example
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"setting {name}: cannot use {value!r}: {exc}") from exc


def load_settings(
    config_path: Path | None = None, *, environ: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build the settings once: defaults < TOML file < environment < explicit overrides."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    path = config_path or (Path(env["TLSWATCH_CONFIG"]) if env.get("TLSWATCH_CONFIG") else None)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: settings file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        values.update(data.get("tlswatch", data))
    known = {f.name: f for f in fields(Settings)}
    for name in known:
        var = f"TLSWATCH_{name.upper()}"
        if var in env:
            values[name] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{path or 'settings'}: unknown setting(s): {', '.join(unknown)}")
    return Settings(**{k: _coerce(k, known[k].type, v) for k, v in values.items()})


def describe() -> list[tuple[str, str, str]]:
    """(name, default, help) for every setting, for the docs and ``tlswatch config``."""
    default = Settings()
    def show(value: Any) -> str:
        return str(list(value)) if isinstance(value, tuple) else str(value)

    return [(f.name, show(getattr(default, f.name)), f.metadata["help"])
            for f in fields(Settings)]
