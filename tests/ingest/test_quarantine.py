"""`tlswatch quarantine`: refused inputs from spool/failed and the database, listed once,
shown escaped, retried with today's checks (also while `serve` runs), deleted; and the log
lines of a real `serve` for every refusal and every accepted report."""

from __future__ import annotations

import gzip
import json
import os
import re
import smtplib
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GZIP_TYPE, INVALID, Cli, gz_report, make_report, policy, write_json
from tests.serving import Serve, toml_value

HOSTILE = "Evil\x1b[31m\u202eCorp"


def config(path: Path, **settings: Any) -> Path:
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items()))
    return path


def lines(server: Serve, pattern: str) -> list[str]:
    return [line for line in server.output if re.search(pattern, line)]


def wait_for_line(server: Serve, pattern: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not lines(server, pattern):
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line {pattern!r}:\n" + "".join(server.output))
        time.sleep(0.05)


# -- the command on files ('tlswatch ingest' quarantines into the database) ---------------
def test_nothing_refused_says_so(cli: Cli) -> None:
    assert cli("quarantine", "--format", "table").stdout == "no refused inputs\n"
    assert cli("quarantine", "--format", "markdown").stdout == "no refused inputs\n"
    empty = cli("quarantine", "--format", "json")
    assert json.loads(empty.stdout) == [] and empty.stderr == "no refused inputs\n"


def test_refused_file_is_listed_and_shown_escaped_and_raw(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "evil.json"
    bad.write_bytes(('{"organization-name": "' + HOSTILE + '", "report-id": 1,\n'
                     ' "note": "\x1b]0;title\x07"}').encode())
    cli("ingest", str(bad), code=1)
    [entry] = cli.json("quarantine")
    assert entry["id"] == "q1" and entry["via"] == "file" and entry["source"] == str(bad)
    assert entry["size"] == len(bad.read_bytes()) and "not valid JSON" in entry["reason"]
    shown = cli("quarantine", "show", "q1", "--format", "text").stdout
    assert f"source: {bad}" in shown and "reason: " in shown
    assert "Evil\\x1b[31m\\u202eCorp" in shown and "\\x1b]0;title\\x07" in shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert cli("quarantine", "show", "q1", "--raw").stdout_bytes == bad.read_bytes()
    out = tmp_path / "copy.bin"
    cli("quarantine", "show", "q1", "--raw", "--out", str(out))
    assert out.read_bytes() == bad.read_bytes()
    table = cli("quarantine", "--format", "table").stdout
    assert "q1" in table and "\x1b" not in table and "\u202e" not in table
    missing = cli("quarantine", "show", "q9", code=1)
    assert "'q9': no refused input with this id" in missing.stderr


def test_filters_by_day_and_reason(cli: Cli) -> None:
    cli("ingest", str(INVALID), code=1)
    every = cli.json("quarantine")
    assert len(every) == len(list(INVALID.iterdir()))
    arrays = cli.json("quarantine", "--reason", "MUST BE AN ARRAY")
    assert arrays and all("must be an array" in e["reason"] for e in arrays)
    today = every[0]["received_at"][:10]
    assert len(cli.json("quarantine", "--since", today, "--until", today)) == len(every)
    assert cli("quarantine", "--until", "2000-01-01", "--format", "table").stdout \
        == "no refused inputs\n"
    csv = cli("quarantine", "--reason", "array, not", "--format", "csv").stdout.splitlines()
    assert csv[0] == "id,received_at,via,source,size,reason,quarantine_ids" and len(csv) == 2


def test_retry_stores_what_a_fixed_rule_now_takes(cli: Cli, tmp_path: Path) -> None:
    strict = config(tmp_path / "strict.toml", domains=["example.com"])
    report = write_json(tmp_path / "other.json", make_report(
        rid="other-1", policies=[policy("other.example", 4, 1)]))
    cli("--config", str(strict), "ingest", str(report), str(INVALID / "array.json"), code=1)
    refused = {e["source"]: e for e in cli.json("quarantine")}
    assert "other.example" in refused[str(report)]["reason"]
    ident = refused[str(report)]["id"]
    again = cli.json("--config", str(strict), "quarantine", "retry", ident, code=1)
    assert again[0]["outcome"] == "refused" and "other.example" in again[0]["detail"]
    fixed = config(tmp_path / "fixed.toml", domains=["example.com", "other.example"])
    done = cli.json("--config", str(fixed), "quarantine", "retry", ident)
    assert done[0]["outcome"] == "stored" and done[0]["report_pks"] == [1]
    assert [e["source"] for e in cli.json("quarantine")] == [str(INVALID / "array.json")]
    assert cli.json("summary")["domains"][0]["policy_domain"] == "other.example"
    still = cli("quarantine", "retry", "--all", "--reason", "array", "--format", "table",
                code=1).stdout
    assert "prints table or json, not csv" in cli("quarantine", "retry", "--all", "--format",
                                                  "csv", code=2).stderr
    assert still.startswith(f"q{refused[str(INVALID / 'array.json')]['id'][1:]}: refused: ")
    assert len(cli.json("quarantine")) == 1
    assert "name the entries" in cli("quarantine", "retry", code=2).stderr


def test_delete_by_id_and_by_age(cli: Cli) -> None:
    cli("ingest", str(INVALID / "array.json"), str(INVALID / "empty.json"), code=1)
    assert cli("quarantine", "delete", "q1").stdout == "deleted 1 refused input: q1\n"
    assert cli("quarantine", "delete", "--older-than", "1").stdout == "deleted 0 refused inputs\n"
    assert [e["id"] for e in cli.json("quarantine")] == ["q2"]
    assert cli("quarantine", "delete", "--older-than", "0").stdout \
        == "deleted 1 refused input: q2\n"
    assert cli("quarantine", "delete", "q2", code=1).stderr.startswith("tlswatch: 'q2'")


# -- a real 'serve': both places, one listing, one log line each -------------------------
def test_serve_refusals_listed_once_and_each_logged_once(tmp_path: Path) -> None:
    # Without -v, as the systemd unit runs it: the INFO lines reach the journal, the SMTP
    # conversation does not.
    with Serve(tmp_path, verbose=False, domains=["example.com"],
               max_input_bytes=50_000) as server:
        url = f"{server.http_url}/v1/reports"
        good = httpx.post(url, content=gz_report("good-1"), headers=GZIP_TYPE)
        assert good.status_code == 201
        theirs = httpx.post(url, content=gz_report("theirs-1", domain="other.example"),
                            headers=GZIP_TYPE)
        assert theirs.status_code == 400
        server.wait_loaded()
        forged = gzip.compress(json.dumps(make_report(rid="good-1", policies=[
            policy("example.com", 1, 99)])).encode())
        conflict = httpx.post(url, content=forged, headers=GZIP_TYPE)
        assert conflict.status_code == 201
        assert httpx.post(url, content=b"{}", headers={"Content-Type": "text/plain"}) \
            .status_code == 415
        assert httpx.post(url, content=b"x" * 60_000, headers=GZIP_TYPE).status_code == 413
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp, \
                pytest.raises(smtplib.SMTPDataError):
            smtp.sendmail("a@example.com", ["x@example.com"],
                          b"From: a@example.com\r\nSubject: hi\r\n\r\nno report\r\n")
        server.wait_loaded()
        good_id, conflict_id = good.json()["id"], conflict.json()["id"]
        wait_for_line(server, f"refused 'http:{conflict_id}")
        cli = Cli(server.db)
        listing = cli.json("--config", str(server.config), "quarantine")
        output = "".join(server.output)
    assert len(listing) == 3, listing  # the conflict is in both places, listed once
    theirs_entry, merged, smtp_entry = listing
    assert (theirs_entry["via"], theirs_entry["source"], theirs_entry["reason"]) == (
        "http", "127.0.0.1", "not one of our domains: other.example (setting 'domains')")
    assert merged["id"] == conflict_id and merged["quarantine_ids"] == ["q1"]
    assert merged["via"] == "http" and "conflicting duplicate" in merged["reason"]
    assert (smtp_entry["via"], smtp_entry["source"]) == ("smtp", "127.0.0.1 <a@example.com>")
    expected = [
        rf"INFO tlswatch.ingest.accept: http: spooled POST /v1/reports from '127.0.0.1' as "
        rf"{good_id}: report-ids \['good-1'\]",
        rf"INFO tlswatch.ingest.loader: http: stored report 1, 'Tester Inc.' report-id "
        rf"'good-1' from 'http:{good_id}'",
        r"INFO tlswatch.ingest.accept: http: refused POST /v1/reports from '127.0.0.1': "
        r".*other\.example.*\(kept as \d{20}-",
        rf"WARNING tlswatch.ingest.loader: http: refused 'http:{conflict_id}': "
        r"\"conflicting duplicate: 'Tester Inc.' report-id 'good-1' is already stored",
        r"INFO tlswatch.ingest.http: http: answered 415 to 127.0.0.1: \"Content-Type must",
        r"INFO tlswatch.ingest.http: http: answered 413 to 127.0.0.1: 'body of 60,000 bytes",
        r"INFO tlswatch.ingest.accept: smtp: refused message from '127.0.0.1 <a@example.com>'"
        r": 'no TLS-RPT report in message \(no report attachment found\)' \(kept as \d{20}-",
    ]
    for pattern in expected:
        assert len(re.findall(pattern, output)) == 1, (pattern, output)
    assert " mail.log: " not in output


def test_failed_starttls_is_one_warning_not_a_traceback(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    with Serve(tmp_path, tls_cert=str(tmp_path / "server.pem"),
               tls_key=str(tmp_path / "server.pem")) as server:
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=30) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"220")
            sock.sendall(b"EHLO client.example\r\n")
            while reader.readline()[3:4] != b" ":
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"220")
            sock.sendall(b"\x16\x03\x01\x00\x05not a TLS client hello\r\n")
            assert reader.read() == b""  # the server closes the connection
        wait_for_line(server, "STARTTLS handshake")
        output = "".join(server.output)
    assert len(re.findall(r"WARNING tlswatch.ingest.smtp: smtp: STARTTLS handshake with "
                          r"127\.0\.0\.1 failed: \[SSL", output)) == 1, output
    assert "Traceback" not in output and "SMTP session exception" not in output


