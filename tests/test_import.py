"""Importing items: every format, every malformed file, idempotency and limits."""

from __future__ import annotations

import io
import json

import pytest
from django.db import transaction

from labelling.errors import InvalidImport
from labelling.importing import ImportLimits
from labelling.models import Item
from labelling.services.items import items_import
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db


def run(project, payload: bytes | io.BytesIO, fmt: str, **kwargs):
    stream = payload if isinstance(payload, io.BytesIO) else io.BytesIO(payload)
    return items_import(project=project, stream=stream, fmt=fmt, **kwargs)


def import_error(project, payload, fmt: str, **kwargs) -> dict:
    with pytest.raises(InvalidImport) as caught:
        run(project, payload, fmt, **kwargs)
    return caught.value.extra["errors"]


# Accepted shapes --------------------------------------------------------------------------------


def test_it_imports_our_chat_shape_from_jsonl(project):
    result = run(
        project,
        jsonl(
            chat("a", source="chatlogs", license="CC-BY-4.0", consent="opt_in", language="en"),
            chat("b", metadata={"model": "m-1", "prompt_version": 3}),
        ),
        "jsonl",
    )

    assert (result.created, result.skipped_existing) == (2, 0)
    a = Item.objects.get(project=project, external_id="a")
    assert a.messages == [
        {"id": "t1", "role": "user", "content": "Hi"},
        {"id": "t2", "role": "assistant", "content": "Hello!"},
    ]
    assert (a.source, a.license, a.consent, a.language) == ("chatlogs", "CC-BY-4.0", "opt_in", "en")
    assert Item.objects.get(external_id="b").metadata == {"model": "m-1", "prompt_version": 3}


def test_it_imports_a_json_array_and_reports_lines_of_its_elements(project):
    payload = json.dumps([chat("a"), chat("b")], indent=2).encode()

    assert run(project, payload, "json").created == 2
    errors = import_error(project, json.dumps([chat("c"), {"id": "d"}], indent=2).encode(), "json")
    assert errors[0]["field"] == "messages"
    assert errors[0]["line"] == payload.decode().count("\n") // 2 + 2  # second element's line


def test_it_imports_csv_prompt_response_columns_and_keeps_extra_columns_as_metadata(project):
    payload = (
        "id,prompt,response,language,model,meta.temperature\n"
        '1,"What is 2+2?","It is 4.",en,gpt-x,0.2\n'
        '2,"Diga olá","Olá!\nTudo bem?",,gpt-y,0.7\n'
    ).encode()

    result = run(project, payload, "csv")

    assert result.created == 2
    first = Item.objects.get(external_id="1")
    assert [m["role"] for m in first.messages] == ["user", "assistant"]
    assert first.metadata == {"model": "gpt-x", "temperature": "0.2"}
    assert Item.objects.get(external_id="2").messages[1]["content"] == "Olá!\nTudo bem?"


def test_it_imports_csv_with_a_messages_column_holding_json(project):
    messages = json.dumps([{"role": "user", "content": 'x, "quoted"'}])
    payload = ("external_id,messages\n" + "m1," + json.dumps(messages) + "\n").encode()
    # json.dumps of a string gives a double-quoted cell with backslash escapes; CSV wants "".
    payload = ('external_id,messages\nm1,"' + messages.replace('"', '""') + '"\n').encode()

    run(project, payload, "csv")

    assert Item.objects.get(external_id="m1").messages[0]["content"] == 'x, "quoted"'


