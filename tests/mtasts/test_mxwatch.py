"""The daily MX watcher against a loopback DNS server: an MX the hosted policy does not
cover gets an updated policy staged (not served) and one alert; the admin applies it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.mtasts.fixtures import World, world
from tlswatch.config import Settings, load_settings
from tlswatch.jobs import scheduled
from tlswatch.mtasts.hosting import PolicyStore, init_policy
from tlswatch.mtasts.mxwatch import run_mx_watch
from tlswatch.store import Store


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from world(tmp_path_factory.mktemp("world"))


def settings_of(w: World, root: Path) -> Settings:
    return load_settings(None, environ={}, db=root / "tlswatch.duckdb",
                         policy_dir=str(root / "policies"), check_nameserver=w.dns,
                         check_timeout=5, public_host="reports.example.net")


def alerts(settings: Settings) -> list[tuple[str, str, str]]:
    with Store.open(settings.db, read_only=True) as store:
        return [(r["policy_domain"], r["kind"], r["message"]) for r in store.rows(
            "SELECT policy_domain, kind, message FROM alerts ORDER BY alert_pk")]


def test_an_uncovered_mx_stages_a_policy_and_alerts_once(w: World, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    settings = settings_of(w, tmp_path)
    assert "mx watch" in [name for name, _ in scheduled(settings)]
    w.zone.add("watch.example", "MX", ("mx1.watch.example", 10), ("mx2.watch.example", 20))
    w.zone.add("fine.example", "MX", ("a.mx.fine.example", 10))
    served = init_policy(settings, "watch.example", mx=["mx1.watch.example"], mode="enforce",
                         max_age=86400, force=True)
    init_policy(settings, "fine.example", mx=["*.mx.fine.example"], mode="testing",
                max_age=86400)
    now = datetime.now(UTC)
    (alert,) = run_mx_watch(settings, now)
    assert (alert.policy_domain, alert.kind) == ("watch.example", "policy_mx_not_covered")
    assert alert.message.startswith("MX mx2.watch.example of watch.example is not covered by "
                                    "the hosted policy (mx: mx1.watch.example, mode enforce)")
    assert "policy apply-staged watch.example" in alert.message
    assert alerts(settings) == [("watch.example", "policy_mx_not_covered", alert.message)]
    # Staged, not served: the enforce policy is never changed without the admin.
    assert PolicyStore(tmp_path / "policies").get("watch.example").id == served.id
    assert run_mx_watch(settings, now) == []  # done for today
    assert run_mx_watch(settings, now + timedelta(days=1)) == []  # staged once, alerted once
    assert len(alerts(settings)) == 1

    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    cli = Cli(tmp_path / "tlswatch.duckdb")
    applied = cli.json("policy", "apply-staged", "watch.example")
    assert "mx: mx1.watch.example\r\nmx: mx2.watch.example\r\n" in applied["policy"]
    assert "mode: enforce" in applied["policy"] and applied["id"] != served.id
    changes = cli.json("policy", "history", "watch.example")["changes"]
    assert [(c["action"], c["actor"]) for c in changes][1:] == [
        ("stage", "mx watcher"), ("apply-staged", changes[-1]["actor"])]
    assert changes[-1]["actor"].startswith("os:")
    assert "no staged policy" in cli("policy", "apply-staged", "watch.example",
                                     code=1).stderr
    assert run_mx_watch(settings, now + timedelta(days=2)) == []  # covered now
