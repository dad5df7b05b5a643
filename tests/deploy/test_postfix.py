"""deploy/postfix.md, for real: Debian's Postfix on loopback, configured with the blocks of
that file (only paths, ports and the pipe's user moved), relays report mail (a) by LMTP to
a running `tlswatch serve` and (b) through the pipe transport to `tlswatch ingest -`,
where exit 75 defers the message (retried, then loaded) and exit 1 bounces it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import smtplib
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import ROOT, Cli, report_mail
from tests.deploy.postfix import POSTFIX, PrivatePostfix, doc_blocks
from tests.serving import Serve, toml_value

pytestmark = pytest.mark.skipif(not os.path.exists(POSTFIX),
                                reason="Postfix is not installed (make system-deps installs it)")

REPORTER = "noreply@reporter.example"
ADDRESS = "tlsrpt@reports.example.com"
# Mail that leaves the test (bounces to the reporter) is thrown away, never looked up.
NO_OUTSIDE = "default_transport = discard:\n"


def moved(text: str, config: Path) -> str:
    return text.replace("/etc/postfix/", f"{config}/")


def postfix_for(root: Path, section: str, **replace: str) -> PrivatePostfix:
    """An instance configured with the common blocks and those of ``section``."""
    common, own = doc_blocks(""), doc_blocks(section)
    config = root / "etc"

    for old in replace:  # what the test moves is in the document as written
        assert any(old in block for block in own.values()), old

    def edit(text: str) -> str:
        for old, new in replace.items():
            text = text.replace(old, new)
        return moved(text, config)

    main = common["/etc/postfix/main.cf"] + own.get("/etc/postfix/main.cf", "") + NO_OUTSIDE
    maps = {"relay_recipients": common["/etc/postfix/relay_recipients"],
            "transport": edit(own["/etc/postfix/transport"])}
    return PrivatePostfix(root, main=edit(main), master=edit(own.get("/etc/postfix/master.cf",
                                                                     "")), maps=maps)


def send(postfix: PrivatePostfix, mail: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=60) as smtp:
        assert smtp.sendmail(REPORTER, [ADDRESS], mail) == {}


def wait_for(what: str, check: Callable[[], bool], postfix: PrivatePostfix,
             timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not seen\n{postfix.queued()}\n" \
                                            f"{postfix.logged()}"
        time.sleep(0.1)


def summary_reports(db: Path) -> int:
    if not db.exists():
        return 0
    result = Cli(db)("summary", "--format", "json", code=None)
    if result.exit_code != 0:
        return 0
    return sum(d["reports"] for d in json.loads(result.stdout)["domains"])


def test_relay_and_lmtp_to_serve(tmp_path: Path) -> None:
    settings = tomllib.loads(doc_blocks("A)")["/etc/tlswatch.toml"])
    assert settings["lmtp"] is True and settings["report_addresses"] == [ADDRESS]
    (tmp_path / "tlswatch").mkdir()
    with Serve(tmp_path / "tlswatch", **{**settings, "smtp": "127.0.0.1:0", "http": ""}) \
            as serve:
        postfix = postfix_for(tmp_path / "postfix", "A)",
                              **{"127.0.0.1:2424": str(serve.smtp_at)})
        with postfix:
            with smtplib.SMTP("127.0.0.1", postfix.port, timeout=60) as smtp:
                smtp.ehlo("reporter.example")
                smtp.mail(REPORTER)
                code, _ = smtp.rcpt("someone-else@reports.example.com")
                assert code == 550  # relay_recipient_maps: only the report address
            send(postfix, report_mail("via-postfix-lmtp"))
            wait_for("the report in summary", lambda: summary_reports(serve.db) == 1, postfix)
            assert "status=sent" in postfix.logged() and "lmtp" in postfix.logged()
        assert serve.stop() == 0


@pytest.fixture
def pipe_home() -> Iterator[Path]:
    """The pipe's user ('nobody' here, 'tlswatch' in production) owns the database folder;
    it is outside the test's folder, which only root may enter."""
    home = Path(tempfile.mkdtemp(prefix="tlswatch-pipe-"))
    os.chmod(home, 0o755)
    shutil.chown(home, "nobody")
    try:
        yield home
    finally:
        shutil.rmtree(home)


