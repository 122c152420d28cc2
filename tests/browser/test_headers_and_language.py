"""The UI switches to Portuguese, and every page sends an enforced Content Security Policy."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.utils import translation
from playwright.sync_api import expect

from .conftest import log_in
from .helpers import ADMIN_PASSWORD, ADMIN_USERNAME, make_admin, make_project

PT_BR_CATALOG = Path(settings.BASE_DIR) / "labelling/locale/pt_BR/LC_MESSAGES/django.mo"


def portuguese(text: str) -> str:
    with translation.override("pt-br"):
        return translation.gettext(text)


def test_the_login_page_and_home_render_in_portuguese(page, check_page, live_server):
    make_admin()
    html = page.locator("html")

    page.goto(f"{live_server.url}/accounts/login/")
    expect(html).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Log in")
    check_page()

    with page.expect_navigation():
        page.locator("button[name=language][value=pt-br]").click()
    assert page.url.endswith("/accounts/login/")
    expect(html).to_have_attribute("lang", "pt-br")
    expect(page.locator("button[name=language][value=pt-br]")).to_have_class(
        re.compile(r"\bcurrent\b")
    )
    if PT_BR_CATALOG.exists():
        # Our own catalog is compiled: the page's own strings must be translated.
        for text in ("Log in", "Username", "Password", "My projects"):
            assert portuguese(text) != text, f"{text!r} has no pt-BR translation"
    # Whatever the catalogs say (Django's own ones translate some strings), the page shows it.
    expect(page.locator("h1")).to_have_text(portuguese("Log in"))
    check_page()

    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    expect(html).to_have_attribute("lang", "pt-br")
    expect(page.locator("h1")).to_have_text(portuguese("My projects"))
    check_page()

    with page.expect_navigation():
        page.locator("button[name=language][value=en]").click()
    expect(html).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("My projects")
    check_page()


def _directives(policy: str) -> dict[str, list[str]]:
    directives = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name.lower()] = values
    return directives


def test_pages_send_an_enforced_content_security_policy(page, page_errors, live_server):
    admin = make_admin()
    project = make_project(
        admin,
        slug="facts",
        name="Fact checks",
        records=[{"external_id": "one", "messages": [{"role": "user", "content": "Hi"}]}],
    )
    item = project.items.get()

    response = page.goto(f"{live_server.url}/accounts/login/")
    responses = {"/accounts/login/": response}
    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    for path in (
        "/",
        "/admin/",
        f"/admin/labelling/item/?project__id__exact={project.pk}",
        f"/admin/labelling/item/{item.pk}/change/",
        f"/admin/labelling/project/{project.pk}/change/",
        "/admin/labelling/labelschema/add/",
    ):
        responses[path] = page.goto(f"{live_server.url}{path}")

    for path, response in responses.items():
        assert response.status == 200, f"{path} answered {response.status}"
        headers = response.headers
        assert "content-security-policy-report-only" not in headers, path
        assert "content-security-policy" in headers, f"{path} sends no Content-Security-Policy"
        directives = _directives(headers["content-security-policy"])
        assert directives.get("script-src") == ["'self'"], f"{path}: {directives}"
        assert directives.get("object-src") == ["'none'"], f"{path}: {directives}"
        for values in directives.values():
            assert "'unsafe-inline'" not in values and "'unsafe-eval'" not in values, path

    # Enforced, not just announced: an inline script added to the page does not run.
    page.goto(f"{live_server.url}/")
    ran = page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.__inlineRan = true";
            document.head.appendChild(script);
            return window.__inlineRan === true;
        }"""
    )
    assert ran is False, "an inline script ran: the policy is not enforced"
    violations = page.evaluate("window.__cspViolations")
    assert any(v.startswith("script-src") for v in violations), violations
    page_errors.messages.clear()  # the refusal above is expected