def test_retry_while_serve_runs(tmp_path: Path) -> None:
    with Serve(tmp_path, domains=["example.com"]) as server:
        url = f"{server.http_url}/v1/reports"
        refused = httpx.post(url, content=gz_report("late-1", domain="other.example"),
                             headers=GZIP_TYPE)
        assert refused.status_code == 400
        cli = Cli(server.db)
        [entry] = cli.json("--config", str(server.config), "quarantine")
        assert entry["via"] == "http" and entry["source"] == "127.0.0.1"
        fixed = config(tmp_path / "fixed.toml", **{**server.settings,
                                                   "domains": ["example.com",
                                                               "other.example"]})
        for n in range(5):  # serve keeps loading while the retry waits for the database
            assert httpx.post(url, content=gz_report(f"busy-{n}"),
                              headers=GZIP_TYPE).status_code == 201
        done = cli.json("--config", str(fixed), "quarantine", "retry", entry["id"])
        assert done[0]["outcome"] == "stored", done
        assert not (server.spool / "failed" / entry["id"]).exists()
        assert cli("--config", str(fixed), "quarantine", "--format", "table").stdout \
            == "no refused inputs\n"
        after = httpx.post(url, content=gz_report("after-1"), headers=GZIP_TYPE)
        assert after.status_code == 201
        server.wait_loaded()
        ids = server.query("SELECT report_id FROM reports ORDER BY report_id")
    assert [r[0] for r in ids] == ["after-1", "busy-0", "busy-1", "busy-2", "busy-3",
                                   "busy-4", "late-1"]


