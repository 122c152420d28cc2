"""Drive a real server with many raters over HTTP: used by the concurrency tests and bench/queue.

The server runs in child processes (gunicorn) against a database of its own; set-up and checks
run through `manage.py shell` so they see exactly what the server wrote.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT, free_port, manage, wait_until

SETUP = """
import json, io
from django.contrib.auth import get_user_model
from labelling.models import Role
from labelling.schema import template
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_create, schema_publish
from labelling.services.tokens import token_create
User = get_user_model()
spec = json.loads({spec!r})
admin = User.objects.create_user("admin", is_staff=True, is_superuser=True)
project = project_create(slug=spec["slug"], name="Load", created_by=admin, overlap=spec["overlap"])
project.lease_ttl_seconds = spec["ttl"]
project.max_overlap = spec["overlap"]  # no extra raters on disagreement: overlap is the bound
project.save()
schema_publish(project=project, definition=template("per_turn_quality"), created_by=admin)
lines = []
for n in range(spec["items"]):
    lines.append(json.dumps({{"id": f"i{{n}}", "language": "en", "messages": [
        {{"role": "user", "content": f"question {{n}}"}},
        {{"role": "assistant", "content": f"answer {{n}}"}}]}}))
items_import(project=project, stream=io.BytesIO(("\\n".join(lines)).encode()), fmt="jsonl")
keys = {{}}
raters = User.objects.bulk_create([User(username=f"r{{n}}") for n in range(spec["raters"])])
for user in raters:
    membership_set(project=project, user=user, role=Role.RATER)
    keys[user.username] = token_create(user=user, project_slugs=[project.slug], name="load",
                                       can_write=True)[1]
keys["admin"] = token_create(user=admin, project_slugs=[project.slug], name="admin",
                             can_write=True)[1]
print(json.dumps(keys))
"""

CHECK = """
import json
from django.db.models import Count
from labelling.models import Annotation, Assignment, Item
out = {"items": {}, "annotations": {}}
active = dict(Assignment.objects.filter(status="active").values("item_id")
              .annotate(n=Count("pk")).values_list("item_id", "n"))
for item_id, ratings, leases, target in Item.objects.values_list("pk", "ratings", "leases",
                                                                  "target"):
    out["items"][item_id] = [ratings, leases, target, active.get(item_id, 0)]
for pk, item_id, rater_id, created, answers in Annotation.objects.order_by("pk").values_list(
        "pk", "item_id", "rater_id", "created_at", "answers"):
    out["annotations"][pk] = [item_id, rater_id, created.isoformat(), answers]
print(json.dumps(out))
"""


@dataclass
class Server:
    base_port: int
    env: dict[str, str]
    keys: dict[str, str]
    slug: str
    process: subprocess.Popen | None = None

    def client(self, who: str) -> Client:
        return Client(self.base_port, self.keys[who])


class Client:
    """One keep-alive HTTP connection with a token, like a rater's script."""

    def __init__(self, port: int, key: str):
        self.port = port
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        payload = json.dumps(body).encode() if body is not None else b""
        headers = {"Authorization": f"Token {self.key}", "Content-Type": "application/json"}
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                try:
                    return response.status, json.loads(raw) if raw else None
                except ValueError:
                    # An HTML error page (a 500): the status tells; keep the body for the report.
                    return response.status, {"body": raw.decode(errors="replace")[:2000]}
            except (ConnectionError, http.client.HTTPException):
                # A worker restart or keep-alive close: reconnect; the API is idempotent.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@contextlib.contextmanager
