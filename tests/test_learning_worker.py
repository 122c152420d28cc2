"""Active learning on a real worker: Redis, a Celery worker process and the suite's database.

Items are imported with the CLI, embedded by the worker, labelled over REST; a training run
then reorders the queue. A worker child killed mid-run hands the run back, and the retried run
finishes: exactly one succeeded run. Then labels alone start a run (training on submit).
"""

from __future__ import annotations

import json
import signal
import sqlite3

import psutil
import psycopg
import pytest
import redis as redis_client

from tests.support import (
    celery_worker,
    manage,
    program_env,
    redis_url,
    shell,
    throwaway_database,
    wait_until,
)

pytestmark = pytest.mark.slow

SETUP = """
from labelling.services.projects import project_create, project_update, schema_publish
from labelling.services.tokens import token_create
from django.contrib.auth import get_user_model
admin = get_user_model().objects.create_user("admin", is_staff=True, is_superuser=True)
project = project_create(slug="al", name="AL", created_by=admin)
project_update(project=project, overlap=1, retrain_every=0, gold_rate=0)
schema_publish(project=project, created_by=admin, definition={"questions": [
    {"key": "topic", "type": "choice", "title": "Topic", "options": [
        {"value": "food", "label": "Food"}, {"value": "code", "label": "Code"}]}]})
print(token_create(user=admin, project_slugs=["al"], name="t", can_write=True)[1])
"""
LABEL = """
from django.contrib.auth import get_user_model
from labelling.models import Project
from labelling.services.assignments import annotation_submit, assignment_next
project, admin = Project.objects.get(slug="al"), get_user_model().objects.get(username="admin")
for _ in range({n}):
    lease = assignment_next(project=project, rater=admin)
    text = lease.assignment.item.messages[1]["content"]
    topic = "food" if "pasta" in text else "code"
    annotation_submit(assignment=lease.assignment, answers={{"topic": topic}}, idempotency_key="k")
"""
RUNS = """
import json
from labelling.models import Item, TrainingRun
print(json.dumps({
    "runs": list(TrainingRun.objects.order_by("pk").values_list("status", flat=True)),
    "priorities": len(set(Item.objects.values_list("priority", flat=True))),
}))
"""
START_RUN = """
from labelling.models import Project
from labelling.services.training import training_run_request
from django.db import transaction
with transaction.atomic():
    print(training_run_request(project=Project.objects.get(slug="al")).pk)
"""

LABELS_RUN = """
from labelling.models import Project, TrainingRun
from labelling.services.projects import project_update
project = Project.objects.get(slug="al")
if {k}:
    project_update(project=project, retrain_every={k})
run = TrainingRun.objects.filter(trigger="labels").order_by("-pk").first()
print(run.status if run else "none")
"""


def last_run_status(database_url: str) -> str | None:
    """The newest run's status, read straight from the database: a run over 20k items takes
    a second or two, shorter than starting `manage.py shell` on a busy machine."""
    query = "SELECT status FROM labelling_trainingrun ORDER BY id DESC LIMIT 1"
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=5) as conn:
            row = conn.execute(query).fetchone()
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
    return row[0] if row else None


def write_items(path, count: int) -> None:
    food = "pasta pizza tomato basil olive oil garlic"
    code = "python function class import return loop"
    with path.open("w") as handle:
        for n in range(count):
            reply = f"{food if n % 2 else code} {n}"
            handle.write(json.dumps({"id": f"i{n}", "prompt": f"q {n}", "response": reply}) + "\n")


def test_a_worker_embeds_trains_reorders_and_survives_a_kill(tmp_path):
    broker = redis_url().rsplit("/", 1)[0] + "/9"  # this test's own db: it flushes it
    redis_client.Redis.from_url(broker).flushdb()
    with throwaway_database(tmp_path) as database_url:
        env = program_env(
            tmp_path, DATABASE_URL=database_url, REDIS_URL=broker, ANNOTATOR_ENCODER="hashing"
        )
        assert manage("migrate", "--noinput", env=env).returncode == 0
        shell(SETUP, env=env)
        items = tmp_path / "items.jsonl"
        write_items(items, 20_000)
        worker = celery_worker(env=env, queues="default,ml")
        try:
            imported = manage("import_items", "--project", "al", str(items), env=env, timeout=300)
            assert imported.returncode == 0, imported.stderr
            embedded = "from labelling.models import Embedding; print(Embedding.objects.count())"
            wait_until(lambda: shell(embedded, env=env) == "20000", timeout=180,
                       what="the worker to embed the import")  # fmt: skip
            shell(LABEL.format(n=60), env=env)

            # A first run: it succeeds and the queue gets an order.
            shell(START_RUN, env=env)
            wait_until(lambda: json.loads(shell(RUNS, env=env))["runs"] == ["succeeded"],
                       timeout=120, what="the first training run")  # fmt: skip
            assert json.loads(shell(RUNS, env=env))["priorities"] > 1000

            # A second run over new labels; kill the pool child that runs it.
            shell(LABEL.format(n=20), env=env)
            shell(START_RUN, env=env)
            wait_until(lambda: last_run_status(database_url) == "running",
                       timeout=60, interval=0.02, what="the second run to start")  # fmt: skip
            for child in psutil.Process(worker.pid).children(recursive=True):
                child.send_signal(signal.SIGKILL)
            wait_until(
                lambda: json.loads(shell(RUNS, env=env))["runs"] == ["succeeded", "succeeded"],
                timeout=180,
                what="the killed run to be retried and finish",
            )

            # Training on submit: once retrain_every is set, labels alone start a run (the
            # submit path asks the worker for a check every few annotations).
            assert shell(LABELS_RUN.format(k=10), env=env) == "none"
            shell(LABEL.format(n=20), env=env)
            wait_until(lambda: shell(LABELS_RUN.format(k=0), env=env) == "succeeded",
                       timeout=180, what="a run started by new labels")  # fmt: skip
        finally:
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=60)
    # The second run's job was lost with its process and delivered again, then succeeded.
    assert "WorkerLostError" in output, output[-3000:]
    assert "run 2 succeeded" in output, output[-3000:]
