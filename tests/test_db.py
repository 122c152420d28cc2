"""labelling.db: plain statements read back as the ORM reads them."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model

from labelling import db
from labelling.models import Item, Project
from labelling.services.projects import project_create

pytestmark = pytest.mark.django_db

User = get_user_model()

JOINED = (
    f"SELECT {db.columns(Item, 'i')}, {db.columns(Project, 'p')}, 41 + 1 "  # noqa: S608
    "FROM labelling_item i JOIN labelling_project p ON p.id = i.project_id WHERE i.id = %s"
)


@pytest.fixture
def item():
    owner = User.objects.create_user("owner")
    project = project_create(slug="p", name="P", created_by=owner, overlap=2)
    return Item.objects.create(
        project=project,
        external_id="x1",
        messages=[{"id": "t1", "role": "user", "content": "olá"}],
        metadata={"model": "a", "n": [1, 2]},
        gold={"q": "yes"},
    )


def test_rows_equal_what_the_orm_reads(item):
    found = db.first_row(JOINED, [item.pk], Item, Project, extras=["answer"])
    assert found is not None
    read, project = found
    expected = Item.objects.get(pk=item.pk)
    for field in Item._meta.concrete_fields:
        assert getattr(read, field.attname) == getattr(expected, field.attname), field.name
    assert isinstance(read.messages, list) and read.metadata == {"model": "a", "n": [1, 2]}
    assert isinstance(read.created_at, datetime.datetime) and read.created_at.tzinfo is not None
    assert project == Project.objects.get(slug="p") and project.overlap == 2
    assert read.answer == 42  # the extra column, on the first model's instance
    assert read._state.adding is False  # a saved row: save() updates it
    read.priority = 7.5
    read.save(update_fields=["priority"])
    assert Item.objects.get(pk=item.pk).priority == 7.5


def test_no_row_is_none_and_instances_lists_rows(item):
    one = f"SELECT {db.columns(Item)} FROM labelling_item WHERE id = %s"  # noqa: S608
    assert db.first(Item, one, [item.pk + 1000]) is None
    every = f"SELECT {db.columns(Project)} FROM labelling_project ORDER BY id"  # noqa: S608
    listed = db.instances(Project, every, [])
    assert [p.slug for p in listed] == ["p"]


def test_a_statement_of_another_shape_is_refused(item):
    with pytest.raises(ValueError, match="columns"):
        db.first(Item, "SELECT * FROM labelling_project", [])


def test_binary_rows_read_bytes_as_stored(item):
    from labelling.models import Embedding

    vector = bytes(range(256)) * 3  # every byte value, as a stored vector may hold
    Embedding.objects.create(item=item, encoder="e", text_hash="-", vector=vector)

    rows = db.binary_rows(
        "SELECT item_id, vector, encoder FROM labelling_embedding WHERE encoder = %s", ["e"]
    )

    assert [(pk, bytes(data), name) for pk, data, name in rows] == [(item.pk, vector, "e")]