def running_server(
    tmp_path: Path,
    database_url: str,
    *,
    items: int,
    raters: int,
    overlap: int,
    ttl: int = 600,
    workers: int = 3,
    threads: int = 8,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    from tests.support import program_env

    env = program_env(tmp_path / "var", DATABASE_URL=database_url, **(extra_env or {}))
    (tmp_path / "var").mkdir(exist_ok=True)
    migrated = manage("migrate", "--noinput", env=env, timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    spec = json.dumps(
        {"slug": "load", "items": items, "raters": raters, "overlap": overlap, "ttl": ttl}
    )
    made = manage("shell", "-v", "0", "-c", SETUP.format(spec=spec), env=env, timeout=600)
    assert made.returncode == 0, made.stderr
    keys = json.loads(made.stdout.strip().splitlines()[-1])
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "annotator.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--log-level",
            "warning",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
    )
    server = Server(port, env, keys, "load", process)
    try:

        def healthy() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health/")
            return conn.getresponse().status == 200

        wait_until(healthy, timeout=30, what="gunicorn")
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def snapshot(server: Server) -> dict:
    result = manage("shell", "-v", "0", "-c", CHECK, env=server.env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class RunLog:
    acknowledged: dict[int, dict] = field(default_factory=dict)  # annotation id -> answers
    server_errors: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int, what: str, body: object = None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 500:
                self.server_errors.append(f"{status} on {what}: {body}")


def answers_for(lease: dict) -> dict:
    turns = [m["id"] for m in lease["item"]["messages"] if m["role"] == "assistant"]
    return {"helpful": {turn: random.randint(1, 5) for turn in turns}, "resolved": "yes"}


def rater_loop(
    server: Server,
    who: str,
    log: RunLog,
    *,
    deadline: float,
    skip_rate: float = 0.0,
    abandon_rate: float = 0.0,
    pause: float = 0.0,
    ttl: float = 600,
    seed: int = 0,
    timed_after: float = 0.0,
) -> None:
    """next → submit (or skip, or walk away until the lease expires) until the deadline.

    With a `pause`, the rater starts at a random moment within the first pause and then pauses
    for a random 0.5-1.5 times `pause` after each item: people do not rate in lockstep, and
    raters started together with equal pauses would keep arriving as one burst. Latencies are
    logged for requests sent after `timed_after` (time.monotonic), so a warm-up is left out.
    """
    rng = random.Random(seed)
    client = server.client(who)
    if pause:
        time.sleep(rng.uniform(0, pause))
    while time.monotonic() < deadline:
        timed = time.monotonic() >= timed_after
        started = time.perf_counter()
        status, lease = client.call("POST", f"/api/v1/projects/{server.slug}/next/")
        if timed:
            log.next_ms.append((time.perf_counter() - started) * 1000)
        log.count(status, "next", lease)
        if status == 204:
            return
        if status != 200:
            continue
        assignment = lease["assignment"]["id"]
        roll = rng.random()
        if roll < skip_rate:
            status, _ = client.call("POST", f"/api/v1/assignments/{assignment}/skip/")
            log.count(status, "skip")
            continue
        if roll < skip_rate + abandon_rate:
            time.sleep(min(ttl + 1.0, max(0.0, deadline - time.monotonic())))
            continue
        body = {"answers": answers_for(lease), "idempotency_key": uuid.uuid4().hex}
        started = time.perf_counter()
        status, annotation = client.call("POST", f"/api/v1/assignments/{assignment}/submit/", body)
        if timed:
            log.submit_ms.append((time.perf_counter() - started) * 1000)
        log.count(status, "submit", annotation)
        if status in (200, 201):
            with log.lock:
                log.acknowledged[annotation["id"]] = body["answers"]
        if pause:
            time.sleep(pause * rng.uniform(0.5, 1.5))


def run_raters(
    server: Server,
    names: list[str],
    log: RunLog,
    *,
    seconds: float,
    warmup: float = 0.0,
    **kwargs,
) -> None:
    """Every named rater in a thread for `seconds`, plus `warmup` seconds first (untimed)."""
    timed_after = time.monotonic() + warmup
    deadline = timed_after + seconds
    threads = [
        threading.Thread(
            target=rater_loop,
            args=(server, name, log),
            kwargs={"deadline": deadline, "seed": n, "timed_after": timed_after, **kwargs},
        )  # fmt: skip
        for n, name in enumerate(names)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup + seconds + 120)
