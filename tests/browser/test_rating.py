"""The labelling page in headless Chromium: keyboard-only rating, retries, XSS, languages."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from labelling.models import Annotation, Assignment, Role
from labelling.services.assignments import assignment_skip
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_create, schema_publish
from tests.browser.conftest import assert_clean, log_in
from tests.conftest import jsonl

SCHEMA = {
    "questions": [
        {
            "key": "quality",
            "type": "rating",
            "title": "How good is this reply?",
            "scope": "assistant_turn",
            "scale": 5,
            "anchors": {"1": "Bad", "5": "Great"},
        },
        {
            "key": "verdict",
            "type": "choice",
            "title": "Overall verdict",
            "options": [
                {"value": "good", "label": "Good", "hotkey": "g"},
                {"value": "bad", "label": "Bad", "hotkey": "b"},
            ],
        },
        {
            "key": "harm",
            "type": "span",
            "title": "Mark problems",
            "labels": [
                {"value": "harmful", "label": "Harmful", "hotkey": "h"},
                {"value": "pii", "label": "Personal data", "hotkey": "i"},
            ],
        },
        {"key": "note", "type": "text", "title": "Notes", "max_length": 500},
    ]
}

# Markdown and characters outside the BMP before the selections, so offsets only come out
# right if rendered text maps back to raw code points.
REPLY_1 = "Hi 👋 **there**, the *secret* is 42 — ok?"
REPLY_2 = "Línea 1: 🎉 emoji\n\n- list **bold item** and more\n- second"
ITEMS = [
    {"external_id": "c1", "messages": [{"role": "user", "content": "Tell me"},
                                       {"role": "assistant", "content": REPLY_1}]},
    {"external_id": "c2", "messages": [{"role": "user", "content": "Olá 😀"},
                                       {"role": "assistant", "content": REPLY_2}]},
    {"external_id": "c3", "messages": [{"role": "user", "content": "One"},
                                       {"role": "assistant", "content": "First reply"},
                                       {"role": "user", "content": "Two"},
                                       {"role": "assistant", "content": "Second reply"}]},
]  # fmt: skip

# What SECURITY.md lists: script breakouts, handlers, javascript: links, raw HTML in markdown.
XSS = [
    "</script><script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "<svg onload=window.__xss=1>",
    '<a href="javascript:window.__xss=1">html link</a>',
    '<iframe src="javascript:window.__xss=1"></iframe>',
    "**bold <b onmouseover=window.__xss=1>raw html</b>**",
]
XSS_LINK = "[click me](javascript:window.__xss=1)"
XSS_TEXT = " ".join(XSS)
XSS_MARKDOWN = (
    XSS_TEXT + "\n\n" + XSS_LINK + " [data](data:text/html,<script>window.__xss=1</script>)"
)


@pytest.fixture
def cast(make_user):
    owner = make_user("owner", is_staff=True)
    rater = make_user("rater")
    return owner, rater


def make_project(owner, rater, slug, schema=SCHEMA, items=(), **extra):
    project = project_create(slug=slug, name=extra.pop("name", slug.title()), created_by=owner,
                             **extra)  # fmt: skip
    membership_set(project=project, user=rater, role=Role.RATER)
    if schema is not None:
        schema_publish(project=project, definition=schema, created_by=owner)
    if items:
        items_import(project=project, stream=jsonl(*items), fmt="jsonl")
    return project


def open_label_page(page, live_server, slug: str) -> None:
    page.goto(f"{live_server.url}/projects/{slug}/label/")


def wait_for_item(page, external_id: str) -> None:
    expect(page.locator("#item-ref")).to_have_text(re.compile(rf"\b{external_id}$"))


def select_text(page, message_id: str, start_needle: str, end_needle: str | None = None) -> None:
    """Select from the start of `start_needle` to the end of `end_needle` (default: the same
    needle) inside one rendered message, as a mouse drag would, possibly across elements."""
    found = page.evaluate(
        """([id, startNeedle, endNeedle]) => {
          const root = document.querySelector(`.content[data-message="${id}"]`);
          const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
          let start = null, end = null, node;
          while ((node = walker.nextNode())) {
            const i = node.data.indexOf(startNeedle);
            if (start === null && i >= 0) start = [node, i];
            const j = node.data.indexOf(endNeedle);
            if (start !== null && j >= 0) { end = [node, j + endNeedle.length]; break; }
          }
          if (!start || !end) return false;
          const range = document.createRange();
          range.setStart(start[0], start[1]);
          range.setEnd(end[0], end[1]);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          return true;
        }""",
        [message_id, start_needle, end_needle or start_needle],
    )
    assert found, f"{start_needle!r}..{end_needle!r} not found in message {message_id}"


def console_problems(page, page_errors, allowed=()) -> list[str]:
    violations = page.evaluate("window.__cspViolations || []")
    messages = [m for m in page_errors.messages if not any(a in m for a in allowed)]
    return messages + [f"CSP violation: {v}" for v in violations]


def test_a_rater_labels_three_items_by_keyboard_alone(page, page_errors, live_server, cast):
    owner, rater = cast
    make_project(owner, rater, "kbd", items=ITEMS)
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "kbd")
    kb = page.keyboard

    # c1: a per-turn rating, the verdict, a span inside italic text, a comment.
    wait_for_item(page, "c1")
    expect(page.locator('.q.active[data-q="quality"][data-turn="t2"]')).to_be_visible()
    kb.press("4")
    expect(page.locator('[data-q="quality"] .pt[data-value="4"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator('.q.active[data-q="verdict"]')).to_be_visible()
    kb.press("g")
    expect(page.locator('.q.active[data-q="harm"]')).to_be_visible()
    select_text(page, "t2", "secret")
    kb.press("h")
    expect(page.locator('[data-q="harm"] .spans li[data-message="t2"]')).to_have_count(1)
    expect(page.locator('.content[data-message="t2"] mark.hl')).to_have_text("secret")
    kb.press("Tab")
    expect(page.locator('[data-q="note"] textarea')).to_be_focused()
    kb.type("Looks fine")
    kb.press("Control+Enter")

    # c2: a selection across elements (list text into bold), another label, non-ASCII text.
    wait_for_item(page, "c2")
    kb.press("2")
    kb.press("b")
    select_text(page, "t2", "list", "bold")
    kb.press("i")
    expect(page.locator('.content[data-message="t2"] mark.hl')).to_have_count(2)
    kb.press("Tab")
    kb.type("Has PII ✓")
    kb.press("Escape")
    kb.press("Enter")

    # c3: two assistant turns, each with its own rating; no span, no comment.
    wait_for_item(page, "c3")
    kb.press("3")
    expect(page.locator('.q.active[data-q="quality"][data-turn="t4"]')).to_be_visible()
    kb.press("5")
    kb.press("g")
    kb.press("Enter")

    expect(page.get_by_text("Nothing left for you here")).to_be_visible()
    assert_clean(page, page_errors)

    answers = {
        a.item.external_id: a.answers
        for a in Annotation.objects.select_related("item").filter(rater=rater)
    }
    s1 = REPLY_1.index("secret")
    s2, e2 = REPLY_2.index("list"), REPLY_2.index("bold") + len("bold")
    assert answers == {
        "c1": {
            "quality": {"t2": 4},
            "verdict": "good",
            "harm": [{"message": "t2", "start": s1, "end": s1 + 6, "label": "harmful",
                      "text": "secret"}],
            "note": "Looks fine",
        },
        "c2": {
            "quality": {"t2": 2},
            "verdict": "bad",
            "harm": [{"message": "t2", "start": s2, "end": e2, "label": "pii",
                      "text": "list **bold"}],
            "note": "Has PII ✓",
        },
        "c3": {"quality": {"t2": 3, "t4": 5}, "verdict": "good"},
    }  # fmt: skip
    assert all(a.time_spent_ms > 0 for a in Annotation.objects.all())


def test_a_failed_submit_keeps_the_answers_and_the_retry_stores_one_annotation(
    page, page_errors, live_server, cast
):
    owner, rater = cast
    make_project(owner, rater, "retry", items=ITEMS[:1])
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "retry")
    wait_for_item(page, "c1")
    kb = page.keyboard
    kb.press("5")
    kb.press("b")
    select_text(page, "t2", "there")
    kb.press("h")
    kb.press("Tab")
    kb.type("kept")
    kb.press("Escape")

    # A reload restores the answers from this browser's storage onto the same lease.
    page.reload()
    wait_for_item(page, "c1")
    expect(page.locator('[data-q="verdict"] .opt[data-value="bad"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator('[data-q="note"] textarea')).to_have_value("kept")
    expect(page.locator('.content[data-message="t2"] mark.hl')).to_have_text("there")

    sent = []
    network = {"down": True}

    def fail_until_seen(route):
        sent.append(json.loads(route.request.post_data))
        # Down until the page has shown that it retries: Chromium may restart an aborted
        # request once by itself, and that restart must fail too for the page to see it.
        if network["down"]:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/v1/assignments/*/submit/", fail_until_seen)
    kb.press("Enter")
    expect(page.locator("#status")).to_contain_text("retrying")
    network["down"] = False
    expect(page.locator('[data-q="verdict"] .opt[data-value="bad"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.get_by_text("Nothing left for you here")).to_be_visible(timeout=15_000)

    assert len(sent) >= 2  # the failed attempt(s), then the one that went through
    assert all(
        body["idempotency_key"] == sent[0]["idempotency_key"]
        and body["answers"] == sent[0]["answers"]
        for body in sent
    )
    annotation = Annotation.objects.get()
    assert annotation.idempotency_key == sent[0]["idempotency_key"]
    start = REPLY_1.index("there")
    assert annotation.answers == {
        "quality": {"t2": 5},
        "verdict": "bad",
        "harm": [{"message": "t2", "start": start, "end": start + 5, "label": "harmful",
                  "text": "there"}],
        "note": "kept",
    }  # fmt: skip
    assert page.evaluate("Object.keys(localStorage).filter(k => k.includes('assignment'))") == []
    problems = console_problems(page, page_errors, allowed=("net::ERR_CONNECTION_RESET",))
    assert not problems, problems


def test_a_refused_answer_is_shown_next_to_its_question(page, page_errors, live_server, cast):
    owner, rater = cast
    make_project(owner, rater, "refused", items=ITEMS[:1])
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "refused")
    wait_for_item(page, "c1")

    # Enter with nothing answered: the client names the required questions.
    page.keyboard.press("Enter")
    expect(page.locator('[data-q="quality"] .q-error')).to_have_text("This question is required.")
    expect(page.locator('[data-q="verdict"] .q-error')).to_be_visible()

    # A 400 from the server lands on the question its field names (helpful.t2 style).
    def refuse(route):
        route.fulfill(
            status=400,
            content_type="application/json",
            body=json.dumps({"message": "bad", "code": "invalid", "extra": {"errors": [
                {"field": "quality.t2", "message": "Server says no."},
                {"field": "harm[0].end", "message": "Past the end."}]}}),
        )  # fmt: skip

    page.route("**/api/v1/assignments/*/submit/", refuse)
    page.keyboard.press("4")
    page.keyboard.press("g")
    page.keyboard.press("Enter")
    expect(page.locator('[data-q="quality"][data-turn="t2"] .q-error')).to_have_text(
        "Server says no."
    )
    expect(page.locator('[data-q="harm"] .q-error')).to_have_text("Past the end.")
    assert Annotation.objects.count() == 0
    problems = console_problems(page, page_errors, allowed=("status of 400",))
    assert not problems, problems


def test_a_closed_lease_shows_the_message_and_moves_on(page, page_errors, live_server, cast):
    owner, rater = cast
    make_project(owner, rater, "closed", items=ITEMS[:2])
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "closed")
    wait_for_item(page, "c1")
    page.keyboard.press("4")
    page.keyboard.press("g")
    # The lease ends behind the page's back (another tab skipped it): submit answers 409.
    assignment_skip(assignment=Assignment.objects.get())

    page.keyboard.press("Enter")

    wait_for_item(page, "c2")
    expect(page.locator("#status")).to_contain_text("This lease was skipped")
    assert not Annotation.objects.exists()
    expect(page.locator('[data-q="verdict"] .opt[aria-pressed="true"]')).to_have_count(0)
    problems = console_problems(page, page_errors, allowed=("status of 409",))
    assert not problems, problems


def test_every_xss_payload_renders_inert(page, page_errors, live_server, cast):
    owner, rater = cast
    schema = {
        "questions": [
            {"key": "pref", "type": "preference", "title": "Pick " + XSS[0] + XSS[1],
             "help": "Help " + XSS_TEXT, "strength": 2,
             "strength_labels": ["a bit " + XSS[1], "a lot " + XSS[0]]},
            {"key": "kind", "type": "choice", "title": XSS[0], "help": XSS_TEXT,
             "options": [{"value": "x", "label": XSS[1], "hotkey": "x", "help": XSS[2]},
                         {"value": "y", "label": XSS[3]}]},
            {"key": "score", "type": "rating", "title": XSS[4], "scale": 3,
             "anchors": {"1": XSS[1], "3": XSS[0]}},
            {"key": "marks", "type": "span", "title": XSS[5],
             "labels": [{"value": "bad", "label": XSS[1], "hotkey": "h", "help": XSS[0]}]},
            {"key": "why", "type": "text", "title": XSS[2], "placeholder": XSS[1]},
        ]
    }  # fmt: skip
    item = {
        "external_id": "x-" + XSS[0][:20],
        "messages": [
            {"role": "system", "content": XSS_MARKDOWN},
            {"role": "user", "content": XSS_MARKDOWN},
            {"role": "tool", "content": XSS_MARKDOWN, "name": XSS[1]},
        ],
        "candidates": [XSS_MARKDOWN, "```html\n" + XSS_TEXT + "\n```\n" + XSS_LINK],
        "language": "en",
    }
    make_project(owner, rater, "xss", schema=schema, items=[item], name="P " + XSS[0],
                 guidelines="# Rules " + XSS[1] + "\n\n" + XSS_MARKDOWN)  # fmt: skip
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "xss")
    expect(page.locator(".pair .msg")).to_have_count(2)
    # Exercise the page a little: answer, mark a span, toggle raw text, open every help.
    page.keyboard.press("a")
    page.keyboard.press("2")
    page.keyboard.press("x")
    for toggle in page.locator(".help-toggle").all():
        toggle.click()
    page.locator("body").hover()
    for element in page.locator(".msg, .q, .guidelines").all():
        element.hover()

    def check_inert() -> None:
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
              for (const s of document.querySelectorAll("script")) {
                if (s.textContent.includes("__xss") && s.type !== "application/json")
                  bad.push("script " + s.outerHTML.slice(0, 80));
              }
              const stage = document.getElementById("rate");
              for (const tag of ["img", "svg", "iframe", "object", "embed", "b"]) {
                if (stage.querySelector(tag)) bad.push("element " + tag);
              }
              return {bad, xss: window.__xss === undefined ? null : window.__xss,
                      text: document.body.innerText, all: document.body.textContent};
            }"""
        )
        assert report["xss"] is None
        assert report["bad"] == []
        for payload in XSS:
            visible = payload.replace("**", "")
            assert visible in report["text"], f"{visible!r} is not shown as text"
        assert "click me" in report["text"]
        assert "Help " + XSS_TEXT in report["all"]

    check_inert()
    # Links to anything but http(s) are shown without their target.
    assert "(javascript:" not in page.locator(".pair").inner_text()
    page.locator("#raw-toggle").click()
    check_inert()
    assert XSS_LINK in page.locator(".pair").inner_text()  # raw text shows it, inert
    select_text(page, "a", "click me")
    page.keyboard.press("h")
    expect(page.locator('[data-q="marks"] .spans li[data-message="a"]')).to_have_count(1)
    check_inert()
    assert_clean(page, page_errors)


