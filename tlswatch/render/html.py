"""HTML from Jinja2 templates, autoescaped: every string from a report is untrusted."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


@cache
def environment() -> Environment:
    return Environment(loader=PackageLoader("tlswatch.render", "templates"),
                       autoescape=select_autoescape(["html"], default=True),
                       trim_blocks=True, lstrip_blocks=True)


@cache
def stylesheet() -> str:
    return resources.files("tlswatch.render").joinpath("templates/_style.css").read_text("utf-8")


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(css=stylesheet(), **context)
