"""Dataset formats: each one read back, masking in every one, chat and preference rows."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from labelling.exports import FORMAT_INFO, export_stream
from labelling.models import Item
from labelling.services.items import items_import
from labelling.services.projects import schema_publish
from tests.conftest import jsonl

pytestmark = pytest.mark.django_db

SECRET = "Joana Pereira"
PROMPT = f"Hello, I am {SECRET}. Write me a haiku."
SCHEMA = {
    "questions": [
        {
            "key": "verdict",
            "type": "choice",
            "title": "Verdict",
            "options": [{"value": "good", "label": "Good"}, {"value": "bad", "label": "Bad"}],
        },
        {"key": "quality", "type": "rating", "title": "Quality", "scale": 5},
        {"key": "preferred", "type": "preference", "title": "Better?", "allow_tie": True},
        {
            "key": "pii",
            "type": "span",
            "title": "Personal data",
            "mask_in_export": True,
            "labels": [{"value": "name", "label": "Name"}],
            "roles": ["user", "assistant"],
        },
        {
            "key": "highlight",
            "type": "span",
            "title": "Nice bits",
            "labels": [{"value": "good", "label": "Good"}],
            "roles": ["user", "assistant"],
        },
        {"key": "comment", "type": "text", "title": "Comment", "max_length": 500},
    ]
}


def conversation(external_id: str, reply: str) -> dict:
    return {
        "external_id": external_id,
        "consent": "opt_in",
        "metadata": {"customer": SECRET, "note": f"about {SECRET}", "model": "m1"},
        "messages": [
            {"id": "u1", "role": "user", "content": PROMPT},
            {"id": "a1", "role": "assistant", "content": reply},
        ],
    }


def name_span(content: str, message: str = "u1", **extra) -> dict:
    start = content.index(SECRET)
    return {
        "message": message,
        "start": start,
        "end": start + len(SECRET),
        "label": "name",
        **extra,
    }


REPLY_GOOD = f"Dear {SECRET}, here it is: autumn moon."
REPLY_BAD = "No."


@pytest.fixture
def data(project, owner):
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    pair = {
        "external_id": "pair",
        "consent": "opt_in",
        "messages": [{"id": "u1", "role": "user", "content": PROMPT}],
        "candidates": [{"content": "Reply A"}, {"content": f"Reply B for {SECRET}"}],
    }
    items_import(
        project=project,
        stream=jsonl(conversation("good", REPLY_GOOD), conversation("bad", REPLY_BAD), pair),
        fmt="jsonl",
    )
    highlight_start = REPLY_GOOD.index("here it is")
    good = {
        "verdict": {"value": "good", "distribution": {"good": 1.0}, "agreement": 1.0, "n": 2},
        "quality": {"value": 5, "distribution": {"5": 1.0}, "agreement": 1.0, "n": 2},
        # Only the prompt's name was marked; the reply's "Dear Joana Pereira" must go as well.
        "pii": {"value": [name_span(PROMPT)], "distribution": {}, "agreement": 1.0, "n": 2},
        "highlight": {
            "value": [
                {
                    "message": "a1",
                    "start": highlight_start,
                    "end": highlight_start + len("here it is"),
                    "label": "good",
                    "text": "here it is",
                }
            ],
            "reviewed": True,
        },
        "comment": {"value": f"{SECRET} asked politely", "reviewed": True},
    }
    bad = {
        "quality": {"value": 2, "distribution": {"2": 1.0}, "agreement": 1.0, "n": 2},
        "pii": {"value": [name_span(PROMPT, text=SECRET)], "reviewed": True},
    }
    pair_consensus = {
        "preferred": {"value": {"choice": "B"}, "distribution": {"B": 1.0}, "agreement": 1.0},
        "pii": {"value": [name_span(PROMPT)], "distribution": {}, "agreement": 1.0, "n": 1},
    }
    for external_id, consensus in (("good", good), ("bad", bad), ("pair", pair_consensus)):
        Item.objects.filter(project=project, external_id=external_id).update(
            status="approved", consensus=consensus, agreement=1.0
        )
    return project


def fetch(client, project, fmt: str, **params):
    query = "&".join(f"{k}={v}" for k, v in {"format": fmt, **params}.items())
    response = client.get(f"/api/v1/projects/{project.slug}/dataset/?{query}")
    assert response.status_code == 200, response.content[:300]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def json_records(client, project) -> list[dict]:
    return json.loads(fetch(client, project, "json")[1])["results"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet", "chat", "preference"])
def test_no_masked_character_leaves_in_any_format(api, owner, data, fmt):
    response, body = fetch(api(owner), data, fmt)

    assert SECRET.encode() not in body
    assert SECRET.split()[1].encode() not in body  # not even the surname on its own
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(body))
        text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
        assert SECRET not in text and "[MASKED:name]" in text
    else:
        assert "[MASKED:name]" in body.decode()
    if fmt != "json":
        disposition = response["Content-Disposition"]
        assert disposition.startswith("attachment;")
        assert disposition.endswith(f'.{FORMAT_INFO[fmt].extension}"')
        assert response["Content-Type"] == FORMAT_INFO[fmt].content_type


def test_masking_moves_spans_onto_the_masked_text_and_scrubs_everything_else(api, owner, data):
    records = {r["external_id"]: r for r in json_records(api(owner), data)}
    good = records["good"]
    user, reply = good["messages"][0]["content"], good["messages"][1]["content"]

    assert user == "Hello, I am [MASKED:name]. Write me a haiku."
    assert reply == "Dear [MASKED:name], here it is: autumn moon."
    [pii] = good["answers"]["pii"]
    assert user[pii["start"] : pii["end"]] == "[MASKED:name]"
    [highlight] = good["answers"]["highlight"]
    assert reply[highlight["start"] : highlight["end"]] == "here it is" == highlight["text"]
    assert good["metadata"] == {
        "customer": "[MASKED:name]",
        "note": "about [MASKED:name]",
        "model": "m1",
    }
    assert good["answers"]["comment"] == "[MASKED:name] asked politely"
    assert records["bad"]["answers"]["pii"][0]["text"] == "[MASKED:name]"
    assert records["pair"]["candidates"][1]["content"] == "Reply B for [MASKED:name]"
    assert good["answers"]["verdict"] == "good" and good["answers"]["quality"] == 5


def test_jsonl_reads_back_as_the_json_pages(api, owner, data):
    client = api(owner)
    _, body = fetch(client, data, "jsonl")
    lines = [json.loads(line) for line in body.decode().splitlines()]

    assert lines == json_records(client, data)
    assert [line["external_id"] for line in lines] == ["good", "bad", "pair"]


def test_csv_reads_back_with_nested_values_as_json(api, owner, data):
    client = api(owner)
    _, body = fetch(client, data, "csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    expected = json_records(client, data)

    assert len(rows) == len(expected)
    for row, record in zip(rows, expected, strict=True):
        assert int(row["id"]) == record["id"]
        assert row["external_id"] == record["external_id"]
        assert json.loads(row["messages"]) == record["messages"]
        assert json.loads(row["answers"]) == record["answers"]
        assert json.loads(row["metadata"]) == record["metadata"]
        assert (json.loads(row["candidates"]) if row["candidates"] else None) == record[
            "candidates"
        ]
    assert list(rows[0]) == list(expected[0])


def test_csv_fields_choose_the_columns(api, owner, data):
    _, body = fetch(api(owner), data, "csv", fields="external_id,agreement")
    assert body.decode().splitlines() == [
        "external_id,agreement",
        "good,1.0",
        "bad,1.0",
        "pair,1.0",
    ]


def test_parquet_reads_back_with_typed_columns_in_row_groups(api, owner, data, monkeypatch):
    monkeypatch.setattr("labelling.exports.PARQUET_ROWS", 2)
    monkeypatch.setattr("labelling.selectors.dataset.BATCH_SIZE", 2)
    client = api(owner)
    _, body = fetch(client, data, "parquet")
    parquet = pq.ParquetFile(io.BytesIO(body))
    rows = parquet.read().to_pylist()
    expected = json_records(client, data)

    assert parquet.metadata.num_row_groups == 2
    assert [row["id"] for row in rows] == [record["id"] for record in expected]
    for row, record in zip(rows, expected, strict=True):
        assert json.loads(row["messages"]) == record["messages"]
        assert json.loads(row["answers"]) == record["answers"]
        assert row["created_at"] == datetime.fromisoformat(record["created_at"])
        assert row["tags"] == record["tags"] == []
        assert row["agreement"] == record["agreement"]


def test_an_empty_dataset_still_has_a_header(api, owner, data):
    _, body = fetch(api(owner), data, "csv", source="nowhere")
    assert body.decode().startswith("id,external_id,messages,")
    _, body = fetch(api(owner), data, "parquet", source="nowhere")
    assert pq.read_table(io.BytesIO(body)).num_rows == 0


def test_chat_gives_conversations_and_the_preferred_candidate(api, owner, data):
    _, body = fetch(api(owner), data, "chat")
    rows = [json.loads(line) for line in body.decode().splitlines()]

    masked_prompt = {"role": "user", "content": PROMPT.replace(SECRET, "[MASKED:name]")}
    assert rows == [
        {
            "messages": [
                masked_prompt,
                {"role": "assistant", "content": REPLY_GOOD.replace(SECRET, "[MASKED:name]")},
            ]
        },
        {"messages": [masked_prompt, {"role": "assistant", "content": REPLY_BAD}]},
        {
            "messages": [
                masked_prompt,
                {"role": "assistant", "content": "Reply B for [MASKED:name]"},
            ]
        },
    ]


def test_preference_pairs_come_from_pair_items_and_from_rating_differences(api, owner, data):
    client = api(owner)
    _, body = fetch(client, data, "preference")
    rows = [json.loads(line) for line in body.decode().splitlines()]
    masked_prompt = [{"role": "user", "content": PROMPT.replace(SECRET, "[MASKED:name]")}]

    assert rows == [
        {
            "prompt": masked_prompt,
            "chosen": [{"role": "assistant", "content": "Reply B for [MASKED:name]"}],
            "rejected": [{"role": "assistant", "content": "Reply A"}],
        },
        {
            "prompt": masked_prompt,
            "chosen": [
                {"role": "assistant", "content": REPLY_GOOD.replace(SECRET, "[MASKED:name]")}
            ],
            "rejected": [{"role": "assistant", "content": REPLY_BAD}],
        },
    ]
    # Quality 5 against 2: a difference of 3 makes a pair at threshold 3, not at 3.5.
    assert len(fetch(client, data, "preference", threshold=3)[1].splitlines()) == 2
    assert len(fetch(client, data, "preference", threshold=3.5)[1].splitlines()) == 1


def test_a_tie_makes_no_chat_or_preference_row(api, owner, data):
    item = Item.objects.get(project=data, external_id="pair")
    item.consensus["preferred"]["value"] = {"choice": "tie"}
    Item.objects.filter(pk=item.pk).update(consensus=item.consensus)
    client = api(owner)

    assert b"Reply A" not in fetch(client, data, "chat")[1]
    assert b"Reply A" not in fetch(client, data, "preference")[1]


def test_export_stream_writes_a_json_array_that_reads_back():
    records = [{"id": n, "text": "é" * n, "nested": {"a": [n]}} for n in range(5)]
    body = b"".join(export_stream(iter(records), "json"))
    assert json.loads(body) == records
    assert json.loads(b"".join(export_stream(iter([]), "json"))) == []


def test_export_stream_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="xml"):
        export_stream([], "xml")


def test_unmasked_items_stream_exactly_the_records_of_the_pages(api, owner, project):
    from labelling.models import Cluster, ClusteringRun, Tag

    items_import(
        project=project,
        stream=jsonl(
            {
                "external_id": "plain",
                "consent": "opt_in",
                "metadata": {"model": "m2", "n": [1, 2]},
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": 'Quote "this" \\ and\nthat'},
                    {"role": "assistant", "content": "Done — ✓"},
                ],
            },
            {
                "external_id": "pair",
                "consent": "opt_in",
                "messages": [{"role": "user", "content": "Pick"}],
                "candidates": [{"content": "one"}, {"content": "two"}],
            },
        ),
        fmt="jsonl",
    )
    run = ClusteringRun.objects.create(project=project, status="succeeded")
    cluster = Cluster.objects.create(run=run, project=project, index=0, terms=["quotes"])
    plain = Item.objects.get(project=project, external_id="plain")
    plain.tags.add(
        Tag.objects.create(project=project, name="b"), Tag.objects.create(project=project, name="a")
    )
    Item.objects.filter(pk=plain.pk).update(
        status="approved",
        cluster=cluster,
        agreement=0.5,
        consensus={
            "truthfulness": {
                "value": "true",
                "distribution": {"true": 1.0},
                "agreement": None,
                "n": 1,
            },
            "fluency": {
                "value": 4.5,
                "distribution": {"4": 0.5, "5": 0.5},
                "agreement": 0.5,
                "n": 2,
                "mean": 4.5,
            },
            "harmful": {"value": [], "distribution": {}, "agreement": 1.0, "n": 2},
            "comment": {"value": "fine", "reviewed": True},
            "bias": {"value": None, "reviewed": True},
        },
    )
    # Times whose text drops digits: trailing zeros of the microseconds, or none at all.
    Item.objects.filter(pk=plain.pk).update(created_at=datetime(2026, 1, 2, 3, 4, 5, 120000, UTC))
    Item.objects.filter(project=project, external_id="pair").update(
        status="approved", created_at=datetime(2026, 1, 2, 3, 4, 5, 0, UTC)
    )
    client = api(owner)

    pages = json_records(client, project)
    lines = [json.loads(line) for line in fetch(client, project, "jsonl")[1].splitlines()]

    assert lines == pages
    assert pages[0]["answers"] == {
        "truthfulness": "true",
        "fluency": 4.5,
        "harmful": [],
        "comment": "fine",
        "bias": None,
    }
    assert pages[0]["distribution"] == {
        "truthfulness": {"true": 1.0},
        "fluency": {"4": 0.5, "5": 0.5},
    }
    assert pages[0]["question_agreement"] == {"fluency": 0.5, "harmful": 1.0}
    assert pages[0]["created_at"] == "2026-01-02T03:04:05.120000+00:00"
    assert pages[1]["created_at"] == "2026-01-02T03:04:05+00:00"
    assert pages[0]["tags"] == ["a", "b"]
    assert pages[0]["cluster"] == cluster.pk  # never its terms: raw words of many items
    assert pages[1]["candidates"][1]["content"] == "two"
    assert pages[1]["answers"] == {} and pages[1]["distribution"] == {}
    rows = list(csv.DictReader(io.StringIO(fetch(client, project, "csv")[1].decode())))
    assert [json.loads(row["messages"]) for row in rows] == [p["messages"] for p in pages]
    assert json.loads(rows[0]["answers"]) == pages[0]["answers"]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_batches_are_read_ahead_in_a_helper_thread(
    api, owner, project, monkeypatch
):
    import threading

    from labelling.selectors import dataset

    monkeypatch.setattr(dataset, "BATCH_SIZE", 3)
    records = [
        {
            "external_id": f"r{n}",
            "consent": "opt_in",
            "messages": [
                {"role": "user", "content": f"q{n}"},
                {"role": "assistant", "content": f"a{n}"},
            ],
        }
        for n in range(8)
    ]
    items_import(project=project, stream=jsonl(*records), fmt="jsonl")
    Item.objects.filter(project=project).update(status="approved")
    readers = set()
    fetch_batch = dataset._BatchExtras.load.__func__

    def spy(cls, batch, rules):
        readers.add(threading.current_thread().name)
        return fetch_batch(cls, batch, rules)

    monkeypatch.setattr(dataset._BatchExtras, "load", classmethod(spy))

    _, body = fetch(api(owner), project, "jsonl")

    assert [json.loads(line)["external_id"] for line in body.splitlines()] == [
        f"r{n}" for n in range(8)
    ]
    assert readers and all(name.startswith("dataset-prefetch") for name in readers)
    assert not [t for t in threading.enumerate() if t.name.startswith("dataset-prefetch")]