def test_the_portuguese_interface_renders(page, page_errors, live_server, cast):
    owner, rater = cast
    make_project(owner, rater, "pt", items=ITEMS[:1], guidelines="Leia *tudo*.")
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "pt")
    wait_for_item(page, "c1")
    expect(page.locator("#submit")).to_contain_text("Submit")

    with page.expect_navigation():
        page.get_by_role("button", name="Português Brasileiro").click()

    assert page.locator("html").get_attribute("lang") == "pt-br"
    wait_for_item(page, "c1")
    expect(page.get_by_text("Diretrizes", exact=True)).to_be_visible()  # the template
    expect(page.locator("#submit")).to_contain_text("Enviar")  # rate.js, through gettext
    expect(page.locator('.msg[data-message="t2"] .role')).to_have_text("Assistente")
    expect(page.locator("#item-ref")).to_have_text("Item c1")
    expect(page.locator("#progress-text")).to_contain_text("0 feito hoje · 0 de 1 concluídos")
    # The conversation keeps its own language.
    expect(page.locator('.content[data-message="t2"]')).to_contain_text("the secret is 42")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_contain_text("Pular este item")
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    assert_clean(page, page_errors)


def test_the_empty_state_shows_when_nothing_is_left(page, page_errors, live_server, cast):
    owner, rater = cast
    make_project(owner, rater, "done")
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "done")

    expect(
        page.get_by_text("Nothing left for you here: all items have their ratings. Thank you!")
    ).to_be_visible()
    back = page.get_by_role("link", name="Back to my projects")
    expect(back).to_have_attribute("href", "/")
    assert_clean(page, page_errors)
    assert not Assignment.objects.exists()


