"""One frozen settings object: defaults, then a TOML file, then TLSWATCH_* variables."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tlswatch.errors import ConfigError

MiB = 1024 * 1024


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class Settings:
    """Every setting has a default and a help text (shown by ``tlswatch config``)."""

    db: Path = field(default=Path("tlswatch.duckdb"), metadata=_help("DuckDB database file."))
    max_input_bytes: int = field(
        default=10 * MiB, metadata=_help("Largest input (file, message, POST body) accepted.")
    )
    max_inflated_bytes: int = field(
        default=50 * MiB,
        metadata=_help("Largest report after gunzip/unzip; checked while inflating."),
    )
    max_json_depth: int = field(default=64, metadata=_help("Deepest JSON nesting accepted."))
    lock_timeout: float = field(
        default=10.0, metadata=_help("Seconds to wait for another process's database lock.")
    )
    batch_size: int = field(default=2500, metadata=_help("Reports written to DuckDB per batch."))
    workers: int = field(
        default=min(4, os.cpu_count() or 1),
        metadata=_help("Processes that decode and validate a large ingest (1: no workers)."),
    )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in (Path, "Path"):
            return Path(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in ("list[str]", "tuple[str, ...]"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {value!r}: {exc}") from exc


def load_settings(
    config_path: Path | None = None, *, environ: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build the settings once: defaults < TOML file < environment < explicit overrides."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    path = config_path or (Path(env["TLSWATCH_CONFIG"]) if env.get("TLSWATCH_CONFIG") else None)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: settings file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        values.update(data.get("tlswatch", data))
    known = {f.name: f for f in fields(Settings)}
    for name in known:
        var = f"TLSWATCH_{name.upper()}"
        if var in env:
            values[name] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{path or 'settings'}: unknown setting(s): {', '.join(unknown)}")
    return Settings(**{k: _coerce(k, known[k].type, v) for k, v in values.items()})


def describe() -> list[tuple[str, str, str]]:
    """(name, default, help) for every setting, for the docs and ``tlswatch config``."""
    default = Settings()
    return [(f.name, str(getattr(default, f.name)), f.metadata["help"]) for f in fields(Settings)]
