"""HTML from Jinja2 templates, autoescaped: every string from a report is untrusted."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

# Control characters (C0 but newline, tab and CR; DEL; C1) shown as \xNN: a browser would
# not act on them, but text copied from a page into a terminal would.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with its control characters shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _visible(value: Any) -> Any:
    """Every value a template prints: a string from a report with its control characters
    escaped; markup the code built (charts, links) as it is."""
    if isinstance(value, str) and not isinstance(value, Markup) and _CONTROL.search(value):
        return visible(value)
    return value


@cache
def environment() -> Environment:
    return Environment(loader=PackageLoader("tlswatch.render", "templates"),
                       autoescape=select_autoescape(["html"], default=True),
                       trim_blocks=True, lstrip_blocks=True, finalize=_visible)


@cache
def stylesheet() -> str:
    return resources.files("tlswatch.render").joinpath("templates/_style.css").read_text("utf-8")


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(css=stylesheet(), **context)