def test_a_project_without_questions_says_so(page, page_errors, live_server, cast):
    owner, rater = cast
    make_project(owner, rater, "noschema", schema=None, items=ITEMS[:1])
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "noschema")

    expect(page.get_by_text("has not published any questions yet")).to_be_visible()
    problems = console_problems(page, page_errors, allowed=("status of 409",))
    assert not problems, problems


def test_show_if_exclusive_options_and_a_double_press_skip(page, page_errors, live_server, cast):
    owner, rater = cast
    schema = {
        "questions": [
            {"key": "ok", "type": "choice", "title": "Is it fine?",
             "options": [{"value": "yes", "label": "Yes", "hotkey": "y"},
                         {"value": "no", "label": "No", "hotkey": "n"}]},
            {"key": "why", "type": "multi_choice", "title": "What is wrong?",
             "show_if": {"question": "ok", "equals": "no"}, "exclusive": ["unsure"],
             "options": [{"value": "rude", "label": "Rude", "hotkey": "r"},
                         {"value": "wrong", "label": "Wrong", "hotkey": "w"},
                         {"value": "unsure", "label": "Not sure", "hotkey": "u"}]},
        ]
    }  # fmt: skip
    make_project(owner, rater, "cond", schema=schema, items=ITEMS[:2])
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "cond")
    wait_for_item(page, "c1")
    why = page.locator('[data-q="why"]')
    expect(why).to_be_hidden()
    page.keyboard.press("n")
    expect(why).to_be_visible()
    expect(page.locator('.q.active[data-q="why"]')).to_be_visible()
    page.keyboard.press("r")
    page.keyboard.press("w")
    pressed = why.locator('.opt[aria-pressed="true"]')
    expect(pressed).to_have_text(["rRude", "wWrong"])
    page.keyboard.press("u")  # exclusive: clears the others
    expect(pressed).to_have_text(["uNot sure"])
    page.keyboard.press("r")
    expect(pressed).to_have_text(["rRude"])
    page.keyboard.press("y")
    expect(why).to_be_hidden()

    page.keyboard.press("s")
    expect(page.locator("#status")).to_contain_text("Press S again")
    assert Assignment.objects.get().status == "active"
    page.keyboard.press("s")
    wait_for_item(page, "c2")
    assert list(Assignment.objects.order_by("id").values_list("status", flat=True)) == [
        "skipped",
        "active",
    ]
    assert not Annotation.objects.exists()
    assert_clean(page, page_errors)


