"""Connection limits of a real ``tlswatch serve``: slow, idle and greedy clients are cut
off or refused, and another client's reports still get through."""

from __future__ import annotations

import collections
import contextlib
import re
import resource
import select
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ingest.test_receivers import GZIP_TYPE, gz_report
from tests.serving import Serve

SLOW_CLIENT = "127.0.0.2"  # loopback is 127.0.0.0/8: another source address, same host
SLOW_CONNECTIONS = 1100
HEAD = (b"POST /v1/reports HTTP/1.1\r\nHost: reports.example.com\r\n"
        b"Content-Type: application/tlsrpt+gzip\r\n" + b"X-Slow: " + b"a" * 4000)


def address(at: str) -> tuple[str, int]:
    host, _, port = at.rpartition(":")
    return host, int(port)


def connect_many(target: tuple[str, int], count: int, *, source: str = SLOW_CLIENT,
                 timeout: float = 30) -> list[socket.socket]:
    """Open ``count`` connections at once (non-blocking), wait until each is connected,
    refused or the deadline passed, and return them all (the caller closes them)."""
    socks: list[socket.socket] = []
    poller = select.poll()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(sock)
        sock.bind((source, 0))
        sock.setblocking(False)
        sock.connect_ex(target)
        poller.register(sock, select.POLLOUT)
    waiting = {s.fileno() for s in socks}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            waiting.discard(fd)
            poller.unregister(fd)
    return socks


def first_bytes(socks: list[socket.socket], timeout: float = 30) -> list[bytes]:
    """What each socket received first (b"" when it was closed or reset without a word)."""
    got: dict[int, bytes] = {}
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while len(got) < len(socks) and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            poller.unregister(fd)
            try:
                got[fd] = by_fd[fd].recv(1000)
            except OSError:
                got[fd] = b""
    return [got.get(s.fileno(), b"(nothing)") for s in socks]


class Trickle(threading.Thread):
    """Send each socket the next byte of ``data`` every 0.1 s, as a slowloris client does."""

    def __init__(self, socks: list[socket.socket], data: bytes) -> None:
        super().__init__(daemon=True)
        self.socks, self.data = socks, data
        self.stop = threading.Event()

    def run(self) -> None:
        live = list(self.socks)
        for i in range(len(self.data)):
            if self.stop.wait(0.1) or not live:
                return
            still = []
            for sock in live:
                try:
                    sock.send(self.data[i:i + 1])
                    still.append(sock)
                except BlockingIOError:
                    still.append(sock)
                except OSError:
                    pass  # closed by the server
            live = still


