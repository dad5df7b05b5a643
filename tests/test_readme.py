"""The README's examples show real output.

A fenced block opened with ```` ```console check ```` runs against `make run`'s sample
database (sample_reports/valid loaded), one opened with ```` ```console check-fresh ```` against
an empty one.  Each `$ ` line is typed into a shell as it stands (leading `VAR=value` words
are environment variables), with standard output on a terminal, as a reader's is; every line
shown under it must appear in that command's output (stdout, then stderr), in order, with
`...` standing for any text.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BLOCK = re.compile(r"^```console (check|check-fresh)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXE = Path(sys.executable).parent / "tlswatch"


def examples() -> list[tuple[int, str, str, list[str]]]:
    """(block number, database, command, the lines shown) for every checked command."""
    found: list[tuple[int, str, str, list[str]]] = []
    for number, (kind, body) in enumerate(BLOCK.findall((ROOT / "README.md").read_text())):
        for line in body.splitlines():
            if line.startswith("$ "):
                found.append((number, kind, line[2:], []))
            elif found and found[-1][0] == number:
                found[-1][3].append(line)
    return found


def on_a_terminal(command: str, *, cwd: Path, db: Path) -> str:
    words = shlex.split(command)
    env = {**os.environ, "TLSWATCH_DB": str(db), "COLUMNS": "100"}
    for name in [n for n in os.environ if n.startswith("TLSWATCH_") and n != "TLSWATCH_DB"]:
        env.pop(name)
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[0] == "tlswatch", command
    leader, follower = pty.openpty()
    with subprocess.Popen([str(EXE), *words[1:]], stdin=subprocess.DEVNULL, stdout=follower,
                          stderr=subprocess.PIPE, cwd=cwd, env=env) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
        assert proc.stderr is not None
        errors = proc.stderr.read()
    out = b"".join(chunks).decode().replace("\r\n", "\n")
    return out + errors.decode()


def _pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in line.strip().split("...")))


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with sample_reports/ in it and make run's database."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "sample_reports").symlink_to(ROOT / "sample_reports")
    subprocess.run([str(EXE), "--db", str(folder / "sample.duckdb"), "ingest", "--format",
                    "json", "sample_reports/valid"], cwd=folder, check=True,
                   capture_output=True)
    return folder


CASES = examples()


def test_the_readme_has_checked_examples() -> None:
    commands = [command for _, _, command, _ in CASES]
    assert len(CASES) >= 8
    for wanted in ("summary --format text", "ingest --format json", "policy init"):
        assert any(wanted in c for c in commands), wanted


@pytest.mark.parametrize("block,kind,command,shown", CASES,
                         ids=[f"{i}-{c[:50]}" for i, (_, _, c, _) in enumerate(CASES)])
def test_readme_example(block: int, kind: str, command: str, shown: list[str],
                        place: Path) -> None:
    # a check-fresh block's commands share one new database, in the README's order
    db = place / (f"fresh-{block}.duckdb" if kind == "check-fresh" else "sample.duckdb")
    out = on_a_terminal(command, cwd=place, db=db).splitlines()
    at = 0
    for line in shown:
        if line.strip() in ("", "..."):
            continue
        pattern = _pattern(line)
        for i in range(at, len(out)):
            if pattern.fullmatch(out[i].strip()):
                at = i + 1
                break
        else:
            raise AssertionError(f"README: {command!r} does not print {line!r}; it printed:\n"
                                 + "\n".join(out))