TRICKY = [
    "`code` and ``double `tick` code`` end, **bold *nested italic* bold**",
    "snake_case_name and _italic_ and __dunder__ and 2*3*4 and a * b * c",
    "1. one\n2. two\n   continued\n\n- a\n  - nested\n\n* * *\n\n> quote\n> more",
    "# Heading #\n\ntext\r\nwith CRLF\ttab\n\n```python\nprint('<b>')\n```\n```\nunclosed",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇧🇷 **bold 🎉** *𝒾𝓉𝒶𝓁𝒾𝒸* `𝟘`",
    "[link](https://example.com/a_b) [bad](javascript:alert(1)) [x](<no>) ![img](http://x/y.png)",
    "\\*not italic\\* and \\`not code\\` and mixed עברית and العربية text",
]


def test_every_rendered_text_maps_back_to_its_raw_offsets(page, page_errors, live_server, cast):
    owner, rater = cast
    messages = []
    for content in TRICKY:
        messages += [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]
    make_project(owner, rater, "tricky", items=[{"external_id": "t", "messages": messages}])
    log_in(page, live_server.url, "rater", "pw-rater")
    open_label_page(page, live_server, "tricky")
    wait_for_item(page, "t")
    for raw_mode in (False, True):
        for index, content in enumerate(TRICKY):
            message_id = f"t{2 * index + 2}"
            problems = page.evaluate(
                """([id, raw]) => {
                  const points = Array.from(raw);
                  const bad = [];
                  const segs = document.querySelectorAll(`.content[data-message="${id}"] .seg`);
                  for (const seg of segs) {
                    const start = Number(seg.dataset.start);
                    const text = seg.textContent;
                    const got = points.slice(start, start + Array.from(text).length).join("");
                    if (got !== text) bad.push([start, text, got]);
                    if (seg.children.length) bad.push(["nested", text]);
                  }
                  if (!segs.length) bad.push("no segments");
                  return bad;
                }""",
                [message_id, content],
            )
            assert problems == [], (raw_mode, content, problems)
        page.locator("#raw-toggle").click()
    # Rendered again: only http(s) links get a target (an image is a link, never loaded); the
    # javascript: one shows no URL.
    assert "alert" not in page.locator('.content[data-message="t12"]').inner_text()
    links = page.locator(".content a")
    expect(links).to_have_count(2)
    assert [a.get_attribute("href") for a in links.all()] == [
        "https://example.com/a_b",
        "http://x/y.png",
    ]
    assert {a.get_attribute("rel") for a in links.all()} == {"noopener noreferrer nofollow"}
    assert page.locator(".content img").count() == 0
    page.locator("#raw-toggle").click()
    expect(links).to_have_count(0)
    assert_clean(page, page_errors)
