from __future__ import annotations

import gzip
import itertools
import json
import mailbox
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import INVALID, VALID, Cli, make_report, write_json
from tlswatch.store import Store

INGEST_KEYS = {"accepted", "duplicates", "rejected", "rejections"}


def test_ingest_json_has_the_promised_shape_and_exit_codes(cli: Cli, tmp_path: Path) -> None:
    good = write_json(tmp_path / "good.json", make_report())
    out = cli.json("ingest", str(good))
    assert set(out) >= INGEST_KEYS and out["accepted"] == 1
    bad = INVALID / "count-is-text.json"
    mixed = cli.json("ingest", str(bad), str(write_json(tmp_path / "g2.json",
                                                          make_report(rid="r-2"))), code=1)
    assert (mixed["accepted"], mixed["rejected"]) == (1, 1)  # the good one loads anyway
    assert mixed["rejections"] == [{"source": str(bad), "reason":
                                    'policies[0].summary.total-successful-session-count: must '
                                    'be a non-negative integer, got "many"'}]


def test_ingest_table_output_and_missing_path(cli: Cli, tmp_path: Path) -> None:
    result = cli("ingest", "--format", "table", str(tmp_path / "nope.json"), code=1)
    assert "accepted 0, duplicates 0, rejected 1" in result.stdout
    assert f"rejected {tmp_path / 'nope.json'}: no such file or directory" in result.stderr


def test_ingest_reads_standard_input(cli: Cli) -> None:
    data = (VALID / "google" / "example.com-2026-11-20.eml").read_bytes()
    assert cli.json("ingest", "-", input=data)["accepted"] == 1


def test_ingest_reads_mbox_and_maildir(cli: Cli, tmp_path: Path) -> None:
    out = cli.json("ingest", str(VALID / "mbox" / "reports.mbox"), str(VALID / "maildir"))
    assert out["accepted"] == 3
    (tmp_path / "tree").mkdir()
    box = mailbox.Maildir(tmp_path / "tree" / "md", create=True)  # a Maildir inside a tree
    box.add(mailbox.MaildirMessage((VALID / "misc" / "application-gzip.eml").read_bytes()))
    assert cli.json("ingest", str(tmp_path / "tree"))["accepted"] == 1


def test_console_script_in_a_pipe(tmp_path: Path) -> None:
    """As in an /etc/aliases pipe: the installed command reads a message on stdin."""
    exe = shutil.which("tlswatch", path=str(Path(sys.executable).parent))
    assert exe is not None
    data = (VALID / "misc" / "application-gzip.eml").read_bytes()
    db = tmp_path / "pipe.duckdb"
    env = {**os.environ, "TLSWATCH_DB": str(db)}
    done = subprocess.run([exe, "ingest", "-", "--format", "json"], input=data,
                          capture_output=True, env=env, check=True)
    assert json.loads(done.stdout)["accepted"] == 1
    summary = subprocess.run([exe, "summary", "--format", "json"], capture_output=True,
                             env=env, check=True)
    assert json.loads(summary.stdout)["domains"][0]["policy_domain"] == "example.net"


def test_validate_prints_each_error_with_its_path(cli: Cli, tmp_path: Path) -> None:
    doc = make_report()
    doc["policies"][0]["summary"]["total-successful-session-count"] = "many"
    del doc["report-id"]
    path = write_json(tmp_path / "two-errors.json", doc)
    result = cli("validate", "--format", "table", str(path), str(VALID / "misc"), code=1)
    assert f"{path}: missing required field 'report-id'" in result.stdout
    assert (f"{path}: policies[0].summary.total-successful-session-count: must be a "
            'non-negative integer, got "many"') in result.stdout
    assert "bare-tlsrpt-type.eml [attachment 'report.json.gz']: valid (" in result.stdout
    assert not Path(cli.db).exists()  # validate loads nothing
    ok = cli.json("validate", str(VALID / "misc" / "with-bom.json"))
    assert ok == [{"source": str(VALID / "misc" / "with-bom.json"), "valid": True,
                   "warnings": [], "errors": []}]


def test_summary_json_shape(cli: Cli) -> None:
    cli.json("ingest", str(VALID))
    out = cli.json("summary", "--domain", "example.org")
    assert set(out) >= {"since", "until", "domains"}
    (d,) = out["domains"]
    assert {"policy_domain", "reports", "successful_sessions", "failed_sessions",
            "success_rate", "failures_by_result_type"} <= set(d)
    assert d["policy_domain"] == "example.org" and d["reports"] == 4
    assert d["failures_by_result_type"]["starttls-not-supported"] == 201


