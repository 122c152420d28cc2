"""An admin logs in, browses a project's items and publishes schema versions in the admin."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from labelling.models import LabelSchema

from .conftest import log_in
from .helpers import ADMIN_PASSWORD, ADMIN_USERNAME, make_admin, make_project

CONVERSATIONS = [
    {
        "external_id": "capital-1",
        "messages": [
            {"role": "user", "content": "What is the capital of Australia?"},
            {"role": "assistant", "content": "The capital of Australia is Canberra."},
        ],
    },
    {
        "external_id": "boil-2",
        "messages": [
            {"role": "user", "content": "At what temperature does water boil at sea level?"},
            {"role": "assistant", "content": "Water boils at 100 °C at sea level."},
        ],
    },
    {
        "external_id": "poem-3",
        "messages": [
            {"role": "user", "content": "Write a haiku about autumn."},
            {"role": "assistant", "content": "Red leaves drift and fall"},
        ],
    },
]


def test_an_admin_logs_in_and_sees_the_project_and_its_items(page, check_page, live_server):
    admin = make_admin()
    make_project(admin, slug="facts", name="Fact checks", records=CONVERSATIONS)

    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    row = page.locator("table.list tbody tr", has_text="Fact checks")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("3")
    check_page()

    with page.expect_navigation():
        row.get_by_role("link", name="Browse items").click()
    assert "/admin/labelling/item/" in page.url
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    expect(page.locator("#result_list")).to_contain_text("What is the capital of Australia?")
    check_page()

    with page.expect_navigation():
        page.locator("#result_list").get_by_role("link", name="capital-1").click()
    assert re.search(r"/admin/labelling/item/\d+/change/(\?|$)", page.url)
    conversation = page.locator(".conversation")
    expect(conversation).to_contain_text("What is the capital of Australia?")
    expect(conversation).to_contain_text("The capital of Australia is Canberra.")
    check_page()


def test_an_admin_publishes_a_schema_version_and_sees_errors_per_question(
    page, check_page, live_server
):
    admin = make_admin()
    project = make_project(admin, slug="facts", name="Fact checks", records=CONVERSATIONS[:1])
    before = project.schemas.count()

    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    page.goto(f"{live_server.url}/admin/")
    with page.expect_navigation():
        page.get_by_role("link", name="Label schemas", exact=True).click()
    check_page()
    with page.expect_navigation():
        page.get_by_role("link", name="Add label schema").click()
    assert page.url.endswith("/admin/labelling/labelschema/add/")
    check_page()

    broken = {
        "questions": [
            {
                "key": "truth",
                "type": "choice",
                "title": "Is it true?",
                "options": [{"value": "yes", "label": "Yes"}, {"value": "yes", "label": "No"}],
            },
            {"key": "quality", "type": "rating", "title": "Quality", "scale": 99},
        ]
    }
    page.select_option("select[name=project]", label="Fact checks")
    page.fill("input[name=name]", "broken attempt")
    page.fill("textarea[name=definition]", json.dumps(broken, indent=2))
    with page.expect_navigation():
        page.locator("input[name=_save]").click()
    errors = page.locator(".field-definition ul.errorlist li")
    expect(errors.filter(has_text=re.compile(r"^truth\b.*used twice"))).to_have_count(1)
    expect(errors.filter(has_text=re.compile(r"^quality\b.*scale"))).to_have_count(1)
    assert project.schemas.count() == before
    check_page()

    page.select_option("select[name=start_from]", value="llm_response_review")
    page.fill("textarea[name=definition]", "")
    page.fill("input[name=name]", "from the template")
    with page.expect_navigation():
        page.locator("input[name=_save]").click()
    expect(page.locator("ul.messagelist")).to_contain_text(f"Published version {before + 1}.")
    check_page()

    published = LabelSchema.objects.get(project=project, version=before + 1)
    assert published.name == "from the template"
    assert [q["key"] for q in published.definition["questions"]][:2] == ["truthfulness", "bias"]

    response = page.goto(f"{live_server.url}/admin/labelling/labelschema/{published.pk}/change/")
    assert response.status == 200, (
        f"the change view of a published schema answered {response.status}"
    )
    expect(page.locator("textarea[name=definition]")).to_have_count(0)
    expect(page.locator("input[name=name]")).to_have_count(0)
    expect(page.locator(".field-pretty_definition pre")).to_contain_text('"truthfulness"')
    check_page()