def test_retry_of_a_conflict_keeps_it_with_the_new_reason(tmp_path: Path) -> None:
    with Serve(tmp_path) as server:
        url = f"{server.http_url}/v1/reports"
        assert httpx.post(url, content=gz_report("twice"), headers=GZIP_TYPE) \
            .status_code == 201
        server.wait_loaded()
        forged = gzip.compress(json.dumps(make_report(rid="twice", policies=[
            policy("example.com", 2, 8)])).encode())
        spool_id = httpx.post(url, content=forged, headers=GZIP_TYPE).json()["id"]
        server.wait_loaded()
        cli = Cli(server.db)
        by_q = cli.json("--config", str(server.config), "quarantine", "retry", "q1", code=1)
        [entry] = cli.json("--config", str(server.config), "quarantine")
    assert by_q[0]["id"] == spool_id and by_q[0]["outcome"] == "refused"
    assert "conflicting duplicate" in by_q[0]["detail"]
    assert entry["id"] == spool_id and entry["quarantine_ids"] == ["q1"]
    assert (server.spool / "failed" / f"{spool_id}.reason").read_text().startswith(
        f"http:{spool_id}: conflicting duplicate")


def test_links_and_pipes_in_failed_are_listed_never_read(cli: Cli, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "failed").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show me")
    (spool / "failed" / "link").symlink_to(secret)
    os.mkfifo(spool / "failed" / "pipe")
    settings = config(tmp_path / "tlswatch.toml", spool=str(spool))
    listed = cli.json("--config", str(settings), "quarantine")
    assert sorted(e["id"] for e in listed) == ["link", "pipe"]
    assert all(e["reason"] == "(no reason was recorded)" for e in listed)
    for name in ("link", "pipe"):
        shown = cli("--config", str(settings), "quarantine", "show", name, "--raw", code=1)
        assert "its content cannot be read" in shown.stderr and shown.stdout == ""
    assert "do not show me" not in cli("--config", str(settings), "quarantine",
                                       "--format", "json").stdout
    cli("--config", str(settings), "quarantine", "delete", "link", "pipe")
    assert secret.exists() and list((spool / "failed").iterdir()) == []