@contextlib.contextmanager
def searchable_by_others(*paths: Path) -> Iterator[None]:
    """Let the pipe's unprivileged user reach ``paths`` (this checkout's code and this
    virtualenv's packages, e.g. in a clone under a folder made by ``mktemp -d``): each folder
    on the way that others may not search gets o+x (search, not listing) for the test, and
    its mode back afterwards."""
    changed: dict[Path, int] = {}
    for path in paths:
        real = path.resolve()
        for folder in [real, *real.parents]:
            mode = stat.S_IMODE(folder.stat().st_mode)
            if folder.is_dir() and not mode & stat.S_IXOTH and folder not in changed:
                changed[folder] = mode
                os.chmod(folder, mode | stat.S_IXOTH)
    try:
        yield
    finally:
        for folder, mode in changed.items():
            os.chmod(folder, mode)


@pytest.fixture
def code_reachable() -> Iterator[None]:
    with searchable_by_others(site_packages(), ROOT / "tlswatch"):
        yield


def others_may_run(path: Path) -> bool:
    """Whether a user other than root can execute ``path`` (every folder on the way
    searchable by others, the file executable by others)."""
    real = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents])


def pipe_command(home: Path) -> str:
    """The program the pipe runs as an unprivileged user: this virtualenv's tlswatch, or,
    when its interpreter lives where only root may enter (e.g. under /root/.pyenv), a
    launcher that runs the system's Python of the same version with this virtualenv's
    packages: the same code as `tlswatch`, as an installed console script would run it."""
    script = Path(sys.executable).parent / "tlswatch"
    if others_may_run(Path(sys.executable)):
        return str(script)
    system = Path("/usr/bin/python3")
    version = subprocess.run([str(system), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip() \
        if system.exists() else ""
    if version != str(sys.version_info[:2]):
        pytest.skip(f"the pipe's user cannot run {sys.executable} (a folder on its way is "
                    f"closed to others) and {system} is not Python {sys.version_info[:2]}")
    launcher = home / "tlswatch"
    launcher.write_text(f"#!{system}\nimport site\nsite.addsitedir({str(site_packages())!r})\n"
                        "from tlswatch.cli import main\nmain()\n")
    launcher.chmod(0o755)
    return str(launcher)


def site_packages() -> Path:
    import site
    return Path(next(p for p in site.getsitepackages() if p.startswith(sys.prefix)))


def test_pipe_to_ingest_defers_on_75_and_bounces_on_1(tmp_path: Path, pipe_home: Path,
                                                      code_reachable: None) -> None:
    db = pipe_home / "tlswatch.duckdb"
    config = pipe_home / "tlswatch.toml"
    config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in {
        "db": str(db), "spool": str(pipe_home / "spool"), "domains": ["example.com"],
        "lock_timeout": 1, "workers": 1}.items()))
    tlswatch = pipe_command(pipe_home)
    postfix = postfix_for(tmp_path / "postfix", "B)", **{
        "/opt/tlswatch/.venv/bin/tlswatch": tlswatch, "/etc/tlswatch.toml": str(config),
        "user=tlswatch": "user=nobody"})
    with postfix:
        send(postfix, report_mail("via-postfix-pipe"))
        wait_for("the first report", lambda: summary_reports(db) == 1, postfix)

        # The database held by another process past lock_timeout: 75, deferred, retried.
        holder = subprocess.Popen(
            [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
             "print('locked', flush=True); sys.stdin.read()", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            send(postfix, report_mail("while-locked"))
            wait_for("a deferral", lambda: "status=deferred" in postfix.logged(), postfix)
            deferred = deliveries(postfix, "status=deferred")
            assert "dsn=4.3.0, status=deferred (temporary failure. Command output: tlswatch: " \
                in deferred[0] and "locked by another process" in deferred[0], deferred
        finally:
            holder.communicate("", timeout=30)
        wait_for("the deferred report", lambda: summary_reports(db) == 2, postfix)

        # A refused report: 1, bounced to the sender, kept in the quarantine.
        send(postfix, report_mail("not-ours", domain="example.net"))
        wait_for("a bounce", lambda: "status=bounced" in postfix.logged(), postfix)
        bounced = deliveries(postfix, "status=bounced")
        assert "dsn=5.3.0, status=bounced (Command died with status 1" in bounced[0], bounced
        assert "not one of our domains: example.net" in bounced[0]
        assert summary_reports(db) == 2
        assert len(deliveries(postfix, "status=sent")) == 2
        assert len(deliveries(postfix, "status=deferred")) >= 1
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM quarantine").fetchall() == [(1,)]
    finally:
        con.close()


def deliveries(postfix: PrivatePostfix, status: str) -> list[str]:
    """The pipe's log lines for deliveries to tlswatch with ``status``."""
    return [line for line in postfix.logged().splitlines()
            if "relay=tlswatch," in line and status in line]
