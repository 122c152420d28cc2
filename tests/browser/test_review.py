"""The review page in headless Chromium: side-by-side answers, keyboard correction, XSS."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from labelling.models import Item, ItemStatus, ReviewAction, Role
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.items import items_import
from labelling.services.projects import (
    membership_set,
    project_create,
    project_update,
    schema_publish,
)
from tests.browser.conftest import assert_clean, log_in
from tests.browser.test_rating import XSS, XSS_MARKDOWN, XSS_TEXT
from tests.conftest import jsonl

SCHEMA = {
    "questions": [
        {
            "key": "verdict",
            "type": "choice",
            "title": "Overall verdict",
            "options": [
                {"value": "good", "label": "Good", "hotkey": "g"},
                {"value": "bad", "label": "Bad", "hotkey": "b"},
            ],
        },
        {"key": "quality", "type": "rating", "title": "Reply quality", "scope": "assistant_turn",
         "scale": 5},
        {"key": "note", "type": "text", "title": "Notes " + XSS[1], "required": False},
    ]
}  # fmt: skip


def make_disputed_item(make_user):
    """A project whose one item two raters answered differently: it waits for review."""
    owner = make_user("owner", is_staff=True)
    boss = make_user("lead")
    project = project_create(slug="rev", name="Rev " + XSS[0], created_by=owner)
    membership_set(project=project, user=boss, role=Role.REVIEWER)
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    item = {
        "external_id": "d1",
        "messages": [{"role": "user", "content": XSS_MARKDOWN},
                     {"role": "assistant", "content": "Reply " + XSS_MARKDOWN}],
    }  # fmt: skip
    items_import(project=project, stream=jsonl(item), fmt="jsonl")
    project_update(project=project, overlap=2, max_overlap=2, gold_rate=0)
    for username, verdict, quality in (("ann", "good", 4), ("ben", "bad", 2)):
        rater = make_user(username)
        membership_set(project=project, user=rater, role=Role.RATER)
        lease = assignment_next(project=project, rater=rater)
        annotation_submit(
            assignment=lease.assignment,
            answers={"verdict": verdict, "quality": {"t2": quality},
                     "note": f"{username} says " + XSS_TEXT},
            idempotency_key=str(uuid.uuid4()),
            time_spent_ms=1200,
        )  # fmt: skip
    stored = Item.objects.get(project=project, external_id="d1")
    assert stored.status == ItemStatus.NEEDS_REVIEW
    return project, stored


def check_inert(page) -> None:
    report = page.evaluate(
        """() => {
          const bad = [];
          for (const node of document.querySelectorAll("*")) {
            for (const attr of node.attributes) {
              const value = attr.value.trim().toLowerCase();
              if (attr.name.toLowerCase().startsWith("on")) bad.push("handler " + attr.name);
              if (value.startsWith("javascript:") || value.startsWith("data:text"))
                bad.push(node.tagName + " " + attr.name + "=" + value);
            }
          }
          const root = document.getElementById("review");
          for (const tag of ["img", "svg", "iframe", "object", "embed", "b", "script"]) {
            if (root.querySelector(tag)) bad.push("element " + tag);
          }
          return {bad, xss: window.__xss === undefined ? null : window.__xss,
                  text: document.body.innerText};
        }"""
    )
    assert report["xss"] is None
    assert report["bad"] == []
    for payload in XSS:
        assert payload.replace("**", "") in report["text"], f"{payload!r} is not shown as text"


def test_a_reviewer_corrects_a_disputed_item_by_keyboard(page, page_errors, live_server, make_user):
    project, item = make_disputed_item(make_user)
    log_in(page, live_server.url, "lead", "pw-lead")
    page.goto(f"{live_server.url}/projects/rev/review/")

    # Both raters side by side, the disagreeing cells marked, text answers shown as text.
    table = page.locator("#side-by-side")
    expect(table.locator("thead th.rater")).to_have_text(["ann", "ben"])
    verdict = table.locator('tr[data-row="verdict"]')
    expect(verdict.locator("td.answer")).to_have_text(["Good", "Bad"])
    expect(table.locator('tr[data-row="quality.t2"] td.answer')).to_have_text(["4", "2"])
    expect(table.locator("td.disagree")).to_have_count(3)  # a choice tie and the rating
    expect(table.locator('tr[data-row="note"] td.answer').first).to_contain_text("ann says")
    expect(page.locator("#waiting")).to_contain_text("1 item waiting")
    check_inert(page)

    kb = page.keyboard
    kb.press("c")
    form = page.locator("#correction")
    expect(form).to_be_visible()
    # Prefilled with the consensus: the median rating of 4 and 2.
    expect(form.locator('[data-q="quality"] .opt[data-value="3"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    kb.press("g")
    expect(form.locator('[data-q="verdict"] .opt[data-value="good"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    kb.press("5")
    expect(form.locator('[data-q="note"] textarea')).to_be_focused()
    kb.type("Reviewed <b>ok</b>")
    kb.press("Escape")
    kb.press("n")  # no option takes n here, so it opens the note
    kb.type("tie broken")
    kb.press("Escape")
    kb.press("c")  # already correcting: nothing changes
    kb.press("Enter")

    expect(page.get_by_text("Nothing to review")).to_be_visible()
    expect(page.locator("#empty a")).to_have_attribute("href", "/projects/rev/dashboard/")
    assert_clean(page, page_errors)

    review = ReviewAction.objects.get(item=item)
    assert review.action == "correct"
    assert review.reviewer.username == "lead"
    assert review.note == "tie broken"
    assert review.answers == {
        "verdict": "good",
        "quality": {"t2": 5},
        "note": "Reviewed <b>ok</b>",
    }
    item.refresh_from_db()
    assert item.status == ItemStatus.APPROVED
    assert item.consensus["verdict"]["value"] == "good"
    assert item.consensus["quality"]["value"] == {"t2": 5}


def test_approve_and_reject_by_keyboard_and_the_help_overlay(
    page, page_errors, live_server, make_user
):
    project, item = make_disputed_item(make_user)
    log_in(page, live_server.url, "lead", "pw-lead")
    page.goto(f"{live_server.url}/projects/rev/review/?item={item.pk}")
    expect(page.locator("#side-by-side")).to_be_visible()
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    page.keyboard.press("r")
    expect(page.get_by_text("Nothing to review")).to_be_visible()
    item.refresh_from_db()
    assert item.status == ItemStatus.REJECTED
    # Reopening it by id and approving overrides the rejection, audited twice.
    page.goto(f"{live_server.url}/projects/rev/review/?item={item.pk}")
    expect(page.locator("#side-by-side")).to_be_visible()
    page.keyboard.press("a")
    expect(page.get_by_text("Nothing to review")).to_be_visible()
    item.refresh_from_db()
    assert item.status == ItemStatus.APPROVED
    assert list(ReviewAction.objects.order_by("pk").values_list("action", flat=True)) == [
        "reject",
        "approve",
    ]
    page.goto(f"{live_server.url}/projects/rev/dashboard/")
    expect(page.locator('[data-stage="approved"]')).to_have_attribute("data-count", "1")
    assert_clean(page, page_errors)
