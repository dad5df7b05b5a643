"""Every date and numeric option is bounded: a value out of range is a usage error (exit 2)
naming the option and the value, never a traceback or a database error with SQL in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json

DAY = "2026-11-25"


@pytest.fixture
def loaded(cli: Cli, tmp_path: Path) -> Cli:
    doc = make_report(day=DAY, policies=[policy("example.com", 5, 2,
                                                [detail("certificate-expired", 2)])])
    cli("ingest", str(write_json(tmp_path / "r.json", doc)))
    return cli


def _usage_error(cli: Cli, *args: str, option: str, value: str) -> None:
    result = cli(*args, code=None)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert f"'{option}'" in result.stderr and value in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "LINE" not in result.stderr


@pytest.mark.parametrize(("args", "option", "value"), [
    (("summary", "--since", "0001-01-01", "--until", "9999-12-31"), "--since", "0001-01-01"),
    (("summary", "--since", "1970-01-01", "--until", "9999-12-31"), "--until", "9999-12-31"),
    (("failures", "--since", "1969-12-31"), "--since", "1969-12-31"),
    (("reports", "--until", "9999-12-31"), "--until", "9999-12-31"),
    (("alerts", "--since", "0001-01-01"), "--since", "0001-01-01"),
    (("export", "daily", "--out", "OUT", "--date", "0001-01-01"), "--date", "0001-01-01"),
    (("export", "daily", "--out", "OUT", "--date", "9999-12-31"), "--date", "9999-12-31"),
    (("quarantine", "--since", "0001-01-01"), "--since", "0001-01-01"),
    (("checks", "--since", "0001-01-01"), "--since", "0001-01-01"),
    (("policy", "fetches", "example.com", "--until", "0001-01-01"), "--until", "0001-01-01"),
    (("summary", "--since", "2026-11-26", "--until", "2026-11-25"), "--since", "2026-11-26"),
])
def test_dates_out_of_range_are_usage_errors(loaded: Cli, tmp_path: Path, args: tuple[str, ...],
                                             option: str, value: str) -> None:
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    _usage_error(loaded, *args, option=option, value=value)
    assert not (tmp_path / "out").exists()


def test_the_widest_range_taken_is_summarised(loaded: Cli) -> None:
    out = loaded.json("summary", "--since", "1970-01-01", "--until", "9999-12-30")
    assert out["domains"][0]["failed_sessions"] == 2
    assert loaded.json("summary", "--since", "1970-01-01")["domains"][0]["reports"] == 1
    assert loaded.json("failures", "--until", "9999-12-30")[0]["failed_sessions"] == 2


@pytest.mark.parametrize(("args", "option", "value"), [
    (("failures", "--limit", "9223372036854775808"), "--limit", "9223372036854775808"),
    (("failures", "--limit", "-1"), "--limit", "-1"),
    (("reports", "--limit", "0"), "--limit", "0"),
    (("reports", "--limit", "99999999999999999999"), "--limit", "99999999999999999999"),
    (("policy", "fetches", "example.com", "--limit", "-5"), "--limit", "-5"),
    (("policy", "advise", "example.com", "--days", "9223372036854775808"), "--days",
     "9223372036854775808"),
    (("check", "example.com", "--timeout", "1e308"), "--timeout", "1e+308"),
    (("check", "example.com", "--smtp-port", "70000"), "--smtp-port", "70000"),
    (("quarantine", "delete", "--older-than", "1e300"), "--older-than", "1e+300"),
    (("fetch", "imap", "--port", "0"), "--port", "0"),
])
def test_numbers_out_of_range_are_usage_errors(loaded: Cli, args: tuple[str, ...], option: str,
                                               value: str) -> None:
    _usage_error(loaded, *args, option=option, value=value)


def test_limits_in_range_still_work(loaded: Cli) -> None:
    assert len(loaded.json("failures", "--limit", "1000000")) == 1
    assert len(loaded.json("reports", "--limit", "1")) == 1


def test_the_last_days_allowed_have_no_whole_month_after_them() -> None:
    from datetime import date

    from tlswatch.analytics.queries import whole_months

    assert whole_months(date(9999, 12, 15), date(9999, 12, 30))[0] == date.max
    assert whole_months(date(1970, 1, 1), date(9999, 12, 30)) == (date(1970, 1, 1),
                                                                   date(9999, 11, 1))
    assert whole_months(date(2026, 2, 2), date(2026, 4, 30)) == (date(2026, 3, 1),
                                                                 date(2026, 4, 1))