def test_summary_of_an_empty_period(cli: Cli) -> None:
    cli.json("ingest", str(VALID))
    out = cli("summary", "--since", "2020-01-01", "--until", "2020-01-02", "--format", "text")
    assert out.stdout == "No reports from 2020-01-01 to 2020-01-02.\n"


EMPTY = [  # a listing, its filters, and what it says when nothing matched
    (["summary", "--since", "2026-11-01", "--until", "2026-11-02", "-d", "example.com"],
     "No reports from 2026-11-01 to 2026-11-02 for example.com."),
    (["failures", "--since", "2026-11-26", "--org", "Nobody", "--mx", "mx9.example.com"],
     "No failed sessions since 2026-11-26 by Nobody on MX mx9.example.com."),
    (["failures", "--result-type", "dane-required", "--sending-ip", "192.0.2.9"],
     "No failed sessions of type dane-required from sending IP 192.0.2.9."),
    (["reports", "--until", "2020-01-01", "--domain", "example.org"],
     "No reports until 2020-01-01 for example.org."),
    (["alerts", "--domain", "example.org"], "No alerts for example.org."),
    (["alerts", "--outbox"], "No deliveries in the outbox."),
]


def test_an_empty_listing_says_that_nothing_matched(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    for args, sentence in EMPTY:
        assert cli(*args, "-f", "table").stdout == sentence + "\n", args
        assert cli(*args, "-f", "markdown").stdout == sentence + "\n", args
        csv_out = cli(*args, "-f", "csv").stdout
        assert csv_out.count("\n") == 1 and "," in csv_out, args  # the header alone
        as_json = cli.json(*args)
        assert as_json == [] or as_json.get("domains") == [], args
    header = cli("summary", "--since", "2020-01-01", "-f", "csv").stdout
    assert header.startswith("policy_domain,reports,successful_sessions,failed_sessions,")
    (tmp_path / "empty").mkdir()
    nothing = cli("validate", "-f", "table", str(tmp_path / "empty"))
    assert nothing.stdout == f"No reports found in {tmp_path / 'empty'}.\n"


def test_the_header_of_an_empty_csv_is_that_of_a_full_one(cli: Cli) -> None:
    from tlswatch.cli import reading

    cli.json("ingest", str(VALID))
    cli("alerts", "--check", "-f", "json")
    for args, columns in ((["failures"], reading.FAILURE_COLUMNS),
                          (["reports"], reading.REPORT_COLUMNS),
                          (["alerts"], reading.ALERT_COLUMNS)):
        full = cli(*args, "-f", "csv").stdout.splitlines()[0]
        assert full == ",".join(columns), args


def has_store(db: Path | str) -> bool:
    """Whether a store was made there (a DuckDB file, or tables in a PostgreSQL database)."""
    if isinstance(db, Path):
        return db.exists()
    with Store.open(db, read_only=True, pending_ok=True) as store:
        return store.has_table("reports")


def test_formats_are_honoured_or_refused(cli: Cli, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bad = str(INVALID / "count-is-text.json")
    refused = cli("ingest", "-f", "csv", str(VALID), code=2)
    assert "'ingest' prints table, json or markdown, not csv" in refused.stderr
    assert not has_store(cli.db)  # refused before anything was loaded
    md = cli("ingest", "-f", "markdown", bad, str(VALID / "misc"), code=1).stdout
    assert md.startswith("| accepted | duplicates | rejected | conflicts |\n|---|---|---|---|\n"
                         "| 3 | 0 | 1 | 0 |\n")
    assert "count-is-text.json | rejected | policies\\[0\\].summary" in md
    rows = cli("validate", "-f", "csv", bad, str(VALID / "misc" / "with-bom.json"),
               code=1).stdout.splitlines()
    assert rows == ["source,valid,warnings,path,message",
                    f"{bad},false,0,policies[0].summary.total-successful-session-count,"
                    '"must be a non-negative integer, got ""many"""',
                    f"{VALID / 'misc' / 'with-bom.json'},true,0,,"]
    assert cli("validate", "-f", "markdown", bad, code=1).stdout.startswith(
        "| source | valid | warnings | path | message |\n")
    assert "'text' is not one of 'table', 'json', 'csv', 'markdown'" in cli(
        "failures", "-f", "text", code=2).stderr
    assert "'fetch imap' prints table or json, not csv" in cli(
        "fetch", "imap", "--host", "h", "--user", "u", "--password-env", "NONE", "-f", "csv",
        code=2).stderr
    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("TLSWATCH_PUBLIC_HOST", "reports.example.net")
    init = ("policy", "init", "example.com", "--mx", "mx1.example.com")
    policy_id = cli.json(*init)["id"]
    assert cli(*init, "-f", "csv").stdout.splitlines() == [
        "name,type,value", f"_mta-sts.example.com,TXT,v=STSv1; id={policy_id};",
        "mta-sts.example.com,CNAME,reports.example.net.",
        "_smtp._tls.example.com,TXT,v=TLSRPTv1; rua=https://reports.example.net/v1/reports/"
        "example.com"]
    md_policy = cli(*init, "-f", "markdown").stdout
    assert "```\nversion: STSv1\nmode: testing\nmx: mx1.example.com\n" in md_policy
    assert "| mta-sts.example.com | CNAME | reports.example.net. |" in md_policy
    advice = cli("policy", "advise", "example.com", "-f", "csv").stdout
    assert advice.splitlines()[0] == ("result_type,receiving_mx_hostname,receiving_ip,"
                                      "reporters,failed_sessions")
    assert cli("policy", "advise", "example.com", "-f", "markdown").stdout.startswith(
        "example.com (")


def test_policy_init_warns_when_the_records_name_no_public_host(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.delenv("TLSWATCH_PUBLIC_HOST", raising=False)
    monkeypatch.setenv("TLSWATCH_SMTP_HOSTNAME", "")
    out = cli("policy", "init", "example.com", "--mx", "mx1.example.com", "-f", "json")
    warnings = json.loads(out.stdout)["warnings"]
    assert any("public_host and smtp_hostname are unset" in w for w in warnings)
    assert all(f"tlswatch: warning: {w}" in out.stderr for w in warnings)
    monkeypatch.setenv("TLSWATCH_PUBLIC_HOST", "tlsrpt.localdomain")
    local = cli("policy", "init", "example.com", "--mx", "mx1.example.com", "-f", "table")
    assert "tlsrpt.localdomain is not a public DNS name" in local.stderr
    assert "mta-sts.example.com.  IN CNAME  tlsrpt.localdomain.\n" in local.stdout  # unquoted
    monkeypatch.setenv("TLSWATCH_PUBLIC_HOST", "reports.example.net")
    public = cli("policy", "init", "example.com", "--mx", "mx1.example.com", "-f", "json")
    assert json.loads(public.stdout)["warnings"] == [] and public.stderr == ""


def test_failures_filters(cli: Cli) -> None:
    cli.json("ingest", str(VALID))
    rows = cli.json("failures", "--domain", "example.org", "--result-type", "certificate-expired")
    assert {r["result_type"] for r in rows} == {"certificate-expired"}
    assert sum(r["failed_sessions"] for r in rows) == 103
    by_mx = cli.json("failures", "--mx", "mx2.example.com")
    assert [(r["organization_name"], r["failed_sessions"]) for r in by_mx] == [("Google Inc.", 91)]
    by_ip = cli.json("failures", "--sending-ip", "209.85.220.41", "--org", "Google Inc.")
    assert by_ip and all(r["sending_mta_ip"] == "209.85.220.41" for r in by_ip)
    dated = cli.json("failures", "--since", "2026-11-26", "--until", "2026-11-26",
                     "--domain", "example.com")
    assert {(r["organization_name"], r["failed_sessions"]) for r in dated} == {
        ("Google Inc.", 46), ("Microsoft Corporation", 12)}


def test_reports_list_and_show(cli: Cli) -> None:
    cli.json("ingest", str(VALID))
    listed = cli.json("reports", "--org", "Microsoft Corporation")
    assert len(listed) == 3 and all(r["failed_sessions"] == 12 for r in listed)
    shown = cli.json("report", "show", str(listed[0]["id"]))
    assert shown["organization_name"] == "Microsoft Corporation"
    assert any("no time zone" in w for w in shown["warnings"])
    assert [p["policy_type"] for p in shown["policies"]] == ["sts", "tlsa"]
    assert json.loads(shown["raw_report"])["report-id"] == listed[0]["report_id"]
    by_rid = cli("report", "show", listed[0]["report_id"], "--format", "table").stdout
    assert "Warnings" in by_rid and "The report as received:" in by_rid
    missing = cli("report", "show", "no-such-report", code=1)
    assert "no report with id or report-id 'no-such-report'" in missing.stderr


def test_read_commands_before_any_ingest_say_what_to_do(cli: Cli) -> None:
    result = cli("summary", code=1)
    assert "here yet; load reports first with 'tlswatch --db" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_date_is_a_usage_error(cli: Cli) -> None:
    assert cli("summary", "--since", "yesterday", code=2).exit_code == 2


def test_settings_from_toml_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "tlswatch.toml"
    config.write_text('db = "%s"\nmax_input_bytes = 200\n' % (tmp_path / "cfg.duckdb"))
    cli = Cli(tmp_path / "ignored.duckdb")
    big = write_json(tmp_path / "big.json", make_report())
    result = cli.runner.invoke(__import__("tlswatch.cli").cli.app,
                               ["--config", str(config), "ingest", "--format", "json", str(big)])
    assert result.exit_code == 1
    assert "over the limit of 200" in json.loads(result.stdout)["rejections"][0]["reason"]
    assert (tmp_path / "cfg.duckdb").exists()
    shown = cli.runner.invoke(__import__("tlswatch.cli").cli.app,
                              ["--config", str(config), "config", "--format", "json"])
    settings = {r["setting"]: r for r in json.loads(shown.stdout)}
    assert settings["max_input_bytes"]["value"] == 200 and settings["max_json_depth"]["help"]


def test_gzip_file_named_by_the_rfc_convention(cli: Cli, tmp_path: Path) -> None:
    doc = make_report()
    del doc["policies"][0]["policy"]["policy-domain"]
    name = tmp_path / "sender.example!example.org!1795132800!1795219199!01.json.gz"
    name.write_bytes(gzip.compress(json.dumps(doc).encode()))
    cli.json("ingest", str(name))
    assert cli.json("summary")["domains"][0]["policy_domain"] == "example.org"


def test_every_command_and_setting_has_help() -> None:
    import typer.main

    from tlswatch.cli import app
    from tlswatch.config import describe

    group = typer.main.get_command(app)

    def walk(command: object, path: str) -> list[str]:
        missing = []
        sub = getattr(command, "commands", None)
        if sub:
            for name, child in sub.items():
                missing += walk(child, f"{path} {name}")
        elif not (getattr(command, "help", None) or "").strip():
            missing.append(path)
        return missing

    assert walk(group, "tlswatch") == []
    assert len(group.commands) >= 12  # type: ignore[attr-defined]
    assert all(text.strip() for _, _, text in describe())


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the app, as the words that call it."""
    found = [path]
    for name, child in (getattr(command, "commands", None) or {}).items():
        found += _commands(child, (*path, name))
    return found


def test_help_reads_as_written_for_every_command() -> None:
    """Flags show as flags, paragraphs are wrapped once (not at the docstring's line breaks),
    and no command's summary line in a command list is cut short."""
    import typer.main

    from tlswatch.cli import app

    runner = CliRunner()
    paths = _commands(typer.main.get_command(app))
    assert len(paths) >= 15
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, path
        text = result.stdout
        assert "<bool>" not in text, path
        lines = text.splitlines()
        start = lines.index("") + 1  # the first paragraph follows the usage line
        end = lines.index("", start)
        first = lines[start:end]
        for line, after in itertools.pairwise(first):
            # a line is broken only where the next word would not have fitted
            assert len(line) + 1 + len(after.split()[0]) > 78, (path, line)
        if "Commands:" in lines:
            for entry in lines[lines.index("Commands:") + 1:]:
                assert entry.startswith("  ") and entry[2] != " ", (path, entry)
                assert not entry.endswith("..."), (path, entry)
    flags = runner.invoke(app, ["export", "daily", "--help"], env={"COLUMNS": "80"}).stdout
    assert "--send / --no-send" in flags


def test_no_spike_on_a_domains_first_day(cli: Cli, tmp_path: Path) -> None:
    """With no report day before, there is no average to spike against; the day's low
    success rate still raises its alert.  The next day's spike is measured against it."""
    from datetime import UTC, datetime, timedelta

    from tests.conftest import detail, policy

    today = datetime.now(UTC).date()
    first, second = today - timedelta(days=2), today - timedelta(days=1)
    cli.json("ingest", str(write_json(tmp_path / "first.json", make_report(
        rid="n1", day=first.isoformat(),
        policies=[policy("new.example", 100, 50, [detail("certificate-expired", 50)])]))))
    kinds = {(r["day"], r["kind"]) for r in cli.json("alerts", "--check")}
    assert (first.isoformat(), "low_success_rate") in kinds
    assert not any(kind == "failure_spike" for _, kind in kinds)
    cli.json("ingest", str(write_json(tmp_path / "second.json", make_report(
        rid="n2", day=second.isoformat(),
        policies=[policy("new.example", 100, 200, [detail("certificate-expired", 200)])]))))
    spikes = [r for r in cli.json("alerts", "--check") if r["kind"] == "failure_spike"]
    assert [r["day"] for r in spikes] == [second.isoformat()]
    assert "over 3x the daily average of 50.0 of the 1 report day in the 14 days before" in \
        spikes[0]["message"]


def test_domains_cover_subdomains_with_a_wildcard(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """'*.example.com' covers a.example.com and a.b.example.com, not example.com itself."""
    from tests.conftest import policy

    monkeypatch.setenv("TLSWATCH_DOMAINS", "*.example.com,example.org")
    cli = Cli(tmp_path / "w.duckdb")
    paths = [str(write_json(tmp_path / f"{d}.json", make_report(
        rid=d, policies=[policy(d, 10, 0)]))) for d in
        ("mail.example.com", "a.b.example.com", "example.org", "example.com", "xexample.com",
         "sub.example.org")]
    out = cli.json("ingest", *paths, code=1)
    assert out["accepted"] == 3
    refused = sorted(r["reason"] for r in out["rejections"])
    assert refused == [f"not one of our domains: {d} (setting 'domains')"
                       for d in ("example.com", "sub.example.org", "xexample.com")]
    monkeypatch.setenv("TLSWATCH_DOMAINS", "*.example.com,bad domain")
    bad = cli("summary", code=1)
    assert ("setting domains: 'bad domain' is not a domain name or *.domain (any subdomain "
            "of domain)") in bad.stderr


@pytest.mark.parametrize(("name", "value", "message"), [
    ("TLSWATCH_ALERT_SUCCESS_THRESHOLD", "99",
     "setting alert_success_threshold: a fraction from 0 to 1 (0.99 for 99%), got 99.0"),
    ("TLSWATCH_FAILED_KEEP_DAYS", "-1", "setting failed_keep_days: must be 0 or more, got -1.0"),
    ("TLSWATCH_DETAIL_KEEP_DAYS", "-30", "setting detail_keep_days: must be 0 or more, got -30"),
    ("TLSWATCH_EXPORT_TIME", "25:00",
     "setting export_time: a UTC time of day as HH:MM (e.g. 06:00), got '25:00'"),
])
def test_a_setting_out_of_range_stops_every_command(
        cli: Cli, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    """An admin's 99 for 99% would alert every day; a negative keep-days would prune every
    refused input at once: both are refused with the setting named."""
    monkeypatch.setenv(name, value)
    assert message in cli("config", code=1).stderr


def test_serve_with_a_port_out_of_range_names_the_setting(cli: Cli) -> None:
    """It was a traceback ending in OverflowError from bind()."""
    result = cli("serve", "--smtp", "", "--http", "127.0.0.1:99999", code=1)
    assert "setting http: expected HOST:PORT (PORT 0 to 65535), got '127.0.0.1:99999'" \
        in result.stderr


def test_config_never_shows_the_dashboard_token_or_a_database_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlswatch.cli import app

    monkeypatch.setenv("TLSWATCH_WEB_TOKEN", "supersecret-token-123")
    runner = CliRunner()
    done = runner.invoke(app, ["--db", "postgresql://u:pw-secret@/x?host=/tmp", "config",
                               "--format", "json"])
    assert done.exit_code == 0, done.output
    assert "supersecret-token-123" not in done.output and "pw-secret" not in done.output
    shown = {row["setting"]: row["value"] for row in json.loads(done.stdout)}
    assert shown["web_token"] == "(set)" and shown["db"] == "postgresql://u:***@/x?host=/tmp"
