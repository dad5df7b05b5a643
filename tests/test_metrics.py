"""/metrics per-domain series of the last complete report day, and the deploy files that
query them (Grafana dashboard, Prometheus alert rules), against a real `serve`."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import VALID, Cli, detail, make_report, policy, write_json
from tests.serving import CLI, Serve
from tlswatch.config import Settings
from tlswatch.daymetrics import DomainDayMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DAY = "2026-11-26"  # the newest day of sample_reports/valid, before today


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """Figures computed again only after a load (metrics_refresh is an hour)."""
    root = tmp_path_factory.mktemp("metrics")
    running = Serve(root, smtp="", metrics_refresh=3600)
    subprocess.run([*CLI, "--db", str(running.db), "ingest", str(VALID)], check=True,
                   capture_output=True)
    running.start()
    try:
        yield running
    finally:
        running.kill()


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}, from the exposition text."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def scrape(server: Serve) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    return samples(httpx.get(f"{server.http_url}/metrics", timeout=30).text)


def post_report(server: Serve, rid: str, domain: str) -> None:
    doc = make_report(rid=rid, day=DAY, policies=[
        policy(domain, 90, 10, [detail("certificate-expired", 10)])])
    reply = httpx.post(f"{server.http_url}/v1/reports", content=gzip.compress(
        json.dumps(doc).encode()), headers={"Content-Type": "application/tlsrpt+gzip"})
    assert reply.status_code == 201, reply.text
    server.wait_loaded()


def poll(server: Serve, domain: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    deadline = time.monotonic() + 30
    while True:
        found = scrape(server)
        if (("outcome", "failed"), ("policy_domain", domain)) in \
                found.get("tlswatch_domain_sessions", {}):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{domain} never appeared in /metrics:\n{found}")
        time.sleep(0.2)


def test_domain_series_equal_the_summary_of_the_last_complete_day(server: Serve) -> None:
    found = scrape(server)
    assert found["tlswatch_report_day_timestamp_seconds"][()] == 1795651200  # 2026-11-26
    summary = json.loads(subprocess.run(
        [*CLI, "--db", str(server.db), "summary", "--since", DAY, "--until", DAY, "--format",
         "json"], check=True, capture_output=True, text=True).stdout)
    sessions = found["tlswatch_domain_sessions"]
    failed = found["tlswatch_domain_failed_sessions"]
    assert len(sessions) == 2 * len(summary["domains"]) and summary["domains"]
    for d in summary["domains"]:
        name = d["policy_domain"]
        assert sessions[(("outcome", "successful"), ("policy_domain", name))] == \
            d["successful_sessions"]
        assert sessions[(("outcome", "failed"), ("policy_domain", name))] == d["failed_sessions"]
        by_type = {dict(k)["result_type"]: v for k, v in failed.items()
                   if dict(k)["policy_domain"] == name}
        assert by_type == d["failures_by_result_type"]


def test_a_load_refreshes_the_figures_and_scrapes_between_reuse_them(server: Serve) -> None:
    before = scrape(server)
    post_report(server, "metrics-late-1", "late.example")
    after = poll(server, "late.example")
    assert after["tlswatch_domain_sessions"][(("outcome", "failed"),
                                              ("policy_domain", "late.example"))] == 10
    assert after["tlswatch_domain_figures_computed_timestamp_seconds"][()] > \
        before["tlswatch_domain_figures_computed_timestamp_seconds"][()]
    again = scrape(server)  # no load since: the cached figures, not a new query
    assert again["tlswatch_domain_figures_computed_timestamp_seconds"] == \
        after["tlswatch_domain_figures_computed_timestamp_seconds"]


def test_series_are_bounded_and_label_values_escaped(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "db.duckdb")
    hostile = 'x"} evil{a="1'
    doc = make_report(rid="bounds", day=DAY, policies=[
        policy("a.example", 1, 30, [detail(hostile, 20), detail("dane-required", 5),
                                    detail("t" * 300, 3), detail("bad\nline", 2)]),
        policy("b.example", 1, 20, [detail("certificate-expired", 20)]),
        policy("c.example", 100, 1, [detail("certificate-expired", 1)])])
    cli("ingest", str(write_json(tmp_path / "r.json", doc)))
    registry = CollectorRegistry()
    registry.register(DomainDayMetrics(Settings(db=tmp_path / "db.duckdb",
                                                metrics_max_domains=2,
                                                metrics_max_result_types=2)))
    found = samples(generate_latest(registry).decode())
    domains = {dict(k)["policy_domain"] for k in found["tlswatch_domain_sessions"]}
    assert domains == {"a.example", "b.example"}  # the most failed sessions first
    a = {dict(k)["result_type"]: v for k, v in found["tlswatch_domain_failed_sessions"].items()
         if dict(k)["policy_domain"] == "a.example"}
    # Not a result-type token (quotes, braces, spaces), too long, not printable: "other".
    assert a == {"dane-required": 5, "other": 25}
    assert found["tlswatch_domain_figures_left_off"] == {(("what", "domains"),): 1,
                                                         (("what", "result_types"),): 3}


def test_a_result_type_label_carries_no_chat_markup(tmp_path: Path) -> None:
    # The shipped alert rules put result_type into Alertmanager's summary, which goes to
    # Slack or mail unescaped: a sender's result type must not mention @channel or link.
    cli = Cli(tmp_path / "db.duckdb")
    hostile = "<!channel> <https://evil.example/|fix your TLS here>"
    cli("ingest", str(write_json(tmp_path / "r.json", make_report(rid="chat", day=DAY, policies=[
        policy("a.example", 1, 30, [detail(hostile, 20), detail("validation-failure", 10)])]))))
    registry = CollectorRegistry()
    registry.register(DomainDayMetrics(Settings(db=tmp_path / "db.duckdb")))
    found = samples(generate_latest(registry).decode())
    assert {dict(k)["result_type"]: v for k, v in
            found["tlswatch_domain_failed_sessions"].items()} == \
        {"other": 20, "validation-failure": 10}


# -- the deploy files ------------------------------------------------------------------------
def promql_names(expr: str) -> set[str]:
    """tlswatch metric names an expression reads (quoted label values taken out first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {n for n in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
            if n.startswith("tlswatch_")}


def grafana_exprs(node: Any) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        query = node.get("query")
        if node.get("type") == "query" and isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            found.append(inner.group(1) if inner else query["query"])
        return found + [e for v in node.values() for e in grafana_exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in grafana_exprs(v)]
    return []


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_every_metric_the_deploy_files_query_is_served(server: Serve) -> None:
    post_report(server, "metrics-late-2", "late2.example")
    httpx.post(f"{server.http_url}/v1/reports", content=b"x",
               headers={"Content-Type": "text/plain"})  # a refusal: tlswatch_rejected_total
    poll(server, "late2.example")
    served = set(scrape(server))
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = {"grafana-dashboard.json": grafana_exprs(dashboard),
             "prometheus-alerts.yml": alert_exprs()}
    for name, found in exprs.items():
        assert len(found) >= 8, name
        used = {n for e in found for n in promql_names(e)}
        assert {"tlswatch_domain_sessions", "tlswatch_domain_failed_sessions"} <= used, name
        assert used - served == set(), f"{name} queries metrics /metrics does not serve"


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: 'make system-deps' installs Debian's prometheus"
    checked = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus-alerts.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    as_rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:query_{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$domain", ".*")}
        for i, e in enumerate(grafana_exprs(dashboard))]}]}
    path = tmp_path / "grafana-queries.yml"
    path.write_text(yaml.safe_dump(as_rules))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