def test_it_imports_openai_messages_with_content_parts_tools_and_developer_role(project):
    record = {
        "id": "oa-1",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function"}],
            },
            {"role": "tool", "content": "18C", "tool_call_id": "c1"},
            {"role": "assistant", "content": "18 degrees."},
        ],
    }

    run(project, jsonl(record), "jsonl")

    item = Item.objects.get(external_id="oa-1")
    assert [m["role"] for m in item.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert item.messages[1]["content"] == "Weather?"
    assert item.messages[2]["tool_calls"] == [{"id": "c1", "type": "function"}]
    assert item.messages[3]["tool_call_id"] == "c1"


def test_it_imports_sharegpt_conversations(project):
    record = {"id": "sg", "conversations": [{"from": "human", "value": "Oi"},
                                            {"from": "gpt", "value": "Olá"}]}  # fmt: skip
    run(project, jsonl(record), "jsonl")
    assert [m["role"] for m in Item.objects.get(external_id="sg").messages] == ["user", "assistant"]


def test_it_imports_pair_items_from_candidates_or_response_columns(project):
    run(
        project,
        jsonl(
            {
                "id": "p1",
                "prompt": "Tell me a joke",
                "candidates": ["A joke", {"content": "B joke"}],
            },
            {"id": "p2", "prompt": "Hi", "response_a": "Hello", "response_b": "Hey"},
        ),
        "jsonl",
    )

    p1 = Item.objects.get(external_id="p1")
    assert p1.is_pair
    assert p1.candidates == [
        {"id": "a", "role": "assistant", "content": "A joke"},
        {"id": "b", "role": "assistant", "content": "B joke"},
    ]
    assert [c["content"] for c in Item.objects.get(external_id="p2").candidates] == ["Hello", "Hey"]


def test_it_keeps_given_message_ids_and_odd_metadata_keys_verbatim(project):
    odd = {'a"b': 1, "x.y": 2, "owner__password": 3, "nested": {"__class__": "x"}}
    record = {
        "id": "ids",
        "messages": [{"id": "u-1", "role": "user", "content": "Q"},
                     {"id": 7, "role": "assistant", "content": "A"}],
        "metadata": odd,
    }  # fmt: skip

    run(project, jsonl(record), "jsonl")

    item = Item.objects.get(external_id="ids")
    assert [m["id"] for m in item.messages] == ["u-1", "7"]
    assert item.metadata == odd


def test_it_defaults_consent_to_unknown_and_detects_language(project):
    run(
        project,
        jsonl(
            chat("pt", "Qual é a capital do Brasil?", "A capital do Brasil é Brasília."),
            chat("en", "What is the capital of France?", "The capital of France is Paris."),
            chat("given", "Hola", "Hola", language="es_AR"),
        ),
        "jsonl",
    )

    items = {i.external_id: i for i in Item.objects.filter(project=project)}
    assert items["pt"].consent == "unknown"
    assert items["pt"].language == "pt"
    assert items["en"].language == "en"
    assert items["given"].language == "es-ar"


# Idempotency ------------------------------------------------------------------------------------


def test_reimporting_the_same_file_is_a_no_op(project):
    payload = jsonl(chat("a"), chat("b"), chat("c")).getvalue()
    run(project, payload, "jsonl")

    again = run(project, payload, "jsonl")

    assert (again.created, again.skipped_existing) == (0, 3)
    assert Item.objects.filter(project=project).count() == 3


def test_items_without_an_id_are_deduplicated_by_content(project):
    record = {"messages": [{"role": "user", "content": "same"}]}
    run(project, jsonl(record), "jsonl")

    again = run(
        project, jsonl(record, {"messages": [{"role": "user", "content": "other"}]}), "jsonl"
    )

    assert (again.created, again.skipped_existing) == (1, 1)
    assert Item.objects.get(messages__0__content="same").external_id.startswith("sha256:")


def test_the_same_external_id_in_two_projects_is_two_items(project, other_project):
    run(project, jsonl(chat("shared")), "jsonl")
    run(other_project, jsonl(chat("shared")), "jsonl")
    assert Item.objects.filter(external_id="shared").count() == 2


# Malformed files: each is refused whole, names its line, and writes nothing ---------------------


def ten_thousand_with_bad_row(bad_index: int) -> bytes:
    rows = [chat(f"r{i}", f"question {i}", f"answer {i}", language="en") for i in range(10_000)]
    rows[bad_index] = {"id": f"r{bad_index}", "messages": [{"role": "wizard", "content": "x"}]}
    return jsonl(*rows).getvalue()


MALFORMED = {
    "truncated_json": (json.dumps([chat("a"), chat("b")], indent=1)[:-30].encode(), "json", None),
    "truncated_jsonl_line": (
        b'{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n'
        b'{"id": "b", "messages": [{"role": "us',
        "jsonl",
        2,
    ),  # fmt: skip
    "bad_utf8_jsonl": (jsonl(chat("a")).getvalue() + b'{"id": "b\xff\xfe"}\n', "jsonl", 2),
    "bad_utf8_csv": (b"id,prompt,response\n1,ok,fine\n2,caf\xe9,x\n", "csv", 3),
    "ragged_csv": (b"id,prompt,response\n1,a,b\n2,a,b,extra\n", "csv", 3),
    "duplicate_ids": (jsonl(chat("a"), chat("b"), chat("a")).getvalue(), "jsonl", 3),
    "missing_messages": (jsonl(chat("a"), {"id": "b", "source": "x"}).getvalue(), "jsonl", 2),
    "wrong_role": (
        jsonl(chat("a"), {"id": "b", "messages": [{"role": "robot", "content": "x"}]}).getvalue(),
        "jsonl",
        2,
    ),  # fmt: skip
    "oversize_message": (jsonl(chat("a", reply="x" * 2001)).getvalue(), "jsonl", 1),
    "too_many_messages": (
        jsonl({"id": "a", "messages": [{"role": "user", "content": "x"}] * 11}).getvalue(),
        "jsonl",
        1,
    ),  # fmt: skip
    "not_an_array": (b'{"id": "a"}', "json", 1),
    "empty_file": (b"", "jsonl", 1),
}
SMALL_LIMITS = ImportLimits(max_messages=10, max_message_chars=2000, max_errors=100)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_file_is_refused_with_its_line_and_nothing_is_written(project, name):
    payload, fmt, line = MALFORMED[name]
    run(project, jsonl(chat("already-here")), "jsonl")

    errors = import_error(project, payload, fmt, limits=SMALL_LIMITS)

    assert errors, name
    assert all({"line", "field", "message"} <= set(error) for error in errors)
    if line is not None:
        assert errors[0]["line"] == line, errors
    assert list(Item.objects.filter(project=project).values_list("external_id", flat=True)) == [
        "already-here"
    ]


def test_a_bad_row_9999_of_10000_is_named_and_nothing_is_written(project):
    errors = import_error(project, ten_thousand_with_bad_row(9_998), "jsonl")

    assert errors == [
        {"line": 9_999, "field": "messages[0].role",
         "message": "Unknown role 'wizard'; use one of: system, user, assistant, tool."}
    ]  # fmt: skip
    assert Item.objects.filter(project=project).count() == 0


def test_it_reports_every_bad_field_of_every_row(project):
    rows = jsonl(
        {"id": "a", "messages": [{"role": "user", "content": 5}], "consent": "maybe"},
        chat("b", language="not a code!"),
    )

    errors = import_error(project, rows, "jsonl")

    assert [(e["line"], e["field"]) for e in errors] == [
        (1, "messages[0].content"),
        (1, "consent"),
        (2, "language"),
    ]


def test_it_stops_collecting_after_max_errors(project):
    rows = jsonl(*[{"id": str(i)} for i in range(50)])
    errors = import_error(project, rows, "jsonl", limits=ImportLimits(max_errors=5))
    assert len(errors) == 5


def test_a_10000_row_import_succeeds(project):
    payload = ten_thousand_with_bad_row(0)
    result = run(project, payload[payload.index(b"\n") + 1 :], "jsonl")
    assert result.created == 9_999
    assert Item.objects.filter(project=project).count() == 9_999


# NUL characters: PostgreSQL text and jsonb cannot store them -----------------------------------

NUL_RECORDS = {
    "messages[1].content": chat("a", reply="bad\x00reply"),
    "messages[0].content[0].text": {
        "id": "a",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x\x00"}]}],
    },
    "messages[0].name": {
        "id": "a",
        "messages": [{"role": "user", "content": "Hi", "name": "bo\x00b"}],
    },
    "external_id": chat("a\x00"),
    "source": chat("a", source="\x00"),
    "metadata.run.tags[1]": chat("a", metadata={"run": {"tags": ["ok", "n\x00"]}}),
    "metadata.k\\u0000": chat("a", metadata={"k\x00": 1}),
    "note": chat("a", note="a\x00b"),
    "prompt": {"id": "a", "prompt": "Say\x00hi", "response": "Hi"},
}


@pytest.mark.parametrize("field", sorted(NUL_RECORDS))
def test_a_nul_character_anywhere_is_refused_with_its_field(project, field):
    run(project, jsonl(chat("already-here")), "jsonl")

    errors = import_error(project, jsonl(chat("fine"), NUL_RECORDS[field]), "jsonl")

    assert errors == [
        {
            "line": 2,
            "field": field,
            "message": "Contains a NUL character (\\u0000), which cannot be stored.",
        }
    ]
    assert list(Item.objects.filter(project=project).values_list("external_id", flat=True)) == [
        "already-here"
    ]


def test_a_nul_character_in_a_csv_cell_is_refused(project):
    errors = import_error(project, b"id,prompt,response\n1,ok,fine\n2,ok,b\x00d\n", "csv")

    assert [(e["line"], e["field"]) for e in errors] == [(3, "response")]
    assert Item.objects.filter(project=project).count() == 0


# The fast paths (COPY on PostgreSQL, the cheaper language detection) ---------------------------


def test_imported_items_get_the_model_defaults_for_fields_the_import_does_not_set(project):
    run(project, jsonl(chat("a", language="en")), "jsonl")

    item = Item.objects.get(project=project, external_id="a")
    fresh = Item(project=project)
    imported = {"id", "external_id", "messages", "candidates", "metadata", "source", "license",
                "consent", "language", "created_at", "updated_at"}  # fmt: skip
    for model_field in Item._meta.concrete_fields:
        if model_field.name not in imported:
            assert getattr(item, model_field.attname) == getattr(fresh, model_field.attname)
    assert item.candidates is None
    assert item.created_at is not None and item.updated_at is not None


def test_a_reimport_spanning_several_batches_skips_only_what_exists(project):
    rows = [chat(f"r{i}", f"question {i}", f"answer {i}", language="en") for i in range(5_000)]
    run(project, jsonl(*rows[:2_500]), "jsonl")

    again = run(project, jsonl(*rows), "jsonl")

    assert (again.created, again.skipped_existing) == (2_500, 2_500)
    assert Item.objects.filter(project=project).count() == 5_000
    assert Item.objects.get(project=project, external_id="r4999").messages[1]["content"] == (
        "answer 4999"
    )


def test_a_write_conflict_is_reported_as_a_conflict_and_nothing_is_written(project, monkeypatch):
    from labelling.errors import Conflict
    from labelling.services import items as service

    run(project, jsonl(chat("a", language="en")), "jsonl")
    # As if another import had added "a" after this one looked for existing ids.
    monkeypatch.setattr(service, "_new_items", lambda project, batch, result: batch)

    with pytest.raises(Conflict):
        run(project, jsonl(chat("b", language="en"), chat("a", language="en")), "jsonl")

    assert list(Item.objects.filter(project=project).values_list("external_id", flat=True)) == ["a"]


def test_foreign_keys_are_checked_at_the_commit_again_after_an_import(project):
    # PostgreSQL imports check them as each batch is stored, then defer them again.
    run(project, jsonl(chat("a", language="en")), "jsonl")

    with transaction.atomic():
        # A cluster that does not exist yet: refused here if the key were checked at once.
        Item.objects.create(
            project=project,
            external_id="b",
            messages=[{"id": "t1", "role": "user", "content": "Hi"}],
            cluster_id=2**40,
        )
        transaction.set_rollback(True)


NATURAL = {
    "es": ("¿Cómo puedo mejorar mi currículum?", "Empieza con un resumen breve de tu perfil "
           "profesional, destaca tus logros con cifras concretas y adapta el contenido."),
    "pt": ("Como faço para cancelar minha assinatura?", "Acesse a sua conta, clique em "
           "Configurações e depois em Assinatura. Lá você vai encontrar a opção de cancelar."),
    "fr": ("Peux-tu m'expliquer la photosynthèse ?", "La photosynthèse est le processus par "
           "lequel les plantes utilisent la lumière du soleil pour produire du glucose."),
    "de": ("Wie lange muss man Nudeln kochen?", "Die meisten getrockneten Nudeln brauchen "
           "zwischen acht und zwölf Minuten in sprudelnd kochendem Salzwasser."),
    "it": ("Dammi tre consigli per dormire meglio", "Vai a letto e svegliati sempre alla stessa "
           "ora, anche nel fine settimana, ed evita gli schermi prima di dormire."),
    "ru": ("Как приготовить борщ?", "Для борща понадобятся свёкла, капуста, картофель, морковь "
           "и лук."),
}  # fmt: skip


def test_language_detection_reads_a_short_sample_and_answers_as_py3langid_does():
    import py3langid

    from labelling.importing import detect_language, language_sample

    for language, (question, answer) in NATURAL.items():
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        sample = language_sample(messages)
        assert detect_language(messages) == py3langid.classify(sample)[0] == language, language
    assert detect_language([{"role": "system", "content": "Only a system prompt."}]) == ""


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_as_invalid_json(project, constant):
    payload = b'{"id": "a", "messages": [{"role": "user", "content": "x"}], "metadata": {"t": '
    errors = import_error(project, payload + constant.encode() + b"}}\n", "jsonl")
    assert errors[0]["line"] == 1
    assert constant in errors[0]["message"]
    assert Item.objects.filter(project=project).count() == 0


def test_gold_answers_are_imported_and_checked_against_the_schema(project):
    run(project, jsonl(chat("g1", gold={"truthfulness": "true", "fluency": 5})), "jsonl")
    assert Item.objects.get(external_id="g1").gold == {"truthfulness": "true", "fluency": 5}

    errors = import_error(
        project, jsonl(chat("g2", gold={"truthfulness": "maybe"}), chat("g3", gold={"x": 1})),
        "jsonl",
    )  # fmt: skip

    assert [(e["line"], e["field"]) for e in errors] == [(1, "gold.truthfulness"), (2, "gold.x")]
    assert not Item.objects.filter(external_id__in=["g2", "g3"]).exists()


def test_gold_needs_a_published_schema(other_project):
    errors = import_error(other_project, jsonl(chat("g", gold={"truthfulness": "true"})), "jsonl")
    assert errors[0]["field"] == "gold"
