"""A report as one standalone HTML page (no scripts, no external assets, all escaped)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

_ENV = Environment(
    loader=FileSystemLoader(str(resources.files("custos.reports") / "templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: dict[str, Any], *, check: dict[str, Any] | None = None) -> str:
    """The page for ``report``; ``check`` (a :class:`ReportCheck` dict) adds its outcome."""
    return _ENV.get_template("report.html").render(report=report, check=check)
