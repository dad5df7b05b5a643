"""The import boundaries of DESIGN.md, read from each module's imports."""

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
    for name in ("decode", "mail"):
        names = imports_of(PACKAGE / "ingest" / f"{name}.py")
        assert not names & {"os", "pathlib", "socket", "duckdb", "subprocess"}, name
        assert ours(names) <= {"tlswatch.errors", "tlswatch.ingest.decode",
                               "tlswatch.ingest.mail"}, name


def test_only_the_loader_writes_to_the_store() -> None:
    for path in modules("ingest"):
        if path.name != "loader.py":
            assert not any(n.startswith("tlswatch.store") for n in imports_of(path)), path


def test_analytics_has_no_presentation_framework() -> None:
    for path in modules("analytics"):
        assert not imports_of(path) & {"typer", "starlette", "jinja2", "fastapi"}, path


def test_only_the_cli_package_imports_typer() -> None:
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "cli" not in path.parents:
            assert "typer" not in imports_of(path), path
