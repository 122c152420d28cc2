"""Untrusted text (conversations, metadata, project and schema texts) renders inert."""

from __future__ import annotations

from playwright.sync_api import expect

from labelling.models import Item
from labelling.schema import template
from labelling.selectors.projects import schema_current
from labelling.services.items import items_import
from labelling.services.projects import project_create, schema_publish
from tests.conftest import jsonl

from .conftest import log_in
from .helpers import ADMIN_PASSWORD, ADMIN_USERNAME, make_admin

# SECURITY.md "Content", plus breakouts from the places Django puts text: attributes,
# <title>, <textarea> and <pre>.
PAYLOADS = [
    "</script><script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "[click](javascript:window.__xss=1)",
    "<svg onload=window.__xss=1>",
    '<a href="javascript:window.__xss=1">x</a>',
    '**bold** <iframe src="javascript:window.__xss=1"></iframe> raw HTML in markdown',
    "<details open ontoggle=window.__xss=1>",
    '"><script>window.__xss=1</script>',
    "' onmouseover='window.__xss=1' x='",
    "</textarea><script>window.__xss=1</script>",
    "</title><script>window.__xss=1</script>",
    "</pre><img src=x onerror=window.__xss=1>",
    "javascript:window.__xss=1",
]
# Shown in a JSON dump by the admin, where quotes come back escaped: no quotes in this one.
METADATA_PAYLOAD = "<svg onload=window.__xss=1>"

PROJECT_NAME = "Evil </title><script>window.__xss=1</script> project"
PROJECT_DESCRIPTION = '"><img src=x onerror="window.__xss=1"> description'
PROJECT_GUIDELINES = "</textarea><script>window.__xss=1</script> [rules](javascript:window.__xss=1)"
SCHEMA_NAME = "<img src=x onerror=window.__xss=1> schema"

# Everything that would mean the payload ran or could run, found in the live DOM.
FIND_LIVE_PAYLOADS = """
() => {
  const found = [];
  if (typeof window.__xss !== "undefined") found.push("window.__xss is set");
  for (const script of document.querySelectorAll("script")) {
    const source = script.getAttribute("src") || "";
    if (script.textContent.includes("__xss") || source.includes("__xss")) {
      found.push("script element: " + script.outerHTML.slice(0, 200));
    }
  }
  const urlAttributes = ["href", "src", "action", "formaction", "xlink:href", "data"];
  for (const element of document.querySelectorAll("*")) {
    for (const attribute of element.attributes) {
      const name = attribute.name.toLowerCase();
      if (name.startsWith("on") && attribute.value.includes("__xss")) {
        found.push("handler " + name + " on <" + element.localName + ">: " + attribute.value);
      }
      const url = attribute.value.replace(/[\\u0000-\\u0020]/g, "").toLowerCase();
      if (urlAttributes.includes(name) && url.startsWith("javascript:")) {
        found.push("javascript: URL in " + name + " of <" + element.localName + ">");
      }
    }
  }
  const jsUrls = 'a[href^="javascript:" i], [src^="javascript:" i]';
  for (const element of document.querySelectorAll(jsUrls)) {
    found.push("javascript: URL on <" + element.localName + ">");
  }
  for (const element of document.querySelectorAll('img[src="x"], iframe, details[ontoggle]')) {
    found.push("injected element: " + element.outerHTML.slice(0, 200));
  }
  return found;
}
"""


def test_conversation_text_with_xss_payloads_renders_inert(page, check_page, live_server):
    admin = make_admin()
    project = project_create(
        slug="evil",
        name=PROJECT_NAME,
        description=PROJECT_DESCRIPTION,
        guidelines=PROJECT_GUIDELINES,
        created_by=admin,
    )
    definition = template("llm_response_review")
    truth = definition["questions"][0]
    truth["title"] = "<script>window.__xss=1</script> Is it true?"
    truth["help"] = '<img src=x onerror="window.__xss=1"> help'
    truth["options"][0]["label"] = "<svg onload=window.__xss=1> True"
    schema_publish(project=project, definition=definition, name=SCHEMA_NAME, created_by=admin)
    records = [
        {
            "external_id": f"{payload} #{number}",
            "messages": [
                {"role": "system", "content": payload},
                {"role": "user", "content": payload},
                {"role": "assistant", "content": f"Reply: {payload}"},
            ],
            "metadata": {"note": METADATA_PAYLOAD, '"><script>window.__xss=1</script>': 1},
            "source": payload,
            "language": "en",
        }
        for number, payload in enumerate(PAYLOADS)
    ]
    items_import(project=project, stream=jsonl(*records), fmt="jsonl")
    items = list(Item.objects.filter(project=project).order_by("id"))
    assert len(items) == len(PAYLOADS)

    def assert_inert() -> None:
        found = page.evaluate(FIND_LIVE_PAYLOADS)
        assert not found, f"{page.url}:\n" + "\n".join(found)
        check_page()

    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    row = page.locator("table.list tbody tr", has_text="Evil")
    name_cell = row.locator("td").first
    expect(name_cell.locator("strong")).to_have_text(PROJECT_NAME)
    expect(name_cell.locator(".muted")).to_have_text(PROJECT_DESCRIPTION)
    assert_inert()

    page.goto(f"{live_server.url}/admin/labelling/item/?project__id__exact={project.pk}")
    result_list = page.locator("#result_list")
    expect(result_list.locator("tbody tr")).to_have_count(len(PAYLOADS))
    for number, payload in enumerate(PAYLOADS):
        expect(
            result_list.get_by_role("link", name=f"{payload} #{number}", exact=True)
        ).to_be_visible()
    assert_inert()

    for item, payload in zip(items, PAYLOADS, strict=True):
        page.goto(f"{live_server.url}/admin/labelling/item/{item.pk}/change/")
        assert_inert()
        conversation = page.locator(".conversation")
        expect(conversation.locator("pre")).to_have_text([payload, payload, f"Reply: {payload}"])
        expect(page.locator(".field-source .readonly")).to_have_text(payload)
        expect(page.locator(".field-external_id .readonly")).to_have_text(item.external_id)
        expect(page.locator(".field-metadata .readonly")).to_contain_text(METADATA_PAYLOAD)
        assert_inert()

    page.goto(f"{live_server.url}/admin/labelling/project/{project.pk}/change/")
    expect(page.locator("input[name=name]")).to_have_value(PROJECT_NAME)
    expect(page.locator("textarea[name=description]")).to_have_value(PROJECT_DESCRIPTION)
    expect(page.locator("textarea[name=guidelines]")).to_have_value(PROJECT_GUIDELINES)
    expect(page.locator("body")).to_contain_text(SCHEMA_NAME)
    assert_inert()

    page.goto(f"{live_server.url}/admin/labelling/project/")
    expect(page.locator("#result_list")).to_contain_text(PROJECT_NAME)
    assert_inert()

    page.goto(f"{live_server.url}/admin/labelling/labelschema/")
    expect(page.locator("#result_list")).to_contain_text(SCHEMA_NAME)
    assert_inert()

    schema = schema_current(project=project)
    page.goto(f"{live_server.url}/admin/labelling/labelschema/{schema.pk}/change/")
    definition_text = page.locator(".field-pretty_definition pre")
    expect(definition_text).to_contain_text("<script>window.__xss=1</script> Is it true?")
    assert_inert()
