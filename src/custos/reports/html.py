"""A report as one standalone HTML page (no scripts, no external assets, all escaped)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment


@functools.cache
def _environment() -> Environment:
    # Made on first use: every process that reads the ledger imports this package, and
    # only the report page needs Jinja.
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(resources.files("custos.reports") / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: dict[str, Any], *, check: dict[str, Any] | None = None) -> str:
    """The page for ``report``; ``check`` (a :class:`ReportCheck` dict) adds its outcome."""
    return _environment().get_template("report.html").render(report=report, check=check)
