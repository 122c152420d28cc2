"""Management commands as an admin runs them: import_items and create_api_token."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from labelling.models import ApiToken, Item
from tests.conftest import chat

pytestmark = pytest.mark.django_db


def write_jsonl(path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_import_items_reads_a_file_with_a_progress_bar(project, tmp_path):
    file = write_jsonl(tmp_path / "items.jsonl", chat("a"), chat("b"))
    out, err = io.StringIO(), io.StringIO()

    call_command("import_items", file, project=project.slug, stdout=out, stderr=err)

    assert "Imported 2 new item(s) into review; skipped 0 already present." in out.getvalue()
    assert "Importing" in err.getvalue() and "100%" in err.getvalue()
    assert Item.objects.filter(project=project).count() == 2


def test_import_items_rerun_skips_what_is_there(project, tmp_path):
    file = write_jsonl(tmp_path / "items.jsonl", chat("a"), chat("b"))
    call_command("import_items", file, project=project.slug, no_progress=True, stdout=io.StringIO())
    out = io.StringIO()
    call_command("import_items", file, project=project.slug, no_progress=True, stdout=out)
    assert "Imported 0 new item(s) into review; skipped 2 already present." in out.getvalue()


def test_import_items_names_every_bad_line_and_writes_nothing(project, tmp_path):
    file = write_jsonl(tmp_path / "items.jsonl", chat("a"), {"id": "b"}, chat("c", consent="no"))
    err = io.StringIO()

    with pytest.raises(CommandError, match="Nothing was imported: 2 error"):
        call_command("import_items", file, project=project.slug, no_progress=True, stderr=err)

    assert "line 2, messages:" in err.getvalue()
    assert "line 3, consent:" in err.getvalue()
    assert Item.objects.filter(project=project).count() == 0


def test_import_items_takes_csv_by_its_name_and_refuses_unknown_names(project, tmp_path):
    csv_file = tmp_path / "items.csv"
    csv_file.write_text("id,prompt,response\n1,Hi,Hello\n")
    call_command("import_items", str(csv_file), project=project.slug, no_progress=True,
                 stdout=io.StringIO())  # fmt: skip
    assert Item.objects.filter(project=project, external_id="1").exists()
    other = tmp_path / "items.txt"
    other.write_text("x")
    with pytest.raises(CommandError, match="pass --format"):
        call_command("import_items", str(other), project=project.slug)


def test_import_items_refuses_an_unknown_project(tmp_path, db):
    file = write_jsonl(tmp_path / "items.jsonl", chat("a"))
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("import_items", file, project="nope")


def test_create_api_token_prints_the_key_once_and_stores_its_hash(owner, project):
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_token", "owner", projects=[project.slug], write=True, stdout=out,
                 stderr=err)  # fmt: skip

    key = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert key.startswith("ann_") and token.can_write
    assert key not in token.key_hash
    assert "not shown again" in err.getvalue()
