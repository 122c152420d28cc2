"""Tests for the label-schema language (labelling.schema); no Django needed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelling.schema import (
    TEMPLATES,
    AnswerError,
    Option,
    Question,
    Schema,
    SchemaError,
    ShowIf,
    Turn,
    parse_schema,
    schema_errors,
    template,
    validate_answers,
)

# ---------------------------------------------------------------------------
# Helpers


def choice(key="answer", **extra):
    return {
        "key": key,
        "type": "choice",
        "title": "Pick one",
        "options": [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}],
        **extra,
    }


def multi(key="tags", **extra):
    return {
        "key": key,
        "type": "multi_choice",
        "title": "Pick some",
        "options": [
            {"value": "none", "label": "None"},
            {"value": "red", "label": "Red"},
            {"value": "blue", "label": "Blue"},
        ],
        "exclusive": ["none"],
        **extra,
    }


def rating(key="score", **extra):
    return {"key": key, "type": "rating", "title": "Rate it", "scale": 5, **extra}


def text(key="note", **extra):
    return {"key": key, "type": "text", "title": "Say something", **extra}


def span(key="marks", **extra):
    return {
        "key": key,
        "type": "span",
        "title": "Mark it",
        "labels": [
            {"value": "pii", "label": "Personal data", "hotkey": "p"},
            {"value": "harm", "label": "Harmful", "hotkey": "h"},
        ],
        **extra,
    }


def preference(key="preferred", **extra):
    return {"key": key, "type": "preference", "title": "Which is better?", **extra}


def definition(*questions):
    return {"questions": list(questions)}


def errors_of(*questions):
    return schema_errors(definition(*questions))


def where(errors):
    return [(e["question"], e["field"]) for e in errors]


def message_at(errors, question, field):
    found = [e["message"] for e in errors if (e["question"], e["field"]) == (question, field)]
    assert found, f"no error at {question}/{field}; got {where(errors)}"
    return found[0]


def schema_of(*questions):
    return parse_schema(definition(*questions))


TURNS = [
    Turn("s0", "system", "Be nice."),
    Turn("u1", "user", "What is the capital of France?"),
    Turn("a1", "assistant", "Paris is the capital."),
    Turn("u2", "user", "Thanks, I'm Ann. 🙂 Bye"),
    Turn("a2", "assistant", "You're welcome, Ann."),
]


def answer_errors(schema, answers, **kwargs):
    kwargs.setdefault("turns", TURNS)
    with pytest.raises(AnswerError) as caught:
        validate_answers(schema, answers, **kwargs)
    return caught.value.errors


def answer_fields(schema, answers, **kwargs):
    return [e["field"] for e in answer_errors(schema, answers, **kwargs)]


def clean(schema, answers, **kwargs):
    kwargs.setdefault("turns", TURNS)
    return validate_answers(schema, answers, **kwargs)


# ---------------------------------------------------------------------------
# Templates


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_template_parses_and_round_trips_through_to_dict(name):
    schema = parse_schema(template(name))
    assert parse_schema(schema.to_dict()) == schema
    assert parse_schema(json.loads(json.dumps(schema.to_dict()))) == schema
    assert schema_errors(template(name)) == []


def test_template_returns_a_deep_copy():
    copied = template("llm_response_review")
    copied["questions"][0]["options"][0]["label"] = "changed"
    assert TEMPLATES["llm_response_review"]["questions"][0]["options"][0]["label"] == "True"


def test_unknown_template_names_the_known_ones():
    with pytest.raises(KeyError) as caught:
        template("nope")
    for name in TEMPLATES:
        assert name in str(caught.value)


def test_llm_review_template_asks_the_documented_questions():
    schema = parse_schema(template("llm_response_review"))
    assert [q.key for q in schema.questions] == [
        "truthfulness",
        "bias",
        "fluency",
        "readability",
        "grammar",
        "cohesion",
        "logic",
        "relevance",
        "harmful",
        "comment",
    ]
    truth = schema.question("truthfulness")
    assert truth.option_values == ("true", "false", "partly_true", "cant_tell")
    assert [o.hotkey for o in truth.options] == ["t", "f", "p", "c"]
    bias = schema.question("bias")
    assert bias.required and bias.exclusive == frozenset({"none"})
    for key in ("fluency", "readability", "grammar", "cohesion", "logic", "relevance"):
        question = schema.question(key)
        assert question.scale == 5 and question.help
        assert question.anchors == {1: "Very poor", 3: "Acceptable", 5: "Excellent"}
    harmful = schema.question("harmful")
    assert harmful.mask_in_export and not harmful.required
    assert harmful.roles == ("user", "assistant")
    assert [(o.value, o.hotkey) for o in harmful.options] == [
        ("harmful", "h"),
        ("personal_data", "i"),
    ]
    comment = schema.question("comment")
    assert not comment.required and comment.max_length == 2000


def test_pairwise_and_per_turn_templates_have_their_questions():
    pairwise = parse_schema(template("pairwise_preference"))
    assert pairwise.question("preferred").strength == 3
    assert pairwise.question("preferred").allow_tie
    assert not pairwise.question("reason").required
    per_turn = parse_schema(template("per_turn_quality"))
    assert per_turn.question("helpful").scope == "assistant_turn"
    assert [o.hotkey for o in per_turn.question("resolved").options] == ["y", "n", "p"]


# ---------------------------------------------------------------------------
# Parsing: defaults and normalisation


def test_it_fills_in_defaults_per_type():
    schema = schema_of(choice(), multi(), rating(), text(), span(), preference())
    assert [q.required for q in schema.questions] == [True, False, True, False, False, True]
    assert all(q.scope == "conversation" and q.help == "" for q in schema.questions)
    note = schema.question("note")
    assert (note.max_length, note.multiline, note.placeholder) == (2000, True, "")
    marks = schema.question("marks")
    assert marks.roles == ("user", "assistant") and marks.mask_in_export is False
    pref = schema.question("preferred")
    assert pref.allow_tie is True and pref.strength == 3
    assert pref.strength_labels == ("slightly better", "clearly better", "much better")


def test_to_dict_writes_out_every_default():
    written = schema_of(text()).to_dict()["questions"][0]
    assert written == {
        "key": "note",
        "type": "text",
        "title": "Say something",
        "help": "",
        "required": False,
        "scope": "conversation",
        "max_length": 2000,
        "multiline": True,
        "placeholder": "",
    }


def test_round_trip_keeps_show_if_exclusive_and_anchors():
    schema = schema_of(
        multi(),
        rating(anchors={"1": "Bad", 5: "Good"}, show_if={"question": "tags", "equals": "red"}),
        text(show_if={"question": "score", "equals": 2}),
    )
    assert schema.question("score").anchors == {1: "Bad", 5: "Good"}
    assert schema.question("score").show_if == ShowIf("tags", "red")
    assert parse_schema(schema.to_dict()) == schema


def test_span_roles_are_stored_in_canonical_order():
    schema = schema_of(span(roles=["tool", "user"]))
    assert schema.question("marks").roles == ("user", "tool")


def test_preference_without_strength_labels_gets_defaults_for_its_strength():
    assert schema_of(preference(strength=2)).question("preferred").strength_labels == (
        "slightly better",
        "much better",
    )
    assert schema_of(preference(strength=0)).question("preferred").strength_labels == ()


def test_schema_question_looks_up_by_key():
    schema = schema_of(choice())
    assert schema.question("answer").type == "choice"
    with pytest.raises(KeyError):
        schema.question("missing")


def test_parsed_objects_are_frozen_and_hashable():
    schema = schema_of(rating(anchors={"1": "Bad"}), choice())
    assert hash(schema) == hash(schema_of(rating(anchors={"1": "Bad"}), choice()))
    with pytest.raises(AttributeError):
        schema.questions[0].key = "other"  # type: ignore[misc]


def test_question_can_be_built_directly():
    question = Question(
        key="ok", type="choice", title="Ok?", options=(Option("y", "Yes"), Option("n", "No"))
    )
    assert Schema((question,)).to_dict()["questions"][0]["options"][0] == {
        "value": "y",
        "label": "Yes",
    }
    assert parse_schema(Schema((question,)).to_dict()).question("ok").options == question.options


def test_hotkey_may_be_null_and_option_help_is_kept():
    schema = schema_of(
        choice(
            options=[
                {"value": "a", "label": "A", "hotkey": None, "help": "first"},
                {"value": "b", "label": "B"},
            ]
        )
    )
    assert schema.question("answer").options[0] == Option("a", "A", None, "first")


# ---------------------------------------------------------------------------
# Parsing: whole-definition errors


@pytest.mark.parametrize("value", [None, [], "questions", 3, True])
def test_it_rejects_a_definition_that_is_not_an_object(value):
    errors = schema_errors(value)
    assert where(errors) == [(None, "")]
    with pytest.raises(SchemaError):
        parse_schema(value)


def test_it_rejects_unknown_top_level_fields():
    errors = schema_errors({"questions": [choice()], "title": "x"})
    assert where(errors) == [(None, "title")]
    assert errors[0]["message"] == "Unknown field 'title'."


def test_it_rejects_missing_questions():
    assert where(schema_errors({})) == [(None, "questions")]


def test_it_rejects_questions_that_are_not_a_list():
    errors = schema_errors({"questions": {"key": "a"}})
    assert where(errors) == [(None, "questions")]
    assert "list" in errors[0]["message"]


def test_it_rejects_an_empty_question_list():
    errors = schema_errors({"questions": []})
    assert errors == [
        {"question": None, "field": "questions", "message": "A schema needs at least one question."}
    ]


def test_it_rejects_more_than_fifty_questions():
    fifty = [text(f"q{i}") for i in range(50)]
    assert errors_of(*fifty) == []
    errors = errors_of(*fifty, text("q50"))
    assert where(errors) == [(None, "questions")]


def test_it_rejects_an_oversize_definition():
    big = text(help="x" * 2000)
    questions = [dict(big, key=f"q{i}") for i in range(40)]
    assert len(json.dumps(definition(*questions))) > 65536
    errors = errors_of(*questions)
    assert where(errors) == [(None, "")]
    assert "65536" in errors[0]["message"]


def test_it_rejects_values_that_are_not_json():
    errors = schema_errors({"questions": [choice(options={1, 2})]})
    assert where(errors) == [(None, "")]


def test_it_rejects_a_question_that_is_not_an_object():
    errors = errors_of(choice(), "rating")
    assert where(errors) == [("#1", "")]


def test_parse_schema_raises_schema_error_with_all_errors():
    with pytest.raises(SchemaError) as caught:
        parse_schema(definition(choice(key="Bad"), rating(scale=1)))
    assert isinstance(caught.value, ValueError)
    assert where(caught.value.errors) == [("#0", "key"), ("score", "scale")]
    assert "scale" in str(caught.value)


def test_all_problems_are_reported_at_once_naming_question_and_field():
    errors = errors_of(
        choice(title="", options=[{"value": "a", "label": "A", "hotkey": "x"}]),
        rating(scale=11, colour="red"),
        text(key="Note", max_length=0),
        span(scope="assistant_turn"),
    )
    assert where(errors) == [
        ("answer", "title"),
        ("answer", "options"),
        ("score", "colour"),
        ("score", "scale"),
        ("#2", "key"),
        ("#2", "max_length"),
        ("marks", "scope"),
    ]


# ---------------------------------------------------------------------------
# Parsing: common question fields


@pytest.mark.parametrize("key", ["Fluency", "1abc", "a-b", "", "a" * 51, "ok\n", "_a", "ünï"])
def test_it_rejects_keys_not_matching_the_pattern(key):
    errors = errors_of(choice(key=key))
    assert where(errors) == [("#0", "key")]


def test_it_accepts_the_longest_allowed_key():
    assert errors_of(choice(key="a" + "b_9" * 16 + "c")) == []


def test_it_rejects_a_missing_key():
    assert where(errors_of({"type": "text", "title": "T"})) == [("#0", "key")]


def test_it_rejects_duplicate_keys():
    errors = errors_of(choice(key="same"), text(key="same"))
    assert where(errors) == [("same", "key")]
    assert "#0" in errors[0]["message"]


def test_it_rejects_an_unknown_type():
    errors = errors_of({"key": "a", "type": "slider", "title": "T"})
    assert where(errors) == [("a", "type")]
    assert "choice, multi_choice, rating, text, span, preference" in errors[0]["message"]


def test_it_rejects_a_missing_type():
    assert where(errors_of({"key": "a", "title": "T"})) == [("a", "type")]


def test_it_rejects_unknown_fields_as_typos():
    errors = errors_of(choice(requierd=True))
    assert errors == [
        {"question": "answer", "field": "requierd", "message": "Unknown field 'requierd'."}
    ]


def test_it_rejects_fields_that_belong_to_another_type():
    errors = errors_of(choice(scale=5))
    assert where(errors) == [("answer", "scale")]
    assert "does not apply to choice" in errors[0]["message"]


@pytest.mark.parametrize(
    "question, field",
    [
        (choice(title=5), "title"),
        (choice(title=None), "title"),
        (choice(help=["x"]), "help"),
        (choice(required="yes"), "required"),
        (choice(required=1), "required"),
        (choice(scope=3), "scope"),
        (choice(options="yes,no"), "options"),
        (
            choice(options=[{"value": 1, "label": "A"}, {"value": "b", "label": "B"}]),
            "options[0].value",
        ),
        (
            choice(options=[{"value": "a", "label": None}, {"value": "b", "label": "B"}]),
            "options[0].label",
        ),
        (
            choice(
                options=[{"value": "a", "label": "A", "hotkey": 1}, {"value": "b", "label": "B"}]
            ),
            "options[0].hotkey",
        ),
        (
            choice(options=[{"value": "a", "label": "A", "help": 2}, {"value": "b", "label": "B"}]),
            "options[0].help",
        ),
        (choice(options=["a", "b"]), "options[0]"),
        (multi(exclusive="none"), "exclusive"),
        (multi(exclusive=[1]), "exclusive[0]"),
        (rating(scale=True), "scale"),
        (rating(scale=5.0), "scale"),
        (rating(scale="5"), "scale"),
        (rating(anchors=[[1, "Bad"]]), "anchors"),
        (rating(anchors={"1": 1}), "anchors.1"),
        (text(max_length="10"), "max_length"),
        (text(max_length=False), "max_length"),
        (text(multiline=0), "multiline"),
        (text(placeholder=1), "placeholder"),
        (span(labels={"a": "b"}), "labels"),
        (span(mask_in_export="no"), "mask_in_export"),
        (span(roles="user"), "roles"),
        (span(roles=[1]), "roles[0]"),
        (preference(allow_tie=None), "allow_tie"),
        (preference(strength=2.0), "strength"),
        (preference(strength_labels="x"), "strength_labels"),
        (preference(strength=1, strength_labels=[3]), "strength_labels[0]"),
        (choice(key="later", show_if="answer"), "show_if"),
    ],
)
def test_it_rejects_values_of_the_wrong_json_type(question, field):
    errors = errors_of(question)
    assert field in [e["field"] for e in errors], where(errors)
    assert all(e["question"] in (question.get("key"),) for e in errors)


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_it_rejects_empty_or_long_titles(title):
    assert where(errors_of(choice(title=title))) == [("answer", "title")]


def test_it_rejects_a_long_help_text():
    assert errors_of(choice(help="x" * 2000)) == []
    assert where(errors_of(choice(help="x" * 2001))) == [("answer", "help")]


def test_it_rejects_nul_characters_in_strings():
    assert where(errors_of(choice(title="a\x00b"))) == [("answer", "title")]


def test_it_rejects_an_unknown_scope():
    errors = errors_of(choice(scope="message"))
    assert where(errors) == [("answer", "scope")]
    assert "conversation or assistant_turn" in errors[0]["message"]


@pytest.mark.parametrize(
    "question", [span(scope="assistant_turn"), preference(scope="assistant_turn")]
)
def test_span_and_preference_can_only_be_conversation_scoped(question):
    errors = errors_of(question)
    assert where(errors) == [(question["key"], "scope")]
    assert "conversation" in errors[0]["message"]


@pytest.mark.parametrize("question", [choice(), multi(), rating(), text()])
def test_other_types_can_be_asked_per_assistant_turn(question):
    question["scope"] = "assistant_turn"
    assert errors_of(question) == []


# ---------------------------------------------------------------------------
# Parsing: options and labels


def options(count):
    return [{"value": f"v{i}", "label": f"Option {i}"} for i in range(count)]


def test_it_rejects_fewer_than_two_options():
    errors = errors_of(choice(options=options(1)))
    assert where(errors) == [("answer", "options")]
    assert errors_of(choice(options=options(2))) == []


def test_it_rejects_more_than_fifty_options():
    assert errors_of(multi(options=options(50), exclusive=[])) == []
    assert where(errors_of(multi(options=options(51), exclusive=[]))) == [("tags", "options")]


def test_it_rejects_a_missing_options_list():
    question = choice()
    del question["options"]
    assert where(errors_of(question)) == [("answer", "options")]


@pytest.mark.parametrize("value", ["", "has space", "a/b", "x" * 65, "é"])
def test_it_rejects_bad_option_values(value):
    question = choice(options=[{"value": value, "label": "A"}, {"value": "b", "label": "B"}])
    assert where(errors_of(question)) == [("answer", "options[0].value")]


def test_it_accepts_option_values_with_allowed_punctuation():
    question = choice(options=[{"value": "a.b:c-d_E9", "label": "A"}, {"value": "b", "label": "B"}])
    assert errors_of(question) == []


def test_it_rejects_duplicate_option_values():
    question = choice(
        options=[
            {"value": "a", "label": "A"},
            {"value": "b", "label": "B"},
            {"value": "a", "label": "Again"},
        ]
    )
    errors = errors_of(question)
    assert where(errors) == [("answer", "options[2].value")]
    assert errors[0]["message"] == "Value 'a' is used twice in this question."


def test_it_rejects_duplicate_hotkeys_ignoring_case():
    question = choice(
        options=[
            {"value": "a", "label": "A", "hotkey": "a"},
            {"value": "b", "label": "B", "hotkey": "b"},
            {"value": "c", "label": "C", "hotkey": "A"},
        ]
    )
    errors = errors_of(question)
    assert errors == [
        {
            "question": "answer",
            "field": "options[2].hotkey",
            "message": "Hotkey 'A' is used twice in this question.",
        }
    ]


def test_same_hotkey_may_be_used_in_different_questions():
    first = choice(key="one", options=[{"value": "a", "label": "A", "hotkey": "a"}] + options(1))
    second = choice(key="two", options=[{"value": "a", "label": "A", "hotkey": "a"}] + options(1))
    assert errors_of(first, second) == []


@pytest.mark.parametrize("hotkey", ["s", "S", "?"])
def test_it_rejects_reserved_hotkeys(hotkey):
    question = choice(options=[{"value": "a", "label": "A", "hotkey": hotkey}, *options(1)])
    errors = errors_of(question)
    assert where(errors) == [("answer", "options[0].hotkey")]
    assert "reserved" in errors[0]["message"]


@pytest.mark.parametrize("hotkey", [" ", "\t", "\n", "ab", ""])
def test_it_rejects_hotkeys_that_are_not_one_visible_character(hotkey):
    question = choice(options=[{"value": "a", "label": "A", "hotkey": hotkey}, *options(1)])
    assert where(errors_of(question)) == [("answer", "options[0].hotkey")]


def test_it_rejects_unknown_option_fields_and_long_option_help():
    question = choice(
        options=[
            {"value": "a", "label": "A", "colour": "red"},
            {"value": "b", "label": "B", "help": "x" * 501},
        ]
    )
    assert where(errors_of(question)) == [
        ("answer", "options[0].colour"),
        ("answer", "options[1].help"),
    ]


def test_it_rejects_exclusive_values_that_are_not_options_or_repeated():
    errors = errors_of(multi(exclusive=["none", "nothing", "none"]))
    assert where(errors) == [("tags", "exclusive[1]"), ("tags", "exclusive[2]")]


# ---------------------------------------------------------------------------
# Parsing: rating, text, span, preference


@pytest.mark.parametrize("scale", [0, 1, 11, -3])
def test_it_rejects_rating_scales_out_of_bounds(scale):
    assert where(errors_of(rating(scale=scale))) == [("score", "scale")]


@pytest.mark.parametrize("scale", [2, 10])
def test_it_accepts_rating_scale_bounds(scale):
    assert errors_of(rating(scale=scale)) == []


def test_it_requires_a_rating_scale():
    question = rating()
    del question["scale"]
    assert where(errors_of(question)) == [("score", "scale")]


@pytest.mark.parametrize("point", ["0", "6", "-1", 7])
def test_it_rejects_anchors_outside_the_scale(point):
    errors = errors_of(rating(anchors={point: "Label"}))
    assert where(errors) == [("score", f"anchors.{point}")]
    assert "1 to 5" in errors[0]["message"]


@pytest.mark.parametrize("point", ["one", "1.5", "", " 1"])
def test_it_rejects_anchor_points_that_are_not_numbers(point):
    assert where(errors_of(rating(anchors={point: "Label"}))) == [("score", f"anchors.{point}")]


def test_it_rejects_empty_or_long_anchor_labels_and_repeated_points():
    errors = errors_of(rating(anchors={"1": "", "2": "x" * 201, 3: "a", "3": "b"}))
    assert where(errors) == [("score", "anchors.1"), ("score", "anchors.2"), ("score", "anchors.3")]


@pytest.mark.parametrize("max_length", [0, 10001, -5])
def test_it_rejects_text_max_length_out_of_bounds(max_length):
    assert where(errors_of(text(max_length=max_length))) == [("note", "max_length")]


def test_it_rejects_long_placeholders():
    assert where(errors_of(text(placeholder="x" * 201))) == [("note", "placeholder")]


def test_it_rejects_span_label_counts_out_of_bounds():
    assert where(errors_of(span(labels=[]))) == [("marks", "labels")]
    assert errors_of(span(labels=options(20))) == []
    assert where(errors_of(span(labels=options(21)))) == [("marks", "labels")]


def test_span_labels_follow_option_rules():
    labels = [
        {"value": "a", "label": "A", "hotkey": "x"},
        {"value": "a", "label": "B", "hotkey": "X"},
        {"value": "c", "label": "C", "hotkey": "?"},
    ]
    assert where(errors_of(span(labels=labels))) == [
        ("marks", "labels[1].value"),
        ("marks", "labels[1].hotkey"),
        ("marks", "labels[2].hotkey"),
    ]


def test_it_rejects_unknown_empty_or_repeated_span_roles():
    assert where(errors_of(span(roles=["user", "bot"]))) == [("marks", "roles[1]")]
    assert where(errors_of(span(roles=[]))) == [("marks", "roles")]
    assert where(errors_of(span(roles=["user", "user"]))) == [("marks", "roles[1]")]


@pytest.mark.parametrize("strength", [-1, 6])
def test_it_rejects_preference_strength_out_of_bounds(strength):
    assert where(errors_of(preference(strength=strength))) == [("preferred", "strength")]


@pytest.mark.parametrize("strength", [0, 5])
def test_it_accepts_preference_strength_bounds(strength):
    assert errors_of(preference(strength=strength)) == []


def test_it_rejects_strength_labels_of_the_wrong_length():
    errors = errors_of(preference(strength=2, strength_labels=["a", "b", "c"]))
    assert where(errors) == [("preferred", "strength_labels")]
    assert "exactly 2" in errors[0]["message"]
    assert where(errors_of(preference(strength_labels=["a", "b"]))) == [
        ("preferred", "strength_labels")
    ]


def test_it_accepts_custom_strength_labels():
    schema = schema_of(preference(strength=2, strength_labels=["a bit", "a lot"]))
    assert schema.question("preferred").strength_labels == ("a bit", "a lot")


# ---------------------------------------------------------------------------
# Parsing: show_if


def test_it_rejects_show_if_referring_to_a_later_question():
    errors = errors_of(text(show_if={"question": "answer", "equals": "yes"}), choice())
    assert where(errors) == [("note", "show_if.question")]
    assert "earlier" in errors[0]["message"]


def test_it_rejects_show_if_referring_to_an_unknown_question():
    errors = errors_of(text(show_if={"question": "ghost", "equals": "yes"}))
    assert errors == [
        {
            "question": "note",
            "field": "show_if.question",
            "message": "There is no question 'ghost'.",
        }
    ]


def test_it_rejects_show_if_referring_to_itself():
    errors = errors_of(choice(show_if={"question": "answer", "equals": "yes"}))
    assert where(errors) == [("answer", "show_if.question")]


@pytest.mark.parametrize("target", [text(key="ref"), span(key="ref"), preference(key="ref")])
def test_it_rejects_show_if_referring_to_a_question_without_fixed_values(target):
    errors = errors_of(target, choice(show_if={"question": "ref", "equals": "x"}))
    assert where(errors) == [("answer", "show_if.question")]


@pytest.mark.parametrize("equals", ["maybe", 1, None, ["yes"]])
def test_it_rejects_show_if_values_that_are_not_options(equals):
    errors = errors_of(choice(), text(show_if={"question": "answer", "equals": equals}))
    assert where(errors) == [("note", "show_if.equals")]
    assert "yes, no" in errors[0]["message"]


@pytest.mark.parametrize("equals", [0, 6, "3", True, 2.0])
def test_it_rejects_show_if_values_off_the_rating_scale(equals):
    errors = errors_of(rating(), text(show_if={"question": "score", "equals": equals}))
    assert where(errors) == [("note", "show_if.equals")]


def test_it_accepts_show_if_on_a_multi_choice_option():
    assert errors_of(multi(), text(show_if={"question": "tags", "equals": "red"})) == []


def test_it_rejects_incomplete_or_padded_show_if():
    errors = errors_of(choice(), text(show_if={"question": "answer", "when": "yes"}))
    assert where(errors) == [("note", "show_if.when"), ("note", "show_if.equals")]


def test_a_conversation_question_cannot_depend_on_a_per_turn_question():
    errors = errors_of(
        choice(scope="assistant_turn"), text(show_if={"question": "answer", "equals": "no"})
    )
    assert where(errors) == [("note", "show_if.question")]


def test_a_per_turn_question_may_depend_on_either_scope():
    assert (
        errors_of(
            choice(),
            rating(scope="assistant_turn", show_if={"question": "answer", "equals": "yes"}),
            text(scope="assistant_turn", show_if={"question": "score", "equals": 1}),
        )
        == []
    )


def test_show_if_to_a_broken_question_reports_only_that_question():
    errors = errors_of(choice(title=""), text(show_if={"question": "answer", "equals": "yes"}))
    assert where(errors) == [("answer", "title")]


def test_show_if_may_be_null():
    assert schema_of(choice(show_if=None)).question("answer").show_if is None


# ---------------------------------------------------------------------------
# Answers: general rules


def test_it_rejects_answers_that_are_not_an_object():
    errors = answer_errors(schema_of(text()), ["note"])
    assert errors == [{"field": "", "message": "Answers must be an object keyed by question key."}]


def test_it_rejects_unknown_questions():
    errors = answer_errors(schema_of(text()), {"x": 1})
    assert errors == [{"field": "x", "message": "Unknown question 'x'."}]


def test_required_questions_must_be_answered():
    schema = schema_of(choice(), text(required=True))
    errors = answer_errors(schema, {"answer": None})
    assert errors == [
        {"field": "answer", "message": "This question is required."},
        {"field": "note", "message": "This question is required."},
    ]


def test_optional_questions_may_be_missing_or_null():
    schema = schema_of(choice(required=False), text())
    assert clean(schema, {}) == {}
    assert clean(schema, {"answer": None, "note": None}) == {}


def test_all_answer_problems_are_reported_at_once():
    schema = parse_schema(template("llm_response_review"))
    errors = answer_errors(schema, {"truthfulness": "maybe", "fluency": 9, "extra": 1})
    fields = [e["field"] for e in errors]
    assert fields[:3] == ["extra", "truthfulness", "bias"]
    assert set(fields) >= {"fluency", "readability", "relevance"}


def test_answer_error_is_a_value_error_with_a_readable_message():
    with pytest.raises(ValueError, match="truthfulness"):
        validate_answers(
            parse_schema(template("llm_response_review")), {"truthfulness": 1}, turns=TURNS
        )


def test_a_full_review_is_cleaned():
    schema = parse_schema(template("llm_response_review"))
    answers = {
        "truthfulness": "partly_true",
        "bias": ["gender", "age"],
        **dict.fromkeys(["fluency", "readability", "grammar", "cohesion", "logic", "relevance"], 4),
        "harmful": [{"message": "u2", "start": 12, "end": 15, "label": "personal_data"}],
        "comment": "  Mostly fine.\n",
    }
    cleaned = clean(schema, answers)
    assert cleaned["comment"] == "Mostly fine."
    assert cleaned["harmful"] == [
        {"message": "u2", "start": 12, "end": 15, "label": "personal_data", "text": "Ann"}
    ]
    assert cleaned["bias"] == ["gender", "age"]


# ---------------------------------------------------------------------------
# Answers: choice, multi_choice, rating, text


def test_choice_accepts_an_option_value():
    assert clean(schema_of(choice()), {"answer": "no"}) == {"answer": "no"}


def test_choice_rejects_other_values_naming_the_options():
    schema = parse_schema(template("llm_response_review"))
    errors = answer_errors(schema, {"truthfulness": "maybe"})
    assert errors[0] == {
        "field": "truthfulness",
        "message": "'maybe' is not an option; choose one of: true, false, partly_true, cant_tell.",
    }


@pytest.mark.parametrize("value", [True, 1, ["yes"], {"value": "yes"}, "Yes"])
def test_choice_rejects_values_of_the_wrong_type(value):
    assert answer_fields(schema_of(choice()), {"answer": value}) == ["answer"]


def test_multi_choice_cleans_to_schema_order():
    assert clean(schema_of(multi()), {"tags": ["blue", "red"]}) == {"tags": ["red", "blue"]}


def test_multi_choice_rejects_unknown_and_repeated_values():
    errors = answer_errors(schema_of(multi()), {"tags": ["red", "pink", "red"]})
    assert [e["field"] for e in errors] == ["tags[1]", "tags[2]"]
    assert "none, red, blue" in errors[0]["message"]


def test_multi_choice_rejects_combining_an_exclusive_value():
    errors = answer_errors(schema_of(multi()), {"tags": ["red", "none"]})
    assert errors == [{"field": "tags", "message": "'none' cannot be combined with other options."}]
    assert clean(schema_of(multi()), {"tags": ["none"]}) == {"tags": ["none"]}


def test_required_multi_choice_needs_a_selection():
    assert answer_errors(schema_of(multi(required=True)), {"tags": []}) == [
        {"field": "tags", "message": "Choose at least one option."}
    ]
    assert clean(schema_of(multi()), {"tags": []}) == {"tags": []}


@pytest.mark.parametrize("value", ["red", {"red": True}, [1], ["red"] * 4])
def test_multi_choice_rejects_malformed_values(value):
    fields = answer_fields(schema_of(multi()), {"tags": value})
    assert fields and all(f.startswith("tags") for f in fields)


@pytest.mark.parametrize("value", [1, 5])
def test_rating_accepts_points_on_the_scale(value):
    assert clean(schema_of(rating()), {"score": value}) == {"score": value}


@pytest.mark.parametrize("value", [0, 6, True, 3.0, "3", -1])
def test_rating_rejects_values_off_the_scale_or_not_integers(value):
    errors = answer_errors(schema_of(rating()), {"score": value})
    assert errors == [{"field": "score", "message": "Expected a whole number from 1 to 5."}]


def test_text_is_stripped():
    assert clean(schema_of(text()), {"note": "  hello \n"}) == {"note": "hello"}


def test_empty_optional_text_is_dropped():
    assert clean(schema_of(text()), {"note": "   "}) == {}


def test_required_text_must_not_be_blank():
    assert answer_errors(schema_of(text(required=True)), {"note": " \n "}) == [
        {"field": "note", "message": "This question is required."}
    ]


def test_text_must_fit_max_length():
    schema = schema_of(text(max_length=5))
    assert clean(schema, {"note": " abcde "}) == {"note": "abcde"}
    assert answer_fields(schema, {"note": "abcdef"}) == ["note"]


@pytest.mark.parametrize("value", [5, ["a"], {"text": "a"}, True, "a\x00b"])
def test_text_rejects_non_strings_and_nul(value):
    assert answer_fields(schema_of(text()), {"note": value}) == ["note"]


# ---------------------------------------------------------------------------
# Answers: per-turn scope


def per_turn_schema(**extra):
    return schema_of(rating(key="fluency", scope="assistant_turn", **extra))


def test_per_turn_answers_are_keyed_by_assistant_turn():
    assert clean(per_turn_schema(), {"fluency": {"a1": 4, "a2": 5}}) == {
        "fluency": {"a1": 4, "a2": 5}
    }


def test_per_turn_required_reports_each_missing_turn():
    assert answer_errors(per_turn_schema(), {"fluency": {"a1": 4}}) == [
        {"field": "fluency.a2", "message": "This question is required."}
    ]
    assert answer_fields(per_turn_schema(), {}) == ["fluency.a1", "fluency.a2"]


def test_per_turn_rejects_unknown_and_non_assistant_turn_ids():
    fields = answer_fields(per_turn_schema(), {"fluency": {"a1": 4, "a2": 5, "u1": 3, "zz": 1}})
    assert fields == ["fluency.u1", "fluency.zz"]


def test_per_turn_errors_name_the_turn():
    errors = answer_errors(per_turn_schema(), {"fluency": {"a1": 4, "a2": 9}})
    assert errors == [{"field": "fluency.a2", "message": "Expected a whole number from 1 to 5."}]


def test_per_turn_rejects_a_value_that_is_not_an_object():
    assert answer_fields(per_turn_schema(), {"fluency": 4}) == ["fluency"]


def test_optional_per_turn_question_may_skip_turns():
    schema = per_turn_schema(required=False)
    assert clean(schema, {"fluency": {"a2": 3}}) == {"fluency": {"a2": 3}}
    assert clean(schema, {"fluency": {}}) == {}


def test_per_turn_questions_apply_to_candidate_turns_too():
    turns = [*TURNS, Turn("a", "assistant", "Reply A"), Turn("b", "assistant", "Reply B")]
    cleaned = clean(per_turn_schema(), {"fluency": dict(a1=1, a2=2, a=3, b=4)}, turns=turns)
    assert cleaned == {"fluency": {"a1": 1, "a2": 2, "a": 3, "b": 4}}


def test_per_turn_question_without_assistant_turns_has_nothing_to_answer():
    assert clean(per_turn_schema(), {}, turns=[Turn("u1", "user", "hi")]) == {}


# ---------------------------------------------------------------------------
# Answers: spans


def mark(message="a1", start=0, end=5, label="pii", **extra):
    return {"message": message, "start": start, "end": end, "label": label, **extra}


def test_span_is_cleaned_with_its_text():
    cleaned = clean(schema_of(span()), {"marks": [mark(text="Paris")]})
    assert cleaned == {"marks": [mark(text="Paris")]}


def test_span_offsets_count_code_points():
    # "Thanks, I'm Ann. 🙂 Bye": the emoji is one code point at index 17.
    cleaned = clean(schema_of(span()), {"marks": [mark("u2", 17, 22, text="🙂 Bye")]})
    assert cleaned["marks"][0]["text"] == "🙂 Bye"


def test_span_text_must_match_the_offsets():
    errors = answer_errors(schema_of(span()), {"marks": [mark(text="Pari")]})
    assert errors == [
        {"field": "marks[0].text", "message": "Does not match the message text at these offsets."}
    ]


@pytest.mark.parametrize(
    "start, end, field",
    [
        (-1, 3, "marks[0].start"),
        (3, 3, "marks[0].end"),
        (4, 2, "marks[0].end"),
        (0, 22, "marks[0].end"),
    ],
)
def test_span_offsets_must_lie_inside_the_message(start, end, field):
    assert answer_fields(schema_of(span()), {"marks": [mark(start=start, end=end)]}) == [field]


def test_span_may_end_at_the_end_of_the_message():
    assert clean(schema_of(span()), {"marks": [mark(start=0, end=21)]})["marks"][0]["end"] == 21


@pytest.mark.parametrize("start, end", [(True, 3), (0, 2.0), ("0", 3)])
def test_span_offsets_must_be_integers(start, end):
    assert answer_fields(schema_of(span()), {"marks": [mark(start=start, end=end)]})


def test_span_must_name_a_message_of_the_item():
    errors = answer_errors(schema_of(span()), {"marks": [mark("zz")]})
    assert [e["field"] for e in errors] == ["marks[0].message"]


def test_span_role_must_be_allowed():
    errors = answer_errors(schema_of(span()), {"marks": [mark("s0", 0, 2)]})
    assert [e["field"] for e in errors] == ["marks[0].message"]
    assert "system" in errors[0]["message"]
    assert clean(schema_of(span(roles=["system"])), {"marks": [mark("s0", 0, 2)]})


def test_span_label_must_be_one_of_the_labels():
    errors = answer_errors(schema_of(span()), {"marks": [mark(label="rude")]})
    assert errors[0]["field"] == "marks[0].label"
    assert "pii, harm" in errors[0]["message"]


def test_span_rejects_missing_and_unknown_fields():
    fields = answer_fields(schema_of(span()), {"marks": [{"message": "a1", "colour": "red"}]})
    assert fields == ["marks[0].colour", "marks[0].start", "marks[0].end", "marks[0].label"]


def test_spans_are_sorted_by_message_order_then_offsets():
    given = [
        mark("a2", 3, 6),
        mark("u1", 8, 10),
        mark("a1", 6, 9),
        mark("a1", 0, 5),
        mark("a1", 0, 3),
    ]
    cleaned = clean(schema_of(span()), {"marks": given})["marks"]
    assert [(s["message"], s["start"], s["end"]) for s in cleaned] == [
        ("u1", 8, 10),
        ("a1", 0, 3),
        ("a1", 0, 5),
        ("a1", 6, 9),
        ("a2", 3, 6),
    ]


def test_exact_duplicate_spans_are_rejected():
    errors = answer_errors(schema_of(span()), {"marks": [mark(), mark(text="Paris")]})
    assert errors == [{"field": "marks[1]", "message": "This span is listed twice."}]


def test_same_range_with_two_labels_is_allowed():
    cleaned = clean(schema_of(span()), {"marks": [mark(label="harm"), mark(label="pii")]})
    assert [s["label"] for s in cleaned["marks"]] == ["pii", "harm"]


def test_required_span_question_needs_a_span():
    assert answer_fields(schema_of(span(required=True)), {"marks": []}) == ["marks"]
    assert clean(schema_of(span()), {"marks": []}) == {"marks": []}


def test_at_most_two_hundred_spans():
    many = [mark(start=0, end=i) for i in range(1, 21)] * 10
    assert answer_fields(schema_of(span()), {"marks": many + [mark()]}) == ["marks"]


@pytest.mark.parametrize("value", ["a1:0-5", {"message": "a1"}, [["a1", 0, 5]]])
def test_span_answers_must_be_lists_of_objects(value):
    assert answer_fields(schema_of(span()), {"marks": value})


# ---------------------------------------------------------------------------
# Answers: preference


def test_preference_without_candidates_cannot_be_answered():
    errors = answer_errors(schema_of(preference()), {"preferred": {"choice": "A", "strength": 1}})
    assert errors == [
        {"field": "preferred", "message": "This item has no candidate replies to compare."}
    ]


def test_required_preference_is_not_asked_without_candidates():
    assert clean(schema_of(preference()), {}) == {}


def test_required_preference_is_asked_with_candidates():
    assert answer_fields(schema_of(preference()), {}, has_candidates=True) == ["preferred"]


def test_preference_with_strength_is_cleaned():
    cleaned = clean(
        schema_of(preference()), {"preferred": {"choice": "B", "strength": 3}}, has_candidates=True
    )
    assert cleaned == {"preferred": {"choice": "B", "strength": 3}}


def test_tie_is_cleaned_without_strength():
    for answer in ({"choice": "tie"}, {"choice": "tie", "strength": None}):
        cleaned = clean(schema_of(preference()), {"preferred": answer}, has_candidates=True)
        assert cleaned == {"preferred": {"choice": "tie"}}


def test_tie_must_not_carry_a_strength():
    fields = answer_fields(
        schema_of(preference()),
        {"preferred": {"choice": "tie", "strength": 2}},
        has_candidates=True,
    )
    assert fields == ["preferred.strength"]


def test_tie_is_rejected_when_not_allowed():
    errors = answer_errors(
        schema_of(preference(allow_tie=False)),
        {"preferred": {"choice": "tie"}},
        has_candidates=True,
    )
    assert errors == [
        {"field": "preferred.choice", "message": "A tie is not allowed here; choose A or B."}
    ]


def test_strength_is_required_for_a_winner():
    fields = answer_fields(
        schema_of(preference()), {"preferred": {"choice": "A"}}, has_candidates=True
    )
    assert fields == ["preferred.strength"]


@pytest.mark.parametrize("strength", [0, 4, True, 2.0, "2"])
def test_strength_must_be_within_the_levels(strength):
    fields = answer_fields(
        schema_of(preference()),
        {"preferred": {"choice": "A", "strength": strength}},
        has_candidates=True,
    )
    assert fields == ["preferred.strength"]


def test_no_strength_is_asked_when_strength_is_zero():
    schema = schema_of(preference(strength=0))
    assert clean(schema, {"preferred": {"choice": "A"}}, has_candidates=True) == {
        "preferred": {"choice": "A"}
    }
    fields = answer_fields(
        schema, {"preferred": {"choice": "A", "strength": 1}}, has_candidates=True
    )
    assert fields == ["preferred.strength"]


@pytest.mark.parametrize(
    "value, fields",
    [
        ("A", ["preferred"]),
        ({"choice": "a", "strength": 1}, ["preferred.choice"]),
        ({"choice": "C"}, ["preferred.choice"]),
        ({}, ["preferred.choice"]),
        ({"choice": "A", "strength": 1, "why": "x"}, ["preferred.why"]),
    ],
)
def test_preference_rejects_malformed_answers(value, fields):
    assert (
        answer_fields(schema_of(preference()), {"preferred": value}, has_candidates=True) == fields
    )


# ---------------------------------------------------------------------------
# Answers: show_if


def conditional_schema():
    return schema_of(
        choice(),
        text(required=True, show_if={"question": "answer", "equals": "no"}),
    )


def test_hidden_question_answers_are_dropped_silently():
    assert clean(conditional_schema(), {"answer": "yes", "note": "stale"}) == {"answer": "yes"}
    assert clean(conditional_schema(), {"answer": "yes", "note": 42}) == {"answer": "yes"}


def test_hidden_required_question_need_not_be_answered():
    assert clean(conditional_schema(), {"answer": "yes"}) == {"answer": "yes"}


def test_shown_required_question_must_be_answered():
    assert answer_fields(conditional_schema(), {"answer": "no"}) == ["note"]
    assert clean(conditional_schema(), {"answer": "no", "note": "why"}) == {
        "answer": "no",
        "note": "why",
    }


def test_question_depending_on_an_invalid_answer_stays_hidden():
    assert answer_fields(conditional_schema(), {"answer": "nah", "note": 5}) == ["answer"]


def test_show_if_on_multi_choice_checks_membership():
    schema = schema_of(multi(), text(required=True, show_if={"question": "tags", "equals": "red"}))
    assert answer_fields(schema, {"tags": ["blue", "red"]}) == ["note"]
    assert clean(schema, {"tags": ["blue"], "note": "x"}) == {"tags": ["blue"]}


def test_show_if_on_rating_compares_the_point():
    schema = schema_of(rating(), text(required=True, show_if={"question": "score", "equals": 1}))
    assert answer_fields(schema, {"score": 1}) == ["note"]
    assert clean(schema, {"score": 2}) == {"score": 2}


def test_hidden_questions_hide_their_dependants():
    schema = schema_of(
        choice(),
        rating(show_if={"question": "answer", "equals": "no"}),
        text(required=True, show_if={"question": "score", "equals": 1}),
    )
    assert clean(schema, {"answer": "yes", "score": 1, "note": "x"}) == {"answer": "yes"}


def test_per_turn_dependency_is_evaluated_per_turn():
    schema = schema_of(
        choice(key="ok", scope="assistant_turn"),
        text(
            key="why",
            scope="assistant_turn",
            required=True,
            show_if={"question": "ok", "equals": "no"},
        ),
    )
    answers = {"ok": {"a1": "yes", "a2": "no"}, "why": {"a1": "stale", "a2": " wrong "}}
    assert clean(schema, answers) == {"ok": {"a1": "yes", "a2": "no"}, "why": {"a2": "wrong"}}
    assert answer_fields(schema, {"ok": {"a1": "no", "a2": "no"}, "why": {"a2": "x"}}) == ["why.a1"]


def test_per_turn_question_depending_on_a_conversation_answer_is_shown_or_hidden_once():
    schema = schema_of(
        choice(),
        rating(
            key="fluency", scope="assistant_turn", show_if={"question": "answer", "equals": "yes"}
        ),
    )
    assert clean(schema, {"answer": "no", "fluency": {"zz": 1}}) == {"answer": "no"}
    assert answer_fields(schema, {"answer": "yes", "fluency": {"a1": 2}}) == ["fluency.a2"]


# ---------------------------------------------------------------------------
# Properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

QUESTION_FIELD_NAMES = sorted(
    {"key", "type", "title", "help", "required", "scope", "show_if", "options", "exclusive"}
    | {"scale", "anchors", "max_length", "multiline", "placeholder", "labels"}
    | {"mask_in_export", "roles", "allow_tie", "strength", "strength_labels"}
)
question_like = st.dictionaries(
    st.sampled_from(QUESTION_FIELD_NAMES),
    json_values
    | st.sampled_from(["choice", "multi_choice", "rating", "text", "span", "preference", "a"]),
    max_size=8,
)
definition_like = json_values | st.fixed_dictionaries(
    {"questions": st.lists(question_like | json_values, max_size=4)}
)

REVIEW = parse_schema(template("llm_response_review"))
REVIEW_KEYS = [q.key for q in REVIEW.questions]
answers_like = json_values | st.dictionaries(
    st.sampled_from(REVIEW_KEYS), json_values, max_size=len(REVIEW_KEYS)
)


@settings(max_examples=300, deadline=None)
@given(definition_like)
def test_schema_errors_never_raise_on_json_like_input(value):
    errors = schema_errors(value)
    assert isinstance(errors, list)
    assert all(set(e) == {"question", "field", "message"} for e in errors)
    if not errors:
        schema = parse_schema(value)
        assert parse_schema(schema.to_dict()) == schema


@settings(max_examples=300, deadline=None)
@given(answers_like, st.booleans())
def test_validate_answers_raises_only_answer_error_on_json_like_input(value, has_candidates):
    try:
        cleaned = validate_answers(REVIEW, value, turns=TURNS, has_candidates=has_candidates)
    except AnswerError as error:
        assert error.errors and all(set(e) == {"field", "message"} for e in error.errors)
    else:
        assert isinstance(cleaned, dict)
