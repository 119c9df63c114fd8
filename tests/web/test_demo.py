"""The README's main job in a real browser: the demo's service, its alert and evidence, an
approval that needs a second person, and the journalist's transparency report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from custos.cli.demo import Demo, run_demo
from tests.web.test_dashboard import CHROMIUM, shot, signed_in

PASSWORD = "demo password for tests"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium")


@pytest.fixture
def demo(home: Path) -> Iterator[Demo]:
    running = run_demo(home, employees=60, days=14, seed=7, port=0, password=PASSWORD)
    yield running
    running.stop()


def test_the_demo_in_the_dashboard(browser: Browser, demo: Demo) -> None:
    summary = demo.summary
    investigator = signed_in(browser, demo.url, "investigator", PASSWORD)
    shot(investigator, "demo-overview")
    investigator.get_by_role("link", name="Alerts").first.click()
    alert = summary["top_alert_id"]
    investigator.get_by_role("link", name=alert, exact=True).click()
    expect(investigator.locator("#explanation")).to_contain_text(summary["culprits"][0][:4])
    evidence = investigator.locator("#evidence tbody tr")
    expect(evidence.first).to_be_visible()
    assert evidence.count() >= 1
    shot(investigator, "demo-alert-evidence")

    privacy = signed_in(browser, demo.url, "privacy", PASSWORD)
    privacy.goto("/approvals")
    privacy.get_by_role("link", name=summary["pending_request"]).click()
    expect(privacy.locator("#needs")).to_contain_text("0 of 2")
    privacy.get_by_label("Reason (required)").fill("the harassment report checks out")
    privacy.get_by_role("button", name="Approve").click()
    expect(privacy.locator("#needs")).to_contain_text("1 of 2")
    expect(privacy.locator("#status")).to_have_text("pending")
    shot(privacy, "demo-approval-needs-a-second")

    journalist = summary["journalists"][0]
    privacy.goto(f"/subjects/{journalist}")
    expect(privacy.locator("#verification")).to_contain_text("verified")
    expect(privacy.locator("#accesses")).to_contain_text("internal_investigation")
    shot(privacy, "demo-journalist-report")
