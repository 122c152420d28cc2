"""Headless Chromium (Debian's, never a downloaded one) driven by Playwright against live_server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; ORM calls in test code are still
# synchronous and safe here.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here drives the browser against live_server, which needs committed data."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.django_db(transaction=True))


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

# Records CSP violations in the page itself: init scripts are injected by the browser, so
# the page's own policy does not block this one.
_CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile
      + ":" + e.lineNumber
  );
});
"""


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium: apt-get install chromium",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class PageErrors:
    """Console errors, uncaught exceptions and CSP violations seen by one page."""

    messages: list[str] = field(default_factory=list)

    def on_console(self, message) -> None:
        # Chromium asks for /favicon.ico by itself when a page names no icon; that 404 is the
        # browser's guess, not a request the page made.
        if message.location.get("url", "").endswith("/favicon.ico"):
            return
        if message.type == "error":
            self.messages.append(f"console error: {message.text} ({message.location})")

    def on_pageerror(self, error) -> None:
        self.messages.append(f"page error: {error}")


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser, page_errors: PageErrors) -> Iterator:
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    context.add_init_script(_CSP_RECORDER)
    page = context.new_page()
    page.on("console", page_errors.on_console)
    page.on("pageerror", page_errors.on_pageerror)
    try:
        yield page
    finally:
        context.close()


def assert_clean(page, errors: PageErrors) -> None:
    """No console error, uncaught exception or CSP violation on the page so far."""
    violations = page.evaluate("window.__cspViolations || []")
    problems = errors.messages + [f"CSP violation: {v}" for v in violations]
    assert not problems, f"{page.url}:\n" + "\n".join(problems)


@pytest.fixture
def check_page(page, page_errors: PageErrors):
    """Call after each visit: fails on console errors and CSP violations, then resets."""

    def check() -> None:
        assert_clean(page, page_errors)
        page_errors.messages.clear()

    return check


def log_in(page, base_url: str, username: str, password: str) -> None:
    """Log in through the real form at /accounts/login/ and land on the home page."""
    page.goto(f"{base_url}/accounts/login/")
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(password)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert page.url.rstrip("/") == base_url.rstrip("/"), f"login did not succeed: {page.url}"
