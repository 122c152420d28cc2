"""The model's suggestion on the labelling page: shown beside the question only when the
project turns it on, and never chosen for the rater."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from labelling.models import Item
from labelling.services.projects import project_update
from tests.browser.conftest import assert_clean, log_in
from tests.browser.test_rating import make_project, open_label_page

SCHEMA = {
    "questions": [
        {"key": "topic", "type": "choice", "title": "Topic",
         "options": [{"value": "food", "label": "Food"}, {"value": "code", "label": "Code"}]},
        {"key": "tags", "type": "multi_choice", "title": "Tags",
         "options": [{"value": "fast", "label": "Fast"}, {"value": "cheap", "label": "Cheap"},
                     {"value": "rich", "label": "Rich"}]},
        {"key": "flags", "type": "multi_choice", "title": "Flags",
         "options": [{"value": "spam", "label": "Spam"}, {"value": "rude", "label": "Rude"}]},
    ]
}  # fmt: skip
ITEMS = [
    {"external_id": "s1", "messages": [{"role": "user", "content": "Dinner?"},
                                       {"role": "assistant", "content": "Pasta with basil."}]},
]  # fmt: skip


@pytest.fixture
def cast(make_user):
    return make_user("owner", is_staff=True), make_user("rater")


GUESS = {
    "topic": {"value": "food", "probabilities": {"food": 0.83, "code": 0.17}},
    # multi-choice: the options the model would choose; none chosen shows nothing
    "tags": {"value": ["fast", "rich"], "probabilities": {"fast": 0.7, "cheap": 0.2, "rich": 0.6}},
    "flags": {"value": [], "probabilities": {"spam": 0.1, "rude": 0.3}},
}


@pytest.mark.parametrize("enabled", [True, False])
def test_the_suggestion_shows_only_when_enabled_and_never_fills_the_answer(
    page,
    page_errors,
    live_server,
    cast,
    enabled,
):
    owner, rater = cast
    project = make_project(owner, rater, "sugg", schema=SCHEMA, items=ITEMS)
    Item.objects.filter(project=project).update(predictions=GUESS)
    project_update(project=project, suggestions_enabled=enabled, gold_rate=0)
    log_in(page, live_server.url, "rater", "pw-rater")

    open_label_page(page, live_server, "sugg")

    expect(page.locator("#item-ref")).to_have_text(re.compile(r"\bs1$"))
    hint = page.locator('[data-q="topic"] .suggestion')
    tags = page.locator('[data-q="tags"] .suggestion')
    if enabled:
        expect(hint).to_have_text("Model suggests: Food (83%)")
        expect(tags).to_have_text("Model suggests: Fast, Rich")
    else:
        expect(hint).to_have_count(0)
        expect(tags).to_have_count(0)
    expect(page.locator('[data-q="flags"] .suggestion')).to_have_count(0)
    expect(page.locator('.opt[aria-pressed="true"]')).to_have_count(0)
    assert_clean(page, page_errors)
