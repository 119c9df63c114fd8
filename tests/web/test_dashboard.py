"""The dashboard in a real browser: Playwright driving Debian's Chromium against the real
service on loopback. Screenshots are kept in ``artifacts/screenshots/`` for people to see."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from custos.policy import AccessRequest
from tests.api.conftest import PASSWORD, Service
from tests.factories import take_break_glass

CHROMIUM = os.environ.get("CUSTOS_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM} (scripts/test installs it)"
)


def signed_in(browser: Browser, url: str, username: str, password: str = PASSWORD) -> Page:
    """A fresh browser context signed in as ``username`` at ``url`` (the test harness's
    service, or the demo's)."""
    page = browser.new_context(base_url=url).new_page()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_wrong_password_is_refused_in_the_page(browser: Browser, service: Service) -> None:
    page = browser.new_context(base_url=service.url).new_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong username or password")


def test_approve_as_one_user_and_see_it_need_a_second(browser: Browser, service: Service) -> None:
    request = service.system.request_access(
        principal="emp-3001",
        subject="user-42",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket="T-10",
        reason="abuse report R-77 names this account",
    )
    ana = signed_in(browser, service.url, "ana")
    shot(ana, "overview")
    ana.get_by_role("link", name="Approvals").first.click()
    ana.get_by_role("link", name=request.id).click()
    expect(ana.locator("#needs")).to_contain_text("0 of 2 approvals, including privacy_office")
    expect(ana.locator("#actions")).to_have_text("read")  # what approving will allow
    ana.get_by_label("Reason (required)").fill("checked the abuse report")
    ana.get_by_role("button", name="Approve").click()
    expect(ana.locator("#needs")).to_contain_text("1 of 2 approvals")
    expect(ana.locator("#status")).to_have_text("pending")
    shot(ana, "approval-needs-a-second")

    # The requester's manager is refused, with the rule named, in place.
    max_ = signed_in(browser, service.url, "max")
    max_.goto(f"/approvals/{request.id}")
    max_.get_by_label("Reason (required)").fill("my team, fine")
    max_.get_by_role("button", name="Approve").click()
    expect(max_.get_by_role("alert")).to_contain_text("management-chain")

    priya = signed_in(browser, service.url, "priya")
    priya.goto(f"/approvals/{request.id}")
    priya.get_by_label("Reason (required)").fill("proportionate and time-limited")
    priya.get_by_role("button", name="Approve").click()
    expect(priya.locator("#status")).to_have_text("approved")
    expect(priya.get_by_text("approved by emp-3002 and emp-4001")).to_be_visible()
    shot(priya, "approval-granted")


def test_the_queue_counts_break_glass_reviews_against_the_setting(
    browser: Browser, service: Service
) -> None:
    grant = take_break_glass(service.system, "credential stuffing from this account's sessions")
    approvals = service.system.approvals
    default = approvals.settings
    approvals.settings = dataclasses.replace(default, reviews_needed=3)  # [approvals] setting
    try:
        priya = signed_in(browser, service.url, "priya")
        priya.goto("/approvals")
        expect(priya.locator("li.critical", has_text=grant.id)).to_contain_text("0 of 3 reviews")
    finally:
        approvals.settings = default


def test_an_admin_sees_no_requests_and_no_answer_form(browser: Browser, service: Service) -> None:
    request = service.system.request_access(
        principal="emp-3001",
        subject="user-42",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket="T-10",
        reason="abuse report R-77 names this account",
    )
    root = signed_in(browser, service.url, "root")
    expect(root.get_by_role("link", name="Approvals")).to_have_count(0)
    root.goto(f"/approvals/{request.id}")
    expect(root.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(root.get_by_role("alert")).to_contain_text("role")
    expect(root.get_by_text("user-42")).to_have_count(0)
    expect(root.get_by_role("button", name="Approve")).to_have_count(0)


def test_open_the_journalists_report(browser: Browser, service: Service) -> None:
    service.system.read(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )
    priya = signed_in(browser, service.url, "priya")
    priya.goto("/subjects/user-42")
    expect(priya.locator("#verification")).to_contain_text("Transparency report verified")
    row = priya.locator("#accesses tbody tr").first
    expect(row).to_contain_text("internal_investigation")
    expect(row).to_contain_text("deny")
    shot(priya, "journalist-report")
    priya.goto("/subjects/user-42/report.html")
    expect(priya.get_by_role("heading", name="Who accessed the data of user-42")).to_be_visible()
