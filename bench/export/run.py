"""Dataset export benchmark: stream approved items out of PostgreSQL through the real HTTP view.

Run by hand (`make bench-export` or `.venv/bin/python bench/export/run.py`); it prints a table
and is never part of the test suite. It creates a throwaway database on the local PostgreSQL
server (DATABASE_URL's, else 127.0.0.1:5432 as postgres), migrates it, and builds a project of
approved, opted-in conversations quickly: the first 100,000 rows with one `COPY`, then copies
of them with `INSERT ... SELECT` up to each size. Every item has one rater's annotation (an
assignment and its answers, as `overlap=1` leaves them), a consensus over the template
`llm_response_review` (a choice, a multi-choice, six ratings), and one item in twenty has a
masked span of personal data, so masking runs too.

For each size and format, a fresh gunicorn (one worker, as `make run` and the compose file
serve) answers `GET /api/v1/projects/SLUG/dataset/?format=...` to a client on the same machine
reading the stream with http.client (`Authorization: Token ...`). Reported: records, seconds
from request to last byte, items/s, MB sent, the worker's CPU time per item (user + system;
what the figure would be if the worker had a core to itself), the CPU time of the PostgreSQL
backends serving the database, an estimate of items/s on two idle cores (one item per the
larger of the two CPU times: the worker and the server work in parallel, each on a core; the
client's reading is left out), and the worker's peak RSS (VmHWM, so
nothing between samples is missed). The load average is printed: on a busy
machine the wall-clock figure measures the neighbours as much as the export. The goal
(DESIGN.md): at least 20,000 items/s, at most 300 MB at 1M items. Options: --sizes
100000,1000000, --formats jsonl,csv,parquet, --keep-db.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from tests.support import free_port, manage, postgres_database, program_env, wait_until  # noqa: E402

SETUP = """
import json
from django.contrib.auth import get_user_model
from labelling.schema import template
from labelling.services.projects import project_create, schema_publish
from labelling.services.tokens import token_create
admin = get_user_model().objects.create_user("bench", is_staff=True)
project = project_create(slug="export", name="Export", created_by=admin)
schema = schema_publish(project=project, definition=template("llm_response_review"),
                        created_by=admin)
