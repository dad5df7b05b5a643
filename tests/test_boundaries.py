"""The import boundaries between the layers, read from each module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tlswatch"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(sub: str) -> list[Path]:
    base = PACKAGE / sub
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n == "tlswatch" or n.startswith("tlswatch.")}


def test_schemas_and_errors_import_nothing_else_of_tlswatch() -> None:
    for path in modules("schemas") + modules("errors"):
        assert {n for n in ours(imports_of(path)) if not n.startswith("tlswatch.schemas")} \
            == set(), path


def test_decode_and_mail_are_pure() -> None:
    for name in ("decode", "mail", "jsontext"):
        names = imports_of(PACKAGE / "ingest" / f"{name}.py")
        assert not names & {"os", "pathlib", "socket", "duckdb", "subprocess"}, name
        assert ours(names) <= {"tlswatch.errors", "tlswatch.ingest.decode",
                               "tlswatch.ingest.mail", "tlswatch.ingest.jsontext"}, name


def test_only_the_loader_writes_to_the_store() -> None:
    for path in modules("ingest"):
        if path.name not in ("loader.py", "draining.py"):  # draining loads by the loader
            assert not any(n.startswith("tlswatch.store") for n in imports_of(path)), path


def test_analytics_has_no_presentation_framework() -> None:
    for path in modules("analytics"):
        assert not imports_of(path) & {"typer", "starlette", "jinja2", "fastapi"}, path


def test_only_the_cli_package_imports_typer() -> None:
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "cli" not in path.parents:
            assert "typer" not in imports_of(path), path


def test_exports_do_not_import_the_web_layer() -> None:
    """Exports are files for a scheduler; the dashboard must be free to change its pages."""
    assert not {n for n in ours(imports_of(PACKAGE / "exports.py"))
                if n == "tlswatch.web" or n.startswith("tlswatch.web.")}


# Every module that may open the store writable, and why.  Any other module that calls
# Store.open without read_only=True (or duckdb.connect outside the store) fails the test.
WRITERS = {
    "ingest/loader.py": "the one writer of reports and quarantine",
    "ingest/draining.py": "loads waiting spool entries through the loader",
    "cli/ingesting.py": "'tlswatch ingest' loads through the loader's functions",
    "jobs.py": "records alerts and the daily exports it made",
    "outbox.py": "records deliveries of alerts and summaries",
    "quarantine.py": "retries and deletes refused inputs (loading through the loader)",
    "mtasts/monitor.py": "records check runs and the alerts they raise",
    "upkeep.py": "prunes what is past its retention (prune, and daily in 'serve')",
    "backup.py": "applies a restored backup's pending migrations",
    "cluster.py": "records what the once-a-day work of several nodes did (cluster_days)",
    "policyfetches.py": "stores the policy fetches 'serve' recorded (in its loader process)",
    "mtasts/dnsupdate.py": "records how publishing each policy id by DNS update went",
    "mtasts/hosting.py": "records each change of a hosted policy, with who and why",
    "mtasts/acme.py": "records the certificates ACME issued, their challenges, back-off, alerts",
    "tenants/registry.py": "adds and removes tenants, their domains, users and tokens",
}


def _writable_opens(path: Path) -> list[int]:
    """Line numbers of Store.open(...) without read_only=True, and of duckdb.connect(...)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else ""
        read_only = any(k.arg == "read_only" and isinstance(k.value, ast.Constant) and
                        k.value.value is True for k in node.keywords)
        if (name, node.func.attr) in (("Store", "open"), ("duckdb", "connect")) and \
                not read_only:
            lines.append(node.lineno)
    return lines


def test_only_the_named_modules_open_the_store_writable() -> None:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "store" in path.parents:
            continue
        lines = _writable_opens(path)
        if lines:
            found[path.relative_to(PACKAGE).as_posix()] = lines
    unexpected = {name: lines for name, lines in found.items() if name not in WRITERS}
    assert not unexpected, f"opens the store writable without being a named writer: " \
                           f"{unexpected}"
    assert found, "the check finds the writers it names"