@contextlib.contextmanager
def open_files(wanted: int) -> Iterator[None]:
    """Raise this process's limit of open files for the test's own sockets; restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        yield
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        pytest.skip(f"cannot raise the open-files limit to {wanted} (hard limit {hard})")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def metric(server: Serve, name: str) -> float:
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_1100_slow_connections_from_one_client_do_not_stop_another(tmp_path: Path) -> None:
    with open_files(2 * SLOW_CONNECTIONS + 512), Serve(tmp_path, http_rate_limit=0) as server:
        # The serve process gets the usual default of open files (as without LimitNOFILE).
        assert server.proc is not None
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (1024, 1024))
        assert server.http_url and server.smtp_at
        http_socks = connect_many(address(server.http_url.split("//")[1]), SLOW_CONNECTIONS)
        smtp_socks = connect_many(address(server.smtp_at), SLOW_CONNECTIONS)
        trickle = Trickle(http_socks, HEAD)
        trickle.start()
        try:
            # Another client (127.0.0.1) posts a report and says EHLO meanwhile.
            reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("good-1"),
                               headers=GZIP_TYPE, timeout=20)
            assert reply.status_code == 201, reply.text
            with smtplib.SMTP(*address(server.smtp_at), timeout=20) as smtp:
                assert smtp.ehlo()[0] == 250
            greetings = [g[:3] for g in first_bytes(smtp_socks)]
            # One client gets its 100 sessions (max_connections_per_ip); the rest: 421.
            counted = collections.Counter(greetings)
            assert counted == {b"220": 100, b"421": SLOW_CONNECTIONS - 100}, counted
            refused = metric(server, 'tlswatch_connections_refused_total{reason="per_client",'
                             'via="http"}')
            assert refused >= SLOW_CONNECTIONS - 100
        finally:
            trickle.stop.set()
            trickle.join()
            for sock in http_socks + smtp_socks:
                sock.close()
        server.wait_loaded()
        assert server.query("SELECT count(*) FROM reports WHERE report_id = 'good-1'") == [(1,)]
        assert server.stop() == 0
    # Two thousand refusals, one log line (two if a minute passed): the rest are counted.
    logged = [line for line in server.output if "refused a connection from" in line]
    assert 1 <= len(logged) <= 2, logged


@pytest.mark.parametrize("phase, at_once, byte_by_byte", [
    ("head", b"", HEAD),
    ("body", b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 4000\r\n\r\n", b"{" * 4000),
])
def test_a_request_sent_byte_by_byte_is_cut_off(tmp_path: Path, phase: str, at_once: bytes,
                                                byte_by_byte: bytes) -> None:
    with Serve(tmp_path, smtp="", http_header_timeout=1, http_body_timeout=1) as server:
        assert server.http_url
        [sock] = connect_many(address(server.http_url.split("//")[1]), 1, source="127.0.0.1")
        sock.send(at_once)
        trickle = Trickle([sock], byte_by_byte)
        trickle.start()
        try:
            closed = first_bytes([sock], timeout=30)[0]
        finally:
            trickle.stop.set()
            trickle.join()
            sock.close()
        assert closed == b"", f"the {phase} was still being read: {closed!r}"
        assert server.stop() == 0
    assert any(f"the request {phase} did not arrive within 1 s" in line
               for line in server.output)


def test_an_unfinished_request_head_over_the_size_limit_gets_400(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", http_max_header_bytes=4096) as server:
        assert server.http_url
        with socket.create_connection(address(server.http_url.split("//")[1]),
                                      timeout=20) as sock:
            sock.sendall(HEAD[:6000])  # no blank line yet: the head is still unfinished
            assert sock.recv(1000).startswith(b"HTTP/1.1 400 ")
        small = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("small-head"),
                           headers={**GZIP_TYPE, "X-Small": "s" * 2000}, timeout=20)
        assert small.status_code == 201
        assert server.stop() == 0


def test_an_idle_smtp_session_is_closed_with_421(tmp_path: Path) -> None:
    with Serve(tmp_path, http="", smtp_timeout=1) as server:
        assert server.smtp_at
        with socket.create_connection(address(server.smtp_at), timeout=30) as sock:
            received = b""
            while chunk := sock.recv(1000):  # the greeting, then (idle) the timeout
                received += chunk
        assert received.startswith(b"220 ")
        assert b"\r\n421 4.4.2 " in received
        assert server.stop() == 0


def test_smtp_command_size_limit(tmp_path: Path) -> None:
    with Serve(tmp_path, http="", smtp_command_size_limit=100) as server:
        assert server.smtp_at
        with smtplib.SMTP(*address(server.smtp_at), timeout=20) as smtp:
            code, text = smtp.docmd("EHLO", "a" * 150 + ".example")
            assert (code, text) == (500, b"Command line too long")
            assert smtp.ehlo("mx.example.com")[0] == 250
        assert server.stop() == 0


def test_smtp_sessions_beyond_the_total_cap_are_refused(tmp_path: Path) -> None:
    with Serve(tmp_path, http="", max_connections=3, max_connections_per_ip=0) as server:
        assert server.smtp_at
        socks = connect_many(address(server.smtp_at), 5, source="127.0.0.1")
        try:
            greetings = sorted(g[:3] for g in first_bytes(socks))
        finally:
            for sock in socks:
                sock.close()
        assert greetings == [b"220"] * 3 + [b"421"] * 2
        assert server.stop() == 0


def _held(server: Serve) -> float:
    return metric(server, "tlswatch_http_body_bytes")


def _wait(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_bodies_of_unfinished_requests_share_one_byte_budget(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", http_rate_limit=0, http_body_budget=100_000,
               max_input_bytes=200_000) as server:
        assert server.http_url
        url = f"{server.http_url}/v1/reports"
        [greedy] = connect_many(address(server.http_url.split("//")[1]), 1, source=SLOW_CLIENT)
        try:
            greedy.setblocking(True)
            greedy.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                           b"application/json\r\nContent-Length: 95000\r\n\r\n" + b" " * 90_000)
            _wait(lambda: _held(server) >= 90_000, "the server holds the unfinished body")
            # Declared: refused before its body is read.
            declared = httpx.post(url, content=b"x" * 50_000, headers=GZIP_TYPE, timeout=20)
            # Chunked (no length): refused as it passes the budget.
            chunked = httpx.post(url, content=iter([b"x" * 10_000] * 5), headers=GZIP_TYPE,
                                 timeout=20)
            for reply in (declared, chunked):
                assert reply.status_code == 503, reply.text
                assert reply.headers["retry-after"].isdigit()
                assert "unfinished uploads" in reply.json()["error"]
        finally:
            greedy.close()
        _wait(lambda: _held(server) == 0, "the closed request's bytes are released")
        reply = httpx.post(url, content=gz_report("after-budget"), headers=GZIP_TYPE,
                           timeout=20)
        assert reply.status_code == 201, reply.text
        assert server.stop() == 0


def test_a_connection_over_the_per_client_cap_gets_503(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", max_connections_per_ip=1) as server:
        assert server.http_url
        target = address(server.http_url.split("//")[1])
        # Both wait in the listening socket's queue and are taken in order.
        first, second = connect_many(target, 2, source=SLOW_CLIENT)
        try:
            answer = first_bytes([second])[0]
        finally:
            first.close()
            second.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in answer, answer
        assert b"max_connections_per_ip" in answer
        assert server.stop() == 0
