"""The two ways to run, end to end: `make run`'s steps on SQLite with the filesystem broker,
and a Celery worker on the real Redis (with PostgreSQL when the suite runs on it)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request

import psutil
import pytest

from tests.support import (
    ROOT,
    celery_worker,
    free_port,
    manage,
    program_env,
    redis_url,
    throwaway_database,
    wait_until,
)

pytestmark = pytest.mark.slow


PUBLISH_HEARTBEAT = "from labelling.tasks import worker_heartbeat; worker_heartbeat.delay()"
LAST_HEARTBEAT = (
    "from django.db.models import Max; from labelling.models import WorkerHeartbeat; "
    "print(WorkerHeartbeat.objects.aggregate(last=Max('seen_at'))['last'] or '')"
)


def browser_session(base: str):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def get(path: str) -> tuple[int, str]:
        with opener.open(base + path, timeout=10) as response:
            return response.status, response.read().decode()

    def login(username: str, password: str) -> tuple[int, str]:
        _, page = get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/"}
        ).encode()
        request = urllib.request.Request(base + "/accounts/login/", data=data)
        request.add_header("Referer", base + "/accounts/login/")
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()

    return get, login


def test_make_run_steps_serve_the_demo_with_a_worker_and_stop_on_ctrl_c(tmp_path):
    env = program_env(tmp_path)
    assert manage("migrate", "--noinput", env=env).returncode == 0
    first = manage("demo", env=env)
    again = manage("demo", env=env)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert "252 item(s) added" in first.stdout
    assert "0 item(s) added, 252 already there" in again.stdout
    assert "SIMULATED from the data sets' own labels" in first.stdout
    assert "Example history: already there" in again.stdout
    credentials = json.loads((tmp_path / "demo_credentials.json").read_text())
    assert set(credentials) == {"admin", "rater1", "rater2", "rater3"}
    assert all(password in again.stdout for password in credentials.values())

    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        get, login = browser_session(base)
        wait_until(lambda: get("/health/")[0] == 200, timeout=30, what="the web server")
        status, home = login("admin", credentials["admin"])
        assert status == 200
        assert "LLM response review" in home and "Harmlessness preference" in home
        status, items = get("/admin/labelling/item/?q=tqa")
        assert status == 200 and "tqa-judged" in items

        def heartbeat_seen() -> str | None:
            with sqlite3.connect(tmp_path / "annotator.sqlite3") as db:
                row = db.execute("SELECT max(seen_at) FROM labelling_workerheartbeat").fetchone()
                return row[0]

        started = wait_until(heartbeat_seen, timeout=60, what="the worker's start-up heartbeat")
        published = manage("shell", "-v", "0", "-c", PUBLISH_HEARTBEAT, env=env)
        assert published.returncode == 0, published.stderr
        wait_until(lambda: heartbeat_seen() > started, timeout=60, what="a queued task to run")
        children = psutil.Process(serve.pid).children(recursive=True)
        assert len(children) >= 2
    finally:
        serve.send_signal(signal.SIGINT)
        # A warm shutdown lets the worker finish its task: embedding the demo (or training on
        # its example history) takes tens of seconds on a busy 2-core machine.
        output, _ = serve.communicate(timeout=90)
    assert serve.returncode == 0, output
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running after Ctrl-C: {alive}"


def test_a_worker_on_redis_runs_tasks_published_by_the_web_side(tmp_path):
    broker = redis_url()
    with throwaway_database(tmp_path) as database_url:
        env = program_env(tmp_path, DATABASE_URL=database_url, REDIS_URL=broker)
        migrated = manage("migrate", "--noinput", env=env)
        assert migrated.returncode == 0, migrated.stderr
        queue = f"default-{free_port()}"
        worker = celery_worker(env=env, queues=queue)
        try:

            def last_heartbeat() -> str:
                return manage("shell", "-v", "0", "-c", LAST_HEARTBEAT, env=env).stdout.strip()

            started = wait_until(last_heartbeat, timeout=60, what="the worker's start-up heartbeat")
            published = manage(
                "shell",
                "-v",
                "0",
                "-c",
                "from labelling.tasks import worker_heartbeat; "
                f"worker_heartbeat.apply_async(queue={queue!r})",
                env=env,
            )
            assert published.returncode == 0, published.stderr
            wait_until(
                lambda: last_heartbeat() > started, timeout=60, what="the task on the Redis worker"
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        assert "Connected to redis://" in output


def test_imported_items_are_embedded_by_a_worker_on_redis(tmp_path):
    import redis as redis_client

    # A database of Redis of its own, emptied first: nothing queued elsewhere leaks in.
    broker = redis_url().rsplit("/", 1)[0] + "/14"
    redis_client.Redis.from_url(broker).flushdb()
    with throwaway_database(tmp_path) as database_url:
        env = program_env(
            tmp_path, DATABASE_URL=database_url, REDIS_URL=broker, ANNOTATOR_ENCODER="hashing"
        )
        assert manage("migrate", "--noinput", env=env).returncode == 0
        made = manage(
            "shell", "-v", "0", "-c",
            "from labelling.services.projects import project_create; "
            "project_create(slug='emb', name='Emb')",
            env=env,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        worker = celery_worker(env=env, queues="ml")
        try:
            data = tmp_path / "items.jsonl"
            data.write_text(
                "".join(
                    json.dumps({"id": f"i{n}", "prompt": f"question {n}", "response": f"{n}"})
                    + "\n"
                    for n in range(30)
                )
            )
            imported = manage("import_items", "--project", "emb", str(data), env=env)
            assert imported.returncode == 0, imported.stderr

            def embedded() -> bool:
                result = manage(
                    "shell", "-v", "0", "-c",
                    "from labelling.models import Embedding; print(Embedding.objects.count())",
                    env=env,
                )  # fmt: skip
                return result.stdout.strip() == "30"

            wait_until(embedded, timeout=90, what="the worker to embed 30 imported items")
        finally:
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        assert "embedded 30, 0 unchanged" in output