_, key = token_create(user=admin, project_slugs=["export"], name="bench")
print(json.dumps({"project": project.pk, "schema": schema.pk, "user": admin.pk, "key": key}))
"""

WORDS = [
    "the",
    "model",
    "answer",
    "question",
    "because",
    "data",
    "which",
    "people",
    "time",
    "would",
    "could",
    "first",
    "also",
    "after",
    "where",
    "most",
    "over",
    "world",
    "still",
    "between",
    "through",
    "those",
    "great",
    "under",
    "right",
    "think",
    "every",
    "found",
    "resposta",
    "pergunta",
    "porque",
    "dados",
    "tiempo",
    "mundo",
    "entonces",
    "donde",
]
SECRET_NAMES = ("Ana Ribeiro", "John Carter", "Lucía Gómez", "Wei Zhang", "Fatima Diallo")
RATINGS = ("fluency", "readability", "grammar", "cohesion", "logic", "relevance")
SEED_ROWS = 100_000


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def item_row(n: int, rng: random.Random) -> tuple[str, str, str]:
    """(external_id, messages, consensus) of one synthetic conversation, as JSON text."""
    turns = rng.choice((2, 2, 4))
    messages = []
    spans = []
    for t in range(turns):
        role = "user" if t % 2 == 0 else "assistant"
        content = " ".join(sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 5)))
        if t == 0 and n % 20 == 0:
            name = rng.choice(SECRET_NAMES)
            prefix = f"My name is {name}. "
            spans.append({"message": "t1", "start": 11, "end": 11 + len(name),
                          "label": "personal_data"})  # fmt: skip
            content = prefix + content
        messages.append({"id": f"t{t + 1}", "role": role, "content": content})
    truth = rng.choice(("true", "false", "partly_true"))
    consensus = {
        "truthfulness": {"value": truth, "distribution": {truth: 1.0}, "agreement": None, "n": 1},
        "bias": {"value": ["none"], "distribution": {"none": 1.0}, "agreement": None, "n": 1},
        **{key: {"value": (v := rng.randint(1, 5)), "distribution": {str(v): 1.0},
                 "agreement": None, "n": 1, "mean": float(v)} for key in RATINGS},
        "harmful": {"value": spans, "distribution": {}, "agreement": None, "n": 1},
    }  # fmt: skip
    return f"item-{n}", json.dumps(messages), json.dumps(consensus)


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


ITEM_COLUMNS = (
    "project_id", "external_id", "messages", "metadata", "source", "license", "consent",
    "language", "status", "priority", "target", "ratings", "leases", "consensus", "agreement",
    "predictions", "hold", "created_at", "updated_at",
)  # fmt: skip


def build(url: str, ids: dict, size: int, have: int) -> int:
    """Grow the project to `size` items (with annotations); returns the count."""
    with psycopg.connect(url, autocommit=False) as conn:
        if have == 0:
            rng = random.Random(7)
            started = time.monotonic()
            copy_sql = f"COPY labelling_item ({', '.join(ITEM_COLUMNS)}) FROM STDIN"
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                buffer = []
                for n in range(min(size, SEED_ROWS)):
                    external_id, messages, consensus = item_row(n, rng)
                    fields = (
                        str(ids["project"]), external_id, _copy_text(messages),
                        '{"model": "bench-1"}', "bench", "CC-BY-4.0", "opt_in", "en",
                        "approved", "0", "1", "1", "0", _copy_text(consensus), "\\N", "{}", "",
                        "2026-01-01 00:00:00+00", "2026-01-02 00:00:00+00",
                    )  # fmt: skip
                    buffer.append("\t".join(fields))
                    if len(buffer) >= 5000:
                        copy.write("\n".join(buffer) + "\n")
                        buffer = []
                if buffer:
                    copy.write("\n".join(buffer) + "\n")
            have = min(size, SEED_ROWS)
            print(f"  COPY {have:,} items in {time.monotonic() - started:.1f} s", file=sys.stderr)
        while have < size:
            started = time.monotonic()
            add = min(have, size - have)
            columns = ", ".join(ITEM_COLUMNS)
            selected = columns.replace("external_id", "external_id || '-c' || %(have)s")
            conn.execute(
                f"INSERT INTO labelling_item ({columns}) SELECT {selected} FROM labelling_item "  # noqa: S608
                "WHERE project_id = %(project)s ORDER BY id LIMIT %(add)s",
                {"have": have, "project": ids["project"], "add": add},
            )
            have += add
            print(f"  INSERT ... SELECT to {have:,} items in {time.monotonic() - started:.1f} s",
                  file=sys.stderr)  # fmt: skip
        started = time.monotonic()
        # One rater's answers per item, as overlap=1 leaves them (assignment + annotation).
        conn.execute(
            "INSERT INTO labelling_assignment (project_id, item_id, rater_id, schema_id, status, "
            "expires_at, finished_at, created_at, updated_at) "
            "SELECT i.project_id, i.id, %(user)s, %(schema)s, 'submitted', i.created_at, "
            "i.created_at, i.created_at, i.created_at FROM labelling_item i "
            "WHERE i.project_id = %(project)s AND NOT EXISTS (SELECT 1 FROM labelling_assignment "
            "a WHERE a.item_id = i.id)",
            ids,
        )
        conn.execute(
            "INSERT INTO labelling_annotation (assignment_id, project_id, item_id, rater_id, "
            "schema_id, answers, time_spent_ms, idempotency_key, created_at, updated_at) "
            "SELECT a.id, a.project_id, a.item_id, a.rater_id, a.schema_id, "
            "(SELECT jsonb_object_agg(key, value -> 'value') FROM jsonb_each(i.consensus)), "
            "30000, 'bench', a.created_at, a.created_at FROM labelling_assignment a "
            "JOIN labelling_item i ON i.id = a.item_id WHERE a.project_id = %(project)s "
            "AND NOT EXISTS (SELECT 1 FROM labelling_annotation n WHERE n.assignment_id = a.id)",
            ids,
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE labelling_item")
        conn.execute("VACUUM ANALYZE labelling_annotation")
        conn.execute("VACUUM ANALYZE labelling_assignment")
    print(f"  annotations and VACUUM ANALYZE in {time.monotonic() - started:.1f} s",
          file=sys.stderr)  # fmt: skip
    return have


@contextlib.contextmanager
def gunicorn(env: dict[str, str]):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "annotator.wsgi:application", "--bind",
         f"127.0.0.1:{port}", "--workers", "1", "--threads", "2", "--worker-class", "gthread",
         "--timeout", "600", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip

    def healthy() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health/")
        return conn.getresponse().status == 200

    try:
        wait_until(healthy, timeout=60, what="gunicorn")
        import psutil

        [worker] = psutil.Process(process.pid).children()
        yield port, worker.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


class DatabaseCpu:
    """CPU seconds of the PostgreSQL backends serving the benchmark's database while it runs,
    sampled every 0.1 s so that a backend that comes and goes (the web worker's read-ahead
    thread has a connection of its own) is counted up to its last sample."""

    def __init__(self, url: str):
        self.name = url.rsplit("/", 1)[1]
        self.base = self._sample()
        self.last = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        import psutil

        out = {}
        for process in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmdline = " ".join(process.info["cmdline"] or ())
                if process.info["name"] == "postgres" and self.name in cmdline:
                    out[process.pid] = sum(process.cpu_times()[:2])
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.last.update(self._sample())

    def __enter__(self) -> DatabaseCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())

    @property
    def seconds(self) -> float:
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pull(port: int, key: str, fmt: str) -> tuple[int, int, float]:
    """(records, bytes, seconds) of one streamed download."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.monotonic()
    conn.request("GET", f"/api/v1/projects/export/dataset/?format={fmt}",
                 headers={"Authorization": f"Token {key}"})  # fmt: skip
    response = conn.getresponse()
    assert response.status == 200, response.read()[:500]
    size = lines = 0
    chunks = [] if fmt == "parquet" else None
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        if chunks is not None:
            chunks.append(chunk)
        else:
            lines += chunk.count(b"\n")
    elapsed = time.monotonic() - started
    if fmt == "parquet":
        import io

        import pyarrow.parquet as pq

        lines = pq.ParquetFile(io.BytesIO(b"".join(chunks))).metadata.num_rows
    elif fmt == "csv":
        lines -= 1  # the header (records hold no raw newlines: JSON escapes them)
    return lines, size, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--formats", default="jsonl,csv,parquet")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    formats = [f for f in args.formats.split(",") if f]
    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url:
        env = program_env(Path(tmp) / "var", DATABASE_URL=url)
        (Path(tmp) / "var").mkdir()
        migrated = manage("migrate", "--noinput", env=env, timeout=600)
        assert migrated.returncode == 0, migrated.stderr
        made = manage("shell", "-v", "0", "-c", SETUP, env=env, timeout=300)
        assert made.returncode == 0, made.stderr
        ids = json.loads(made.stdout.strip().splitlines()[-1])
        have = 0
        for size in sizes:
            print(f"… building {size:,} items", file=sys.stderr, flush=True)
            have = build(url, ids, size, have)
            for fmt in formats:
                print(f"… streaming {fmt} at {size:,}", file=sys.stderr, flush=True)
                with gunicorn(env) as (port, worker):
                    import psutil

                    before = sum(psutil.Process(worker).cpu_times()[:2])
                    with DatabaseCpu(url) as database:
                        records, size_bytes, seconds = pull(port, ids["key"], fmt)
                        cpu = sum(psutil.Process(worker).cpu_times()[:2]) - before
                    db_cpu = database.seconds
                    rss = peak_rss_mb(worker)
                assert records == size, f"expected {size} records, got {records}"
                rows.append([f"{size:,}", fmt, f"{records:,}", f"{seconds:.1f}",
                             f"{records / seconds:,.0f}", f"{size_bytes / 2**20:,.0f}",
                             f"{cpu / records * 1e6:.0f}", f"{db_cpu / records * 1e6:.0f}",
                             f"{records / cpu:,.0f}", f"{records / max(cpu, db_cpu):,.0f}",
                             f"{rss:.0f}"])  # fmt: skip
        if args.keep_db:
            print(f"database kept: {url}", file=sys.stderr)
            input("press Enter to drop it")
    header = ["items", "format", "records", "seconds", "items/s", "MB sent", "worker CPU µs/item",
              "PostgreSQL CPU µs/item", "items per worker CPU-s", "2 idle cores (est.) items/s",
              "worker peak RSS MB"]  # fmt: skip
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        f"\nLoad average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"({os.cpu_count()} CPUs).\nGoal: ≥ 20,000 items/s streamed, ≤ 300 MB at 1M items. "
        "Label Studio on this machine: 500 tasks/s (50k in 101 s) in one request."
    )


if __name__ == "__main__":
    main()
