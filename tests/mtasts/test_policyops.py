"""Safe changes of a hosted policy from the command line: rotate, enforce (gated by
'policy advise'), fallback, retire, apply-staged, and the history of every change."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json
from tlswatch.mtasts.policy import policy_id, render_policy


@pytest.fixture
def cli(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("TLSWATCH_PUBLIC_HOST", "reports.example.net")
    return Cli(db)


def reports(cli: Cli, tmp_path: Path, domain: str, *, failing: bool = False) -> None:
    """A week of reports from two senders; with ``failing``, one sees expired certificates."""
    today = datetime.now(UTC).date()
    files = []
    for i, org in enumerate(["Google Inc.", "Microsoft Corporation"]):
        for back in range(1, 8):
            day = today - timedelta(days=back)
            bad = failing and i == 0
            doc = make_report(org=org, rid=f"{org}-{day}", day=day.isoformat(), policies=[
                policy(domain, 100, 3 if bad else 0,
                       [detail("certificate-expired", 3, mx=f"mx.{domain}")] if bad else [])])
            files.append(str(write_json(tmp_path / f"{domain}-{i}-{day}.json", doc)))
    cli.json("ingest", *files)


def test_existing_ids_keep_their_meaning() -> None:
    text = render_policy("testing", ["mx.example.com"], 86400)
    assert policy_id(text) == policy_id(text, 0)  # revision 0: the content alone, as before
    assert len({policy_id(text, n) for n in range(5)}) == 5


def test_rotate_serves_the_same_policy_under_a_new_id(cli: Cli) -> None:
    first = cli.json("policy", "init", "rot.example", "--mx", "mx.rot.example")
    rotated = cli.json("policy", "rotate", "rot.example", "--reason", "a sender cached junk")
    again = cli.json("policy", "rotate", "rot.example")
    assert rotated["policy"] == first["policy"]
    assert len({first["id"], rotated["id"], again["id"]}) == 3
    assert f"id={rotated['id']}" in rotated["records"][0]["value"]
    assert "rotate by os:" in rotated["note"]


def test_enforce_is_refused_unless_advise_advises_it(cli: Cli, tmp_path: Path) -> None:
    reports(cli, tmp_path, "shaky.example", failing=True)
    first = cli.json("policy", "init", "shaky.example", "--mx", "mx.shaky.example")
    refused = cli("policy", "enforce", "shaky.example", code=1)
    assert "policy enforce shaky.example: refused: policy advise says: stay in testing" \
        in refused.stderr and "--force" in refused.stderr
    assert cli.json("policy", "history", "shaky.example")["changes"][-1]["action"] == "init"
    forced = cli.json("policy", "enforce", "shaky.example", "--force", "--reason", "audit")
    assert "mode: enforce" in forced["policy"] and forced["id"] != first["id"]
    last = cli.json("policy", "history", "shaky.example")["changes"][-1]
    assert last["forced"] is True and last["action"] == "enforce"
    assert last["reason"].startswith("audit (forced against the advice: stay in testing")


def test_enforce_when_advised_then_fallback_with_a_new_id(cli: Cli, tmp_path: Path) -> None:
    reports(cli, tmp_path, "clean.example")
    testing = cli.json("policy", "init", "clean.example", "--mx", "mx.clean.example",
                       "--max-age", "604800")
    enforced = cli.json("policy", "enforce", "clean.example")
    assert "mode: enforce" in enforced["policy"]
    again = cli("policy", "enforce", "clean.example", code=1)
    assert "the policy is in mode enforce, not testing" in again.stderr
    back = cli.json("policy", "fallback", "clean.example", "--reason", "mx2 lost its cert")
    assert "mode: testing" in back["policy"] and back["policy"] == testing["policy"]
    assert back["id"] not in (testing["id"], enforced["id"])  # never an id served before
    # Senders that do not look again keep the enforce policy up to its max_age (7 days).
    latest = datetime.now(UTC) + timedelta(seconds=604800)
    assert f"A sender that cached the enforce policy (id {enforced['id']}) and does not " \
        "look again keeps it until its max_age (604800 s) runs out: at the latest " \
        f"{latest:%Y-%m-%d}" in back["note"]
    not_enforcing = cli("policy", "fallback", "clean.example", code=1)
    assert "not enforce: there is nothing to fall back from" in not_enforcing.stderr


def test_history_names_who_when_what_and_why(cli: Cli, tmp_path: Path) -> None:
    first = cli.json("policy", "init", "hist.example", "--mx", "mx.hist.example",
                     "--reason", "onboarding")
    cli.json("policy", "init", "hist.example", "--mx", "mx.hist.example")  # no change
    rotated = cli.json("policy", "rotate", "hist.example")
    retired = cli.json("policy", "retire", "hist.example", "--reason", "customer left")
    again = cli("policy", "retire", "hist.example", code=1)
    assert "policy retire hist.example: retired already; the records can go after" in \
        again.stderr
    long = cli("policy", "rotate", "hist.example", "--reason", "x" * 501, code=1)
    assert "reason: at most 500 characters, got 501" in long.stderr
    changes = cli.json("policy", "history", "hist.example")["changes"]
    assert [c["action"] for c in changes] == ["init", "rotate", "retire"]
    assert {c["actor"] for c in changes} == {f"os:{getpass.getuser()}"}
    assert [(c["old_id"], c["new_id"]) for c in changes] == [
        (None, first["id"]), (first["id"], rotated["id"]), (rotated["id"], retired["id"])]
    assert [c["reason"] for c in changes] == ["onboarding", "policy rotate", "customer left"]
    assert changes[2]["new_mode"] == "none" and changes[2]["old_mode"] == "testing"
    table = cli("policy", "history", "hist.example", "--format", "table").stdout
    assert "customer left" in table and "retire" in table


def test_apply_staged_without_a_staged_policy_says_so(cli: Cli) -> None:
    cli.json("policy", "init", "nostage.example", "--mx", "mx.nostage.example")
    out = cli("policy", "apply-staged", "nostage.example", code=1)
    assert "no staged policy since the last change" in out.stderr


def test_a_policy_that_cannot_be_written_records_no_change(cli: Cli, tmp_path: Path) -> None:
    cli.json("policy", "init", "ro.example", "--mx", "mx.ro.example")
    folder = tmp_path / "policies"
    (folder / "ro.example.tmp").mkdir()  # in the way of the file written first
    out = cli("policy", "rotate", "ro.example", code=1)
    assert f"{folder}/ro.example.json: cannot write the policy: Is a directory" in out.stderr
    assert [c["action"] for c in cli.json("policy", "history", "ro.example")["changes"]] \
        == ["init"]
