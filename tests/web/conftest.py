"""The dashboard tests use the same live service as the API tests, and one browser."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.api.conftest import service  # noqa: F401 - re-exported fixture

# Machines here are shared and noisy: wait longer than Playwright's 5 s before failing.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    from tests.web.test_dashboard import CHROMIUM

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()
