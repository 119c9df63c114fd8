"""The dashboard as a privacy officer reads it (issue #24, point 5), in a real browser on the
real service: numbers on the severity bars and a scale on the volume chart, principal chart
labels that do not overlap, a precise read as one row of the access log, times to the second
in UTC, a subject report that says what it covers, and triage with no verdict chosen for the
officer. One service for the module; screenshots kept in the module's tmp dir."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from custos.access import Custos
from custos.detect.engine import Finding
from custos.policy import AccessRequest
from tests.api.conftest import Service, populate, run_service
from tests.factories import ask
from tests.web.test_dashboard import CHROMIUM, signed_in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium")

#: A time with its fraction of a second shown: what the pages must not print.
MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d[.,]\d")


@pytest.fixture(scope="module")
def officer_world(module_system: Custos) -> Iterator[Service]:
    """The 2022 world with one precise read released under a two-person grant and a case
    of alerts about emp-2001, served once for the module."""
    system = module_system
    tokens = populate(system)
    request = ask(system)
    system.approvals.approve(request, "emp-3002", "report checked")
    system.approvals.approve(request, "emp-4001", "proportionate")
    released = system.read(
        AccessRequest(
            "emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10", precision="precise"
        )
    )
    assert released.records
    system.read(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )
    system.feed_events()
    now = datetime.now(UTC)
    system.casebook.record(
        [
            Finding(
                rule=rule,
                severity=severity,
                principals=("emp-2001",),
                subjects=("user-42",),
                events=(),
                first_seen=now - timedelta(hours=5, microseconds=123456),
                last_seen=now - timedelta(hours=1, microseconds=654321),
                explanation=f"emp-2001 ({rule.replace('_', ' ')}) made by hand for the test",
                key=rule,
            )
            for rule, severity in (
                ("protected_subject_attempt", "critical"),
                ("repeated_subject", "high"),
                ("deny_retry", "high"),
            )
        ]
    )
    for url, app in run_service(system):
        yield Service(system, url, app, tokens)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def snap(page: Page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def no_microseconds(page: Page) -> None:
    text = page.locator("main").inner_text()
    assert not MICROSECONDS.search(text), MICROSECONDS.search(text)


def test_overview_bars_carry_numbers_and_a_scale(
    browser: Browser, officer_world: Service, shots: Path
) -> None:
    priya = signed_in(browser, officer_world.url, "priya")
    severity = priya.locator("svg[aria-label='Open alerts by severity']")
    values = severity.locator("text.value").all_text_contents()
    assert values == ["1", "2", "0", "0"]  # critical, high, medium, low
    volume = priya.locator("svg[aria-label='Accesses per day, last 14 days']")
    scale = volume.locator("g.scale text").all_text_contents()
    assert scale[:2] == ["0", str(float(scale[2]) / 2).removesuffix(".0")]
    assert float(scale[2]) >= 2
    no_microseconds(priya)
    snap(priya, shots, "overview")


def test_an_alert_has_no_verdict_chosen_and_none_is_refused(
    browser: Browser, officer_world: Service, shots: Path
) -> None:
    alert = officer_world.system.casebook.alerts()[0]
    priya = signed_in(browser, officer_world.url, "priya")
    priya.goto(f"/alerts/{alert.id}")
    select = priya.get_by_label("Disposition")
    expect(select).to_have_value("")
    assert select.evaluate("s => s.required")
    # The browser will not send the form without a verdict...
    priya.get_by_role("button", name="Close the case").click()
    assert select.evaluate("s => s.validity.valueMissing")
    expect(priya.get_by_role("heading", name=f"Alert {alert.id}")).to_be_visible()
    no_microseconds(priya)
    expect(priya.locator("dl.facts")).to_contain_text("UTC")
    snap(priya, shots, "alert")
    # ...and the service refuses one sent without, in place, closing nothing.
    session = officer_world.session("priya")
    refused = session.post(f"/cases/{alert.case}/close", data={"disposition": ""})
    assert refused.status_code == 200
    assert "Choose a disposition" in refused.text
    assert officer_world.system.casebook.case(str(alert.case)).status == "open"


def test_a_subject_report_says_what_it_covers(
    browser: Browser, officer_world: Service, shots: Path
) -> None:
    priya = signed_in(browser, officer_world.url, "priya")
    priya.goto("/subjects/user-42")
    expect(priya.locator("#verification")).to_contain_text("verified")
    scope = priya.locator("#report-scope")
    expect(scope).to_contain_text("custos's own ledger entries")
    expect(scope).to_contain_text("imported from other paths")
    expect(scope).to_contain_text("grows by one at each view")
    expect(priya.locator("#accesses tbody tr").first).to_be_visible()
    no_microseconds(priya)
    snap(priya, shots, "subject-report")


def test_the_access_log_shows_a_precise_read_once(
    browser: Browser, officer_world: Service, shots: Path
) -> None:
    priya = signed_in(browser, officer_world.url, "priya")
    priya.goto("/events?subject=user-42&principal=emp-3001")
    # emp-3001's two decisions: approval required, then the read under the grant, whose
    # release (stored as an event of its own) is folded into it.
    expect(priya.locator("#events tbody tr")).to_have_count(2)
    rows = priya.locator("#events tbody tr", has_text="allow")
    expect(rows).to_have_count(1)
    cells = rows.first.locator("td").all_inner_texts()
    assert cells[6:9] == ["allow", "precise", "3"]  # decision, precision, records released
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells[0])
    snap(priya, shots, "access-log")


def test_the_principal_chart_labels_do_not_overlap(
    browser: Browser, officer_world: Service, shots: Path
) -> None:
    priya = signed_in(browser, officer_world.url, "priya")
    priya.goto("/principals/emp-2001")
    labels = priya.locator("svg.chart text.axis")
    expect(labels).to_have_count(8)  # one per week, not one per bar
    boxes = [b for b in (labels.nth(n).bounding_box() for n in range(8)) if b is not None]
    assert len(boxes) == 8
    for left, right in itertools.pairwise(boxes):
        assert left["x"] + left["width"] <= right["x"], (left, right)
    no_microseconds(priya)
    path = snap(priya, shots, "principal")
    assert path.is_file()
