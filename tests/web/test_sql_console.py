"""The dashboard's SQL console in a real browser (Playwright, Debian's Chromium) against the
real service on loopback, Custos.query and a real DuckDB source: coarse rows with each
column's precision, and refusals with their reasons, in place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from custos.access import Custos
from tests.api.conftest import PASSWORD, Service, run_service
from tests.sql.world import sql_home
from tests.web.test_dashboard import CHROMIUM, shot, signed_in

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM} (scripts/test installs it)"
)


@pytest.fixture
def console(system: Custos) -> Iterator[Service]:
    sql_home(system)
    # People who sign in to the dashboard, linked to the directory's principals.
    system.accounts.add("sam", PASSWORD, ["investigator"], "emp-1001")  # a support agent
    system.accounts.add("ines", PASSWORD, ["auditor"], "emp-2001")  # internal audit
    system.accounts.add("root", PASSWORD, ["admin"])
    for url, app in run_service(system):
        yield Service(system, url, app)


def run(page: Page, *, source: str = "app", purpose: str, ticket: str, sql: str) -> None:
    page.get_by_label("Source").select_option(source)
    page.get_by_label("Purpose").select_option(purpose)
    page.get_by_label("Ticket").fill(ticket)
    page.get_by_label("SELECT").fill(sql)
    page.get_by_role("button", name="Run").click()


def test_a_support_query_shows_coarse_rows_and_precision(
    browser: Browser, console: Service
) -> None:
    page = signed_in(browser, console.url, "sam")
    page.get_by_role("link", name="SQL").click()
    expect(page.get_by_role("heading", name="SQL console")).to_be_visible()
    start = console.system.ledger.size()
    run(
        page,
        purpose="support",
        ticket="T-1",
        sql="SELECT login_at, ip, email FROM logins WHERE user_id = 'user-1' ORDER BY login_at",
    )
    rows = page.locator("#rows tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first.locator("td").nth(1)).to_have_text("198.51.100.0/24")
    expect(page.locator("#rows tr.precision td").nth(0)).to_have_text("plain")
    expect(page.locator("#rows tr.precision td").nth(1)).to_have_text("ip_history: coarse")
    expect(page.locator("#rows tr.precision td").nth(2)).to_have_text("contact: precise")
    expect(page.locator("#summary")).to_contain_text("3 rows; release logged at ledger index")
    shot(page, "sql-console-coarse-rows")
    raw = [
        json.loads(r) for _, r in console.system.ledger.entries(start, console.system.ledger.size())
    ]
    release = [e for e in raw if e["type"] == "sql_release"]
    assert len(release) == 1
    assert {e["source"] for e in raw if e["type"] == "decision"} == {"dashboard:sam"}


def test_the_2022_query_is_refused_with_its_reason(browser: Browser, console: Service) -> None:
    page = signed_in(browser, console.url, "ines")
    page.goto("/sql")
    run(
        page,
        purpose="internal_investigation",
        ticket="T-7",
        sql="SELECT login_at, ip FROM logins WHERE user_id = 'user-42'",
    )
    refusal = page.get_by_role("alert")
    expect(refusal).to_contain_text("Refused")
    expect(refusal).to_contain_text("source protection")
    expect(page.locator("#rows")).to_have_count(0)
    shot(page, "sql-console-refused")
    # Rejected SQL says what is wrong, in place.
    run(page, purpose="internal_investigation", ticket="T-7", sql="DELETE FROM logins")
    expect(page.get_by_role("alert")).to_contain_text("Not run")


def test_the_console_needs_a_signed_in_person_with_a_principal(
    browser: Browser, console: Service
) -> None:
    anonymous = browser.new_context(base_url=console.url).new_page()
    anonymous.goto("/sql")
    expect(anonymous.get_by_role("heading", name="Sign in")).to_be_visible()
    with console.client() as client:
        assert (
            client.post(
                "/sql", data={"source": "app", "purpose": "support", "sql": "SELECT 1"}
            ).status_code
            == 401
        )
    # A signed-in session without its CSRF token (another site's form) is refused.
    session = console.session("sam")
    del session.headers["X-CSRF-Token"]
    form = {"source": "app", "purpose": "support", "ticket": "T-1", "sql": "SELECT 1"}
    assert session.post("/sql", data=form).status_code == 403
    session.close()
    admin = signed_in(browser, console.url, "root")
    expect(admin.get_by_role("link", name="SQL")).to_have_count(0)
    reply = admin.goto("/sql")
    assert reply is not None
    assert reply.status == 403


def test_without_a_data_map_the_console_says_so(service: Service) -> None:
    session = service.session("ivy")  # an investigator linked to emp-5001; no sources.yaml
    page = session.get("/sql")
    session.close()
    assert page.status_code == 200
    assert "No data map to query" in page.text
    assert 'name="sql"' not in page.text
